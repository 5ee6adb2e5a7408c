"""``job="cluster"``: chunks of calls as tasks on a dask.distributed cluster.

Where: ``address=`` (or ``JUST_DISTRIBUTE_ADDRESS``); else an embedded local cluster — the
function service of :mod:`just_distribute.service` started as a child process on 127.0.0.1
with one single-threaded worker process per worker, on first use, reused by every later
call and stopped at interpreter exit. Running it as a separate process rather than a
``LocalCluster`` inside the caller means a script needs no ``if __name__ == "__main__"``
guard (dask's spawned workers would re-run it otherwise), and nothing of it outlives the
caller: it stops itself when the caller is gone.

How: one dask task per engine chunk. The function and its keyword constants travel as
bytes (the standard pickle, dill for lambdas, closures and ``__main__`` functions), not
through dask's own pickling. From ``SCATTER_BYTES`` (16 KiB) on, they are scattered to the
cluster once per run and every chunk refers to them, so a large function or constant
crosses the network once per worker, not once per chunk. Each task gets a unique key
(never dask's hash of the arguments): two identical calls both run. Functions of
importable modules travel by reference, as with dask: remote workers need those modules
installed (the embedded cluster gets the caller's import path).

A worker that dies mid-chunk: dask reruns the chunk on another worker (its nanny starts a
fresh one); after ``distributed.scheduler.allowed-failures`` deaths the chunk fails with a
:class:`~just_distribute.errors.WorkerLostError`, and the engine retries its calls one at
a time to name the culprit.

Nesting: a call made from inside a cluster task (a distributed function calling another
one) runs serially in that task. A dask worker runs one task per thread; waiting on the
cluster from inside it could deadlock a cluster whose every worker is waiting.

Updates (:func:`just_distribute.update`): a chunk's records go as dask events on
``UPDATE_TOPIC`` while it runs, its last ones with its outcome.

Timeouts: a worker announces each chunk it starts (a dask event), and the ``timeout=``
clock of a chunk starts then, not while it waits in the scheduler's queue. A running dask
task cannot be stopped, so a timed-out call is abandoned (its result ignored), not killed.
"""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import re
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections import OrderedDict
from concurrent.futures import InvalidStateError
from typing import Any

from just_distribute import updates as _updates
from just_distribute.config import Options, usable_cpus
from just_distribute.errors import (
    ClusterUnreachableError,
    JustDistributeError,
    MissingExtraError,
    ReceiveError,
    SendError,
    WorkerLostError,
)
from just_distribute.executors import wire as _wire
from just_distribute.executors.base import ChunkFuture, Executor, Payload, Task
from just_distribute.executors.chunk import ChunkResult, current_job, run_chunk
from just_distribute.executors.sendable import dumps_columns
from just_distribute.service import tls as _tls
from just_distribute.service.launch import on_stop, start_service
from just_distribute.updates import TaskUpdates

__all__ = ["SCATTER_BYTES", "ClusterExecutor", "adapt_client", "create"]

log = logging.getLogger("just_distribute")

#: Payloads (function + keyword constants) this large or larger are scattered once per run
#: (each worker then fetches them once); smaller ones travel inside each chunk's task, where
#: a few KiB cost less than the scatter's round trip.
SCATTER_BYTES = 16 * 1024
_WORKER_CACHE_SIZE = 8
#: The dask event topic on which a worker announces that it starts a chunk.
START_TOPIC = "just-distribute-chunk-started"
#: The dask event topic on which a worker sends the updates of a running chunk.
UPDATE_TOPIC = "just-distribute-chunk-updates"
_worker_cache: OrderedDict[str, Any] = OrderedDict()
_worker_lock = threading.Lock()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("job='cluster'", "cluster", "distributed") from None
    return distributed


# -- the worker side ----------------------------------------------------------------------
def _load_function(key: str, payload: bytes) -> Any:
    with _worker_lock:
        fn = _worker_cache.get(key)
        if fn is not None:
            _worker_cache.move_to_end(key)
            return fn
    fn = _wire.loads(payload)
    with _worker_lock:
        _worker_cache[key] = fn
        while len(_worker_cache) > _WORKER_CACHE_SIZE:
            _worker_cache.popitem(last=False)
    return fn


