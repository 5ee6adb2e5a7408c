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
(never dask's hash of the arguments): two identical calls both run. Code of installed
packages travels by reference; code of modules the workers cannot be expected to import
(a test file, a ``tasks.py`` beside the script) by value, with cloudpickle (see
:mod:`.cluster_code`); a worker's ``ModuleNotFoundError`` is answered by one resend by
value. The outcome then comes back with cloudpickle too, so that an instance of such a
class is an instance of the caller's class again.

Waits: every one is bounded by ``connect_timeout``, while chunks are out too (the
scheduler is asked every second whether it is there; see :mod:`.cluster_connect`).

Execution is at least once: a chunk whose worker died is run again elsewhere, so some of
its calls may have run twice; every result is delivered exactly once.

A worker that dies mid-chunk: dask reruns the chunk on another worker (its nanny starts a
fresh one); after ``distributed.scheduler.allowed-failures`` deaths the chunk fails with a
:class:`~just_distribute.errors.WorkerLostError`, and the engine retries its calls one at
a time to name the culprit.

Nesting: a call made from inside a cluster task (a distributed function calling another
one) runs serially in that task. A dask worker runs one task per thread; waiting on the
cluster from inside it could deadlock a cluster whose every worker is waiting.

Updates (:func:`just_distribute.update`): a chunk's records go as dask events on
``UPDATE_TOPIC`` while it runs, its last ones with its outcome; so do its progress ticks
(how many calls are done) when the run shows progress.

Timeouts: a worker announces each chunk it starts (a dask event), and the ``timeout=``
clock of a chunk starts then, not while it waits in the scheduler's queue.

Withdrawing (an error, a timeout, a break out of ``f.iter``, Ctrl-C): the chunks' dask tasks
are cancelled, so queued ones never start; a running one reads its worker's "cancelled"
mark between calls and ends after its current call. A call still running after a grace
(``WITHDRAW_GRACE``; a fifth of it after a timeout or Ctrl-C) is interrupted in its thread
(``KeyboardInterrupt``, which ends Python code at once); one that survives that too (blocked
in C code) costs its worker process if that worker has one thread: its nanny starts a fresh
one, so the next call does not wait behind it. A worker with more threads (a cluster of
one's own) is not restarted: it runs other work; the blocked call holds one of its threads
until it returns. See :mod:`.cluster_worker`.
"""

from __future__ import annotations

import logging
import queue
import re
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from concurrent.futures import InvalidStateError
from typing import Any

from just_distribute import channel as _channel
from just_distribute.config import Options
from just_distribute.errors import (
    ClusterUnreachableError,
    JustDistributeError,
    ReceiveError,
    SendError,
    VersionMismatchError,
)
from just_distribute.executors import cluster_code as _code
from just_distribute.executors import cluster_connect as _connect
from just_distribute.executors import wire as _wire
from just_distribute.executors.base import WITHDRAW_GRACE, ChunkFuture, Executor, Payload, Task
from just_distribute.executors.chunk import ChunkResult, current_job
from just_distribute.executors.cluster_connect import stop_embedded
from just_distribute.executors.cluster_worker import (
    START_TOPIC,
    UPDATE_TOPIC,
    calls_running,
    exit_worker,
    interrupt_calls,
    run_on_worker,
)
from just_distribute.executors.sendable import dumps_columns
from just_distribute.service.launch import on_stop
from just_distribute.updates import TaskUpdates

__all__ = ["SCATTER_BYTES", "ClusterExecutor", "adapt_client", "create", "stop_embedded"]

log = logging.getLogger("just_distribute")

#: Payloads (function + keyword constants) this large or larger are scattered once per run
#: (each worker then fetches them once); smaller ones travel inside each chunk's task, where
#: a few KiB cost less than the scatter's round trip.
SCATTER_BYTES = 16 * 1024


_import_distributed = _connect.import_distributed
#: Seconds between two checks that the scheduler still answers, while chunks are out.
_WATCH_EVERY = 1.0
#: Seconds an interrupted call has to end before its (one-thread) worker is restarted.
_INTERRUPT_GRACE = 0.2


#: The states of a task on a dask worker whose thread runs it (cancelled: while running).
_RUNNING_STATES = frozenset({"executing", "long-running", "cancelled", "resumed"})


def _task_states(keys: list[str], dask_worker: Any) -> list[str]:
    """Run on each worker: the states of those of ``keys`` that it holds."""
    tasks = dask_worker.state.tasks
    return [tasks[key].state for key in keys if key in tasks]


# -- the caller side ----------------------------------------------------------------------
class _DaskChunkFuture(ChunkFuture):
    def __init__(self, task: Task) -> None:
        super().__init__()
        self.dask_future: Any = None
        self.task = task
        self.resent = False
        self.where: str | None = None  # the worker that announced the start


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
        self._pending: dict[int, tuple[Any, ChunkFuture]] = {}  # not yet settled, by id
        self._payloads: weakref.WeakKeyDictionary[Payload, tuple[int, str, bytes, bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._watcher: threading.Thread | None = None
        self._wake = threading.Event()
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
        try:
            threads = sum(client.nthreads().values())
        except (OSError, RuntimeError) as exc:  # a lost scheduler; a client dask closed
            raise self._lost(client, exc) from exc
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
            msg = event[1]
            key, where = (msg[0], msg[1]) if isinstance(msg, list | tuple) else (msg, None)
            fut = started.pop(key, None)
            if fut is not None:
                fut.started_at = time.monotonic()
                if isinstance(fut, _DaskChunkFuture):
                    fut.where = where

        client.subscribe_topic(START_TOPIC, on_start)
        receivers = self._updates_by_key

        def on_updates(event: Any) -> None:
            key, worker, data = event[1]
            receiver = receivers.get(key)
            if receiver is None:
                return
            try:
                records, dropped, done = _channel.decode(data)
            except Exception as exc:  # a value whose class the caller cannot import
                log.debug("updates of %s could not be read: %s", key, exc)
                return
            receiver.receive(worker, records, dropped, done)

        client.subscribe_topic(UPDATE_TOPIC, on_updates)

    def _connect(self) -> Any:
        client = _connect.connect(self._address, self._tls, self._connect_timeout,
                                  self._requested)
        self._scheduler = client.scheduler.address
        return client

    # -- running chunks ------------------------------------------------------------------
    def _function_bytes(self, payload: Payload) -> tuple[str, bytes, bool]:
        """The payload's key and bytes for the cluster, and whether code goes by value."""
        usual = payload.serialized()  # raises SendError with the reason when it cannot
        made = self._payloads.get(payload)
        if made is not None and made[0] == _code.generation:
            return made[1], made[2], made[3]
        generation = _code.generation
        data = _code.dumps(payload.fn, usual, self._asker())
        if data is None:
            made = (generation, payload.key, usual, False)
        else:
            import hashlib

            made = (generation, hashlib.blake2b(data, digest_size=16).hexdigest(), data, True)
        self._payloads[payload] = made
        return made[1], made[2], made[3]

    def _payload_arg(self, client: Any, key: str, data: bytes, payload: Payload) -> Any:
        if len(data) < SCATTER_BYTES:
            return data
        with self._lock:
            scattered = self._scattered.get(key)
            if scattered is None:
                # Through the scheduler (direct=False): the caller may not reach the
                # workers directly; the bytes then live on one worker and travel
                # worker-to-worker when others need them.
                scattered = client.scatter([data], direct=False, hash=False)[0]
                self._scattered[key] = scattered
                weakref.finalize(payload, self._scattered.pop, key, None)
            return scattered

    def submit(self, task: Task) -> ChunkFuture:
        """Send the chunk to the cluster as one dask task; return its future.

        Raises:
            SendError: the function or the arguments cannot be serialised.
            ClusterUnreachableError: the first connection failed.
        """
        fut = _DaskChunkFuture(task)
        fut.mark_started()
        self._send(fut)
        return fut

    def _columns_bytes(self, task: Task) -> tuple[bytes, bool]:
        columns = list(task.columns)
        try:
            by_value = _code.dumps(columns, ask=self._asker())
        except Exception:  # what cloudpickle cannot send: the usual way says why
            by_value = None
        if by_value is not None:
            return by_value, True
        return dumps_columns(columns, task.payload.name, "the cluster"), False

    def _asker(self) -> _code.Asker:
        return _connect.asker(self.client, self._connect_timeout)

    def _send(self, fut: _DaskChunkFuture) -> None:
        task = fut.task
        data, columns_by_value = self._columns_bytes(task)
        client = self.client()
        key_of_fn, fn_bytes, fn_by_value = self._function_bytes(task.payload)
        payload = self._payload_arg(client, key_of_fn, fn_bytes, task.payload)
        key = f"{_key_prefix(task.payload.name)}-{uuid.uuid4().hex}"
        fut.started_at = None  # set when the worker announces the start (see _subscribe)
        self._started_by_key[key] = fut  # before submitting: the start may be announced soon
        if task.updates is not None:
            self._updates_by_key[key] = task.updates
        try:
            dask_future = client.submit(
                run_on_worker, payload, key_of_fn, data, task.stop_on_error,
                fn_by_value or columns_by_value, _code.versions(),
                task.updates is not None and task.updates.wants_ticks, key=key, pure=False,
            )
        except BaseException:
            self._started_by_key.pop(key, None)
            self._updates_by_key.pop(key, None)
            raise
        fut.dask_future = dask_future
        self._pending[id(dask_future)] = (dask_future, fut)
        self._watch(client, dask_future, fut, task.payload.name)

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
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch_scheduler, args=(client,),
                    name="just_distribute-cluster-watch", daemon=True,
                )
                self._watcher.start()
        outcomes = self._outcomes

        async def fetch() -> None:
            try:
                data = await client.gather(dask_future, asynchronous=True)
            except BaseException as exc:  # the task's error, a dead worker, a cancellation
                outcomes.put((fut, dask_future, name, False, exc))
            else:
                outcomes.put((fut, dask_future, name, True, data))

        client.loop.add_callback(fetch)

    def _watch_scheduler(self, client: Any) -> None:
        # dask waits for a silent scheduler without bound: ask it, while chunks are out.
        address = client.scheduler.address
        security = getattr(client, "security", None)
        while not self._closed and not self._wake.wait(_WATCH_EVERY):
            if not self._pending:
                continue
            try:
                _connect.probe(address, security, self._connect_timeout)
            except ClusterUnreachableError as exc:
                if not self._closed:
                    self._lose(client, address, exc)
                return

    def _lose(self, client: Any, address: str, exc: ClusterUnreachableError) -> None:
        """The scheduler is gone or silent: fail every chunk out; reconnect on next use."""
        log.warning("job 'cluster': %s", exc)
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._started_by_key.clear()
            self._updates_by_key.clear()
            self._watcher = None
            ours = self._client is client
            if ours:
                self._client = None
                self._scattered.clear()
                self._payloads = weakref.WeakKeyDictionary()
        error = f"the dask scheduler at {address} went away or stopped answering: {exc}"
        for _dask_future, fut in pending:
            _set(fut, None, ClusterUnreachableError(error))
        if ours:
            # Its loop may be stuck on the silent scheduler: close it on the side.
            threading.Thread(target=_connect.close_quietly, args=(client, []), daemon=True).start()

    def _settle_loop(self) -> None:
        while (item := self._outcomes.get()) is not None:
            fut = item[0]
            try:
                self._settle(*item)
            except BaseException as exc:  # the settler must survive, the chunk must end
                _set(fut, None, exc)
            # Not kept alive (with its results) while waiting for the next outcome.
            del fut
            item = None

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
                records, dropped, _done = _channel.decode(tail)
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
                _set(fut, _wire.rebuild_outcome(result), None)
            elif tag == "unsendable":
                _set(fut, None, ReceiveError(message))
            elif tag == "mismatch":  # a worker that joined after the check at connect
                try:
                    _code.check_versions(self._scheduler or "?", _code.versions(), result)
                except VersionMismatchError as exc:
                    _set(fut, None, exc)
            elif (tag == "unloadable" and isinstance(fut, _DaskChunkFuture) and not fut.resent
                  and _code.learn_missing(result)):
                # The worker lacks a module this process has: once more, by value.
                log.info("job 'cluster': the workers lack module %r; sending it by value",
                         result)
                fut.resent = True
                self._send(fut)
            else:
                _set(fut, None, SendError(
                    f"the dask worker could not rebuild {name}() or its arguments (are their "
                    f"modules installed on the workers?):\n{message}"
                ))
            return
        _set(fut, None, _connect.task_error(value, name, self._scheduler, self._closed))

    def _lost(self, client: Any, exc: BaseException) -> ClusterUnreachableError:
        """The error for a scheduler lost after connecting; the next call reconnects."""
        with self._lock:
            if self._client is client:
                self._client = None
                self._threads = None
        address = self._scheduler or self._address or getattr(
            getattr(client, "scheduler", None), "address", "?"
        )
        return ClusterUnreachableError(
            f"lost the connection to the dask scheduler at {address}: "
            f"{type(exc).__name__}: {str(exc).strip().rstrip('.')}. Did the service stop? "
            f"Start it again with "
            f"`just-distribute cluster` (or fix address=); the next call reconnects."
        )

    def abandon(self, future: ChunkFuture) -> None:
        """Cancel the chunk's dask task (one already running ends at its next call)."""
        self.withdraw([future], hard=True)

    def withdraw(self, futures: Sequence[ChunkFuture], hard: bool) -> None:
        """Cancel the chunks' dask tasks in one message: queued ones never start, running
        ones end after their current call (see ``cluster_worker.cancelled_check``). A call
        that still runs ``WITHDRAW_GRACE`` seconds later (a fifth of that when ``hard``: a
        timeout, Ctrl-C) is interrupted; if it runs on even then (blocked in C code), its
        worker process is ended, if that worker has one thread (it runs nothing else): its
        nanny starts a fresh one, and the next call does not wait behind the stuck one."""
        ours = [f for f in futures if isinstance(f, _DaskChunkFuture) and f.dask_future]
        tasks = [f.dask_future for f in ours]
        for f in futures:
            f.cancel()
        if not tasks:
            return
        running: dict[str, list[str]] = {}
        for f in ours:
            if f.where is not None:
                running.setdefault(f.where, []).append(f.dask_future.key)

        def cancel() -> None:
            client = tasks[0].client
            try:
                client.cancel(tasks)
                if running:
                    time.sleep(WITHDRAW_GRACE / 5 if hard else WITHDRAW_GRACE)
                    self._free_stuck(client, running)
            except Exception as exc:  # the cluster is gone: nothing runs there any more
                log.debug("cancelling %d dask tasks: %s", len(tasks), exc)

        # In a thread: a lost scheduler must not hold the caller, who has an error to see.
        threading.Thread(target=cancel, name="just_distribute-cancel", daemon=True).start()

    @staticmethod
    def _free_stuck(client: Any, running: dict[str, list[str]]) -> None:
        """Interrupt the withdrawn calls still running; restart the one-thread workers
        whose call survives the interrupt (see :mod:`.cluster_worker`)."""

        def ask(fn: Any) -> list[str]:
            answers = {
                w: client.run(fn, keys, workers=[w], on_error="return").get(w)
                for w, keys in running.items()
            }
            return [w for w, yes in answers.items() if yes is True]

        if not ask(interrupt_calls):
            return  # every chunk ended between two calls
        time.sleep(_INTERRUPT_GRACE)
        stuck = ask(calls_running)
        if not stuck:
            return
        threads = client.nthreads()
        alone = [w for w in stuck if threads.get(w) == 1]
        if alone:
            log.warning(
                "restarting dask worker(s) %s: a withdrawn call is still running there",
                ", ".join(alone),
            )
            # Not restart_workers(): its graceful close waits for the stuck call. The
            # worker's nanny starts a fresh one as soon as this one is gone.
            client.run(exit_worker, workers=alone, wait=False)
        kept = [w for w in stuck if w not in alone]
        if kept:
            log.warning(
                "a withdrawn call blocked outside Python still holds a thread of dask "
                "worker(s) %s until it returns (a worker with several threads is not "
                "restarted: it runs other work)", ", ".join(kept),
            )

    def stop(self, futures: Sequence[ChunkFuture]) -> None:
        """Cancel the chunks' dask tasks, and restart the workers still running them.

        A dask worker cannot interrupt a task's thread: cancelled, a running task would go
        on occupying its worker (``sleep(300)`` for 300 s) and hold up whoever comes next.
        Its nanny starts a fresh worker process instead.
        """
        ours = {
            f.dask_future.key
            for f in futures
            if isinstance(f, _DaskChunkFuture) and f.dask_future is not None
        }
        for future in futures:
            self.abandon(future)
        client = self._client
        busy: set[str] = set()
        if ours and client is not None:
            # Asked after cancelling: a cancelled task still running stays listed (as
            # "cancelled"). A task just submitted may still be on its way (the submission
            # travels on another connection than the cancellation) and start: ask for a
            # second at least, and until no task of ours waits anywhere (3 s at most).
            started = time.monotonic()
            try:
                while True:
                    states = client.run(_task_states, sorted(ours))
                    waiting = False
                    for worker, found in states.items():
                        for state in found:
                            if state in _RUNNING_STATES:
                                busy.add(worker)
                            else:
                                waiting = True
                    elapsed = time.monotonic() - started
                    if (not waiting and elapsed > 1) or elapsed > 3:
                        break
                    time.sleep(0.1)
            except Exception as exc:  # best effort: the cluster may be gone already
                log.debug("asking the workers what they run: %s", exc)
        if busy:
            log.info("restarting %d dask worker(s) that ran stopped chunks", len(busy))
            try:
                client.restart_workers(sorted(busy), timeout=60, raise_for_error=False)
            except Exception as exc:
                log.warning("could not restart the dask workers %s: %s", busy, exc)

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
            pending = [dask_future for dask_future, _fut in self._pending.values()]
            self._pending.clear()
            self._wake.set()
            if self._settler is not None:
                self._outcomes.put(None)
                self._settler = None
        if client is not None:
            _connect.close_quietly(client, pending)


#: Every executor of this process, so that a service about to stop can disconnect them.
_live: weakref.WeakSet[ClusterExecutor] = weakref.WeakSet()


def _disconnect(address: str) -> None:
    """Close the clients connected to ``address``: that service is about to stop."""
    for ex in list(_live):
        if ex._scheduler == address:
            ex.shutdown()


on_stop(_disconnect)

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