def run_on_worker(payload: bytes, key: str, data: bytes, stop_on_error: bool) -> Any:
    """The dask task of one chunk: rebuild the function and arguments, run, pack the outcome.

    Returns the outcome's bytes; or, when the chunk's calls left updates unsent at its end,
    ``(outcome, worker name, updates)``: the last updates travel with the outcome.
    """
    from distributed import get_worker

    from just_distribute.executors.process_main import _portable_result

    try:
        fn = _load_function(key, payload)
        columns = _wire.loads(data)
    except Exception:
        tb = traceback.format_exc()
        return _wire.dumps(("unloadable", None, tb))
    outbox: _updates.Outbox | None = None
    try:
        worker = get_worker()
    except ValueError:
        name = "dask"
    else:
        name = str(worker.name)
        # Tell the caller the chunk starts now: its timeout= clock starts here, not when
        # the chunk was queued.
        worker.log_event(START_TOPIC, worker.get_current_task())
        outbox = _updates.Outbox(functools.partial(
            _send_updates, worker, str(worker.get_current_task())
        ))
    if outbox is None:
        return _portable_result(run_chunk(fn, columns, stop_on_error, name, "cluster", True),
                                stop_on_error)
    result = run_chunk(fn, columns, stop_on_error, name, "cluster", True, outbox.channel)
    tail, dropped = outbox.close()
    outcome = _portable_result(result, stop_on_error)
    if tail or dropped:
        # The last updates travel with the outcome: the sending thread has not sent them.
        return (outcome, name, _updates.encode(tail, dropped))
    return outcome


def _send_updates(worker: Any, key: str, records: list[Any], dropped: int) -> None:
    worker.log_event(UPDATE_TOPIC, (key, str(worker.name), _updates.encode(records, dropped)))


# -- the caller side ----------------------------------------------------------------------
class _DaskChunkFuture(ChunkFuture):
    def __init__(self) -> None:
        super().__init__()
        self.dask_future: Any = None


def _set(fut: ChunkFuture, result: ChunkResult | None, exc: BaseException | None) -> None:
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:  # abandoned or cancelled meanwhile
        pass


def _key_prefix(name: str) -> str:
    # The dashboard and the metrics group tasks by the key's leading words.
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "call"
    return f"{cleaned}-chunk"


class ClusterExecutor(Executor):
    """Runs chunks as tasks on a dask cluster (see the module docstring for the details).

    Args:
        workers: worker processes of the embedded cluster (default: usable CPUs); ignored
            when an address or a client is given (the cluster has its own size).
        address: the scheduler address; None starts the embedded cluster.
        tls: TLS settings for ``address`` (see :mod:`just_distribute.service.tls`).
        connect_timeout: seconds to wait for the scheduler to answer.
        client: a dask ``Client`` to use as it is (not closed here).
    """

    name = "cluster"
    remote = True
    # Each chunk costs a scheduler round trip (~1-2 ms, more on a loaded machine): few
    # chunks, and enough work in each to make that negligible. An even count, so that equal
    # calls share out evenly between the workers (80 calls: 8 x 10, not 5 x 14 + 10).
    chunks_per_worker = 4
    in_flight_per_worker = 2
    target_chunk_seconds = 0.25

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        tls: Any = None,
        connect_timeout: float = 10.0,
        client: Any = None,
    ) -> None:
        self._lock = threading.RLock()
        self._requested = workers
        self._address = address
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._user_client = weakref.ref(client) if client is not None else None
        self._client: Any = None
        self._scattered: dict[str, Any] = {}
        self._pending: dict[int, Any] = {}  # dask futures not yet settled, by id
        self._started_by_key: dict[str, ChunkFuture] = {}  # chunks not yet started
        self._updates_by_key: dict[str, TaskUpdates] = {}  # chunks whose updates are wanted
        self._subscribed = False
        self._outcomes: queue.SimpleQueue[tuple[ChunkFuture, Any, str, bool, Any] | None] = (
            queue.SimpleQueue()
        )
        self._settler: threading.Thread | None = None
        self._threads: tuple[float, int] | None = None
        self._closed = False
        self._scheduler: str | None = None  # the address connected to
        super().__init__(workers or 1)
        _live.add(self)

    # -- connection ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Count the cluster's worker threads now (each runs one chunk at a time).

        Called once per run, before chunks are sized; ``workers`` itself is a plain value.

        Raises:
            ClusterUnreachableError: no scheduler answered, or it has no workers in time.
        """
        now = time.monotonic()
        cached = self._threads
        if self._closed or (cached is not None and now - cached[0] < 1.0):
            return
        if self._client is None and self._user_client is None and self.check_nesting():
            self.workers = 1  # nested calls run serially: no cluster is started from inside
            return
        client = self.client()
        threads = sum(client.nthreads().values())
        if threads == 0:  # a service that is still starting its workers
            try:
                client.wait_for_workers(1, timeout=self._connect_timeout)
            except (TimeoutError, OSError):
                raise ClusterUnreachableError(
                    f"the dask scheduler at {client.scheduler.address} has no workers "
                    f"(waited {self._connect_timeout}s); start some with "
                    f"`just-distribute worker {client.scheduler.address} --workers N`"
                ) from None
            threads = sum(client.nthreads().values())
        self._threads = (now, max(1, threads))
        self.workers = self._threads[1]

    def client(self) -> Any:
        """The dask ``Client``, connecting (or starting the embedded cluster) on first use.

        Raises:
            ClusterUnreachableError: no scheduler answered at the address in time.
            MissingExtraError: dask.distributed is not installed.
        """
        if self._user_client is not None:
            user = self._user_client()
            if user is None:
                raise JustDistributeError("the dask Client passed as job= no longer exists")
            with self._lock:
                if not self._subscribed:
                    self._subscribe(user)
                    self._subscribed = True
            return user
        with self._lock:
            if self._closed:
                raise JustDistributeError("this cluster executor was shut down")
            if self._client is None:
                client = self._connect()
                self._subscribe(client)
                self._client = client
            return self._client

    def _subscribe(self, client: Any) -> None:
        started = self._started_by_key

        def on_start(event: Any) -> None:
            fut = started.pop(event[1], None)
            if fut is not None:
                fut.started_at = time.monotonic()

        client.subscribe_topic(START_TOPIC, on_start)
        receivers = self._updates_by_key

        def on_updates(event: Any) -> None:
            key, worker, data = event[1]
            receiver = receivers.get(key)
            if receiver is None:
                return
            try:
                records, dropped = _updates.decode(data)
            except Exception as exc:  # a value whose class the caller cannot import
                log.debug("updates of %s could not be read: %s", key, exc)
                return
            receiver.receive(worker, records, dropped)

        client.subscribe_topic(UPDATE_TOPIC, on_updates)

    def _connect(self) -> Any:
        distributed = _import_distributed()
        if self._address is None:
            service = _embedded_service(self._requested or usable_cpus())
            address, security = service.address, None
        else:
            address = self._address
            security = _tls.security(self._tls)
            if security is not None and "://" not in address:
                address = "tls://" + address
            if security is None and address.startswith("tls://"):
                raise ClusterUnreachableError(
                    f"the dask scheduler at {address} serves TLS and this client has no "
                    f"certificate: pass tls= (the directory from `just-distribute cluster "
                    f"--tls`, or its ca/cert/key files) or set JUST_DISTRIBUTE_TLS"
                )
        try:
            client = distributed.Client(
                address, timeout=self._connect_timeout, security=security,
                set_as_default=False,
            )
        except (OSError, TimeoutError) as exc:
            tls_trouble = address.startswith("tls://") or "certificate" in str(exc).lower()
            hint = (
                " The scheduler serves TLS and refused this client: pass tls= with the "
                "certificates of this service (the directory from `just-distribute cluster "
                "--tls`) or set JUST_DISTRIBUTE_TLS."
                if tls_trouble
                else " Is it running? Start one with `just-distribute cluster`, or fix address= "
                "(or JUST_DISTRIBUTE_ADDRESS); a TLS service needs its tls:// address and tls=."
            )
            raise ClusterUnreachableError(
                f"cannot reach the dask scheduler at {address} (connect_timeout="
                f"{self._connect_timeout}s): {type(exc).__name__}: {exc}.{hint}"
            ) from exc
        log.info("job 'cluster': connected to the dask scheduler at %s", address)
        self._scheduler = address
        return client

    # -- running chunks ------------------------------------------------------------------
    def _payload_arg(self, client: Any, payload: Payload) -> Any:
        data = payload.serialized()
        if len(data) < SCATTER_BYTES:
            return data
        with self._lock:
            scattered = self._scattered.get(payload.key)
            if scattered is None:
                # Through the scheduler (direct=False): the caller may not reach the
                # workers directly; the bytes then live on one worker and travel
                # worker-to-worker when others need them.
                scattered = client.scatter([data], direct=False, hash=False)[0]
                self._scattered[payload.key] = scattered
                weakref.finalize(payload, self._scattered.pop, payload.key, None)
            return scattered

    def submit(self, task: Task) -> ChunkFuture:
        """Send the chunk to the cluster as one dask task; return its future.

        Raises:
            SendError: the function or the arguments cannot be serialised.
            ClusterUnreachableError: the first connection failed.
        """
        data = dumps_columns(list(task.columns), task.payload.name, "the cluster")
        client = self.client()
        payload = self._payload_arg(client, task.payload)
        key = f"{_key_prefix(task.payload.name)}-{uuid.uuid4().hex}"
        fut = _DaskChunkFuture()
        fut.mark_started()
        fut.started_at = None  # set when the worker announces the start (see _subscribe)
        self._started_by_key[key] = fut  # before submitting: the start may be announced soon
        if task.updates is not None:
            self._updates_by_key[key] = task.updates
        try:
            dask_future = client.submit(
                run_on_worker, payload, task.payload.key, data, task.stop_on_error,
                key=key, pure=False,
            )
        except BaseException:
            self._started_by_key.pop(key, None)
            self._updates_by_key.pop(key, None)
            raise
        fut.dask_future = dask_future
        name = task.payload.name
        self._pending[id(dask_future)] = dask_future
        self._watch(client, dask_future, fut, name)
        return fut

    def _watch(self, client: Any, dask_future: Any, fut: ChunkFuture, name: str) -> None:
        # Not dask's add_done_callback: its callback thread pool refuses work once the
        # interpreter starts exiting (before our atexit shutdown), and it would fetch the
        # results one at a time. The client's loop waits for and fetches every outcome
        # concurrently; our own thread rebuilds them.
        with self._lock:
            if self._settler is None:
                self._settler = threading.Thread(
                    target=self._settle_loop, name="just_distribute-cluster", daemon=True
                )
                self._settler.start()
        outcomes = self._outcomes

        async def fetch() -> None:
            try:
                data = await client.gather(dask_future, asynchronous=True)
            except BaseException as exc:  # the task's error, a dead worker, a cancellation
                outcomes.put((fut, dask_future, name, False, exc))
            else:
                outcomes.put((fut, dask_future, name, True, data))

        client.loop.add_callback(fetch)

    def _settle_loop(self) -> None:
        while (item := self._outcomes.get()) is not None:
            fut = item[0]
            try:
                self._settle(*item)
            except BaseException as exc:  # the settler must survive, the chunk must end
                _set(fut, None, exc)

    def _settle(self, fut: ChunkFuture, dask_future: Any, name: str, ok: bool, value: Any) -> None:
        self._pending.pop(id(dask_future), None)
        self._started_by_key.pop(dask_future.key, None)
        # The chunk's live update events came before this outcome: a worker's events and its
        # task's completion share its stream to the scheduler, and the scheduler's events and
        # "key in memory" share the stream to this client, handled in order on its loop.
        receiver = self._updates_by_key.pop(dask_future.key, None)
        if ok and isinstance(value, tuple):  # (outcome, worker, the chunk's last updates)
            value, worker, tail = value
            if receiver is not None:
                records, dropped = _updates.decode(tail)
                receiver.receive(worker, records, dropped)
        if ok:
            try:
                outcome = _wire.loads(value)
            except Exception as exc:
                _set(fut, None, ReceiveError(
                    f"the outcome of a chunk of {name}() could not be rebuilt here: "
                    f"{type(exc).__name__}: {exc}"
                ))
                return
            tag, result, message = outcome if len(outcome) == 3 else (*outcome, None)
            if tag == "ok":
                _set(fut, result, None)
            elif tag == "unsendable":
                _set(fut, None, ReceiveError(message))
            else:
                _set(fut, None, SendError(
                    f"the dask worker could not rebuild {name}() or its arguments (are their "
                    f"modules installed on the workers?):\n{message}"
                ))
            return
        kind = type(value).__name__
        if kind == "KilledWorker":
            _set(fut, None, WorkerLostError(
                f"dask workers died while running a chunk of {name}() (dask retried it on "
                f"other workers and gave up: {value}). A call may be crashing its worker "
                f"(out of memory? native code?); see the workers' logs."
            ))
        elif isinstance(value, Exception) and "Cancelled" not in kind:
            _set(fut, None, value)
        else:
            _set(fut, None, JustDistributeError(
                f"the cluster dropped a chunk of {name}() ({kind}): the client was closed "
                f"or the cluster restarted"
            ))

    def abandon(self, future: ChunkFuture) -> None:
        """Cancel the chunk's dask task (a task already running finishes unobserved)."""
        if isinstance(future, _DaskChunkFuture) and future.dask_future is not None:
            future.dask_future.cancel()
        future.cancel()

    def check_nesting(self) -> bool:
        """True inside a cluster task or any dask worker: nested calls run serially there."""
        if current_job.get() == self.name:
            return True
        if "distributed" in sys.modules:
            from distributed import get_worker

            try:
                get_worker()
            except ValueError:
                return False
            return True
        return False

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` ran (the registry then makes a new executor)."""
        return self._closed

    def shutdown(self, wait: bool = True) -> None:
        """Close the client this executor opened (an embedded cluster runs on for others)."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            self._scattered.clear()
            pending = list(self._pending.values())
            self._pending.clear()
            if self._settler is not None:
                self._outcomes.put(None)
                self._settler = None
        if client is not None:
            # Closing can race dask's own batched sends, which dask reports at INFO level on
            # standard error ("Batched Comm Closed"): expected here, so kept quiet.
            dask_log = logging.getLogger("distributed")
            level = dask_log.level
            dask_log.setLevel(max(level, logging.WARNING))
            try:
                # Abandoned tasks still running would call back into a closed client.
                if pending:
                    client.cancel(pending)
                client.close(timeout=10)
            except Exception as exc:  # best effort: the cluster may be gone already
                log.debug("closing the dask client: %s", exc)
            finally:
                dask_log.setLevel(level)


#: Every executor of this process, so that a service about to stop can disconnect them.
_live: weakref.WeakSet[ClusterExecutor] = weakref.WeakSet()


def _disconnect(address: str) -> None:
    """Close the clients connected to ``address``: that service is about to stop."""
    for ex in list(_live):
        if ex._scheduler == address:
            ex.shutdown()


on_stop(_disconnect)

#: The embedded clusters of this process, by worker count: a process tree that takes
#: seconds to start, shared by every executor (decorator, Pool) that has no ``address``.
_services: dict[int, Any] = {}
_services_lock = threading.Lock()


def _embedded_service(count: int) -> Any:
    with _services_lock:
        service = _services.get(count)
        if service is None or not service.running:
            if not _services:
                atexit.register(stop_embedded)
            service = _services[count] = start_service(count)
            log.info(
                "embedded dask cluster: %d workers at %s, dashboard %s",
                count, service.address, service.dashboard_url or "off",
            )
        return service


def stop_embedded() -> None:
    """Stop the embedded clusters this process started (at exit, or by hand)."""
    with _services_lock:
        services = list(_services.values())
        _services.clear()
    for service in services:
        service.stop()


def create(options: Options) -> Executor:
    """The registry's factory for ``job="cluster"``.

    Raises:
        MissingExtraError: dask.distributed is not installed.
    """
    _import_distributed()
    return ClusterExecutor(
        options.workers, address=options.address, tls=options.tls,
        connect_timeout=options.connect_timeout,
    )


_adapted: weakref.WeakKeyDictionary[Any, ClusterExecutor] = weakref.WeakKeyDictionary()
_adapted_lock = threading.Lock()


def adapt_client(job: Any, options: Options) -> Executor | None:
    """A :class:`ClusterExecutor` over a dask ``Client`` passed as ``job=`` (else None)."""
    from distributed import Client

    if not isinstance(job, Client):
        return None
    with _adapted_lock:
        made = _adapted.get(job)
        if made is None:
            made = ClusterExecutor(client=job, connect_timeout=options.connect_timeout)
            _adapted[job] = made
        return made

