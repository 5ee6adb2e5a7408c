"""``job="compute"``: a pool of worker processes for CPU-bound calls.

Each worker is a fresh interpreter started with ``subprocess`` and joined to the caller by
a socket; one thread per worker in the caller sends it a chunk and waits for the answer.
This gives what a fork-based pool (multiprocessing, pathos) cannot: a worker that dies is
noticed at once (the socket closes) and named, a stuck worker can be killed and replaced
without touching the others, no lock or thread is inherited through ``fork``, and the
caller's ``__main__`` is never re-imported. Data travels with the standard C pickle,
functions by reference, or by value through dill when they must (lambdas, closures,
functions in ``__main__``); a function is sent once per worker, not once per chunk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from pathlib import Path
from typing import Any

from just_distribute import channel as _channel
from just_distribute.errors import (
    InitializerError,
    ReceiveError,
    SendError,
    WorkerLostError,
)
from just_distribute.executors import shm as _shm
from just_distribute.executors import wire as _wire
from just_distribute.executors.base import ChunkFuture, Executor, Payload, Task
from just_distribute.executors.chunk import ChunkResult
from just_distribute.executors.process_main import _PAYLOAD_CACHE_SIZE, BOOTSTRAP
from just_distribute.executors.sendable import dumps_columns, shared_payload

__all__ = ["ProcessExecutor"]

log = logging.getLogger("just_distribute")

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


_Item = tuple[Payload, bytes, bool, ChunkFuture]


class _Held:
    """In the queue: a chunk is held by a worker that is starting (``ProcessExecutor.held``)."""


_HELD = _Held()


class _Worker:
    """One worker process and the caller-side thread that feeds it."""

    def __init__(self, owner: ProcessExecutor, index: int) -> None:
        self.owner = owner
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: socket.socket | None = None
        # The control line: "stop chunk N" while the worker runs it (the data socket is
        # busy with the chunk's request and reply).
        self.ctl: socket.socket | None = None
        self._ctl_lock = threading.Lock()
        self.seq = 0  # chunks sent to this process, for the control line
        self.pid: int | None = None
        self.keys: dict[str, None] = {}  # functions the worker holds, oldest first
        self.killed = False
        self.chunks_done = 0  # since the process started, for ``max_tasks``
        self.thread = threading.Thread(
            target=self._loop, name=f"just_distribute-compute-{index}", daemon=True
        )

    def spawn(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        parent_ctl, child_ctl = socket.socketpair()
        _wire.tune_socket(parent_sock)
        _wire.tune_socket(child_sock)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT, *filter(None, [env.get("PYTHONPATH")])]
        )
        env["JUST_DISTRIBUTE_IN_WORKER"] = "compute"
        try:
            self.proc = subprocess.Popen(
                # -P: the working directory must not shadow the standard library (the
                # caller's sys.path, sent next, decides where the user's modules are).
                [sys.executable, "-P", "-c", BOOTSTRAP, str(child_sock.fileno()),
                 str(child_ctl.fileno())],
                pass_fds=(child_sock.fileno(), child_ctl.fileno()),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent_ctl.close()
            parent_sock.close()
            raise
        finally:
            child_sock.close()
            child_ctl.close()
        self.conn = parent_sock
        with self._ctl_lock:
            self.ctl = parent_ctl
        self.keys = {}
        self.killed = False
        self.chunks_done = 0
        self.pid = None
        name = f"compute-{self.index}"
        _wire.send_frame(
            self.conn, pickle.dumps((list(sys.path), os.getpid(), name, self.owner.init_bytes))
        )
        status, pid, tb = pickle.loads(_wire.recv_frame(self.conn))
        if status != "ready":
            self.proc.wait()
            raise InitializerError(
                f"the initializer failed in worker process {name}; its traceback:\n{tb}"
            )
        self.pid = pid
        log.debug("started worker process %s (pid %s)", name, pid)

    def kill(self) -> None:
        """Kill the process (the feeding thread notices and reports)."""
        self.killed = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop_chunk(self, seq: int) -> None:
        """Ask the process to end chunk ``seq`` after its current call (if it runs it)."""
        with self._ctl_lock:
            if self.ctl is None:
                return
            with contextlib.suppress(OSError):  # the process is gone: nothing to stop
                _wire.send_frame(self.ctl, pickle.dumps(seq))

    def _close_ctl(self) -> None:
        with self._ctl_lock:
            if self.ctl is not None:
                self.ctl.close()
                self.ctl = None

    def _lost(self, fut: ChunkFuture) -> None:
        exitcode = None
        if self.proc is not None:
            try:
                exitcode = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                exitcode = self.proc.wait()
        if self.conn is not None:
            self.conn.close()
        self._close_ctl()
        pid = self.pid if self.pid is not None else (self.proc.pid if self.proc else None)
        if pid is not None:  # results it had written and no one will read
            _shm.sweep(writer=pid)
        self.proc, self.conn = None, None
        if not fut.done():
            fut.set_exception(
                WorkerLostError(
                    f"worker process {pid} died while running this call: "
                    f"{WorkerLostError.describe_exit(exitcode)}. The pool has replaced it.",
                    exitcode=exitcode,
                    pid=pid,
                )
            )

    def _preload(self, payload: Payload, fut: ChunkFuture) -> bool:
        """Have the worker load a new function (importing its module) before the chunk's
        clock starts: a timeout is for the call, not for imports. False if ``fut`` failed."""
        assert self.conn is not None
        try:
            _wire.send_frame(
                self.conn,
                pickle.dumps(
                    (payload.key, shared_payload(payload), None, False, 0, False), _wire.PROTOCOL
                ),
            )
            reply = _wire.recv_frame(self.conn)
        except (EOFError, OSError):
            self._lost(fut)
            return False
        if pickle.loads(reply)[0] != "loaded":  # "unloadable", with the traceback
            if fut.set_running_or_notify_cancel():
                self._deliver(reply, fut)
            return False
        # Mirror the worker's first-in-first-out cache of functions.
        if len(self.keys) >= _PAYLOAD_CACHE_SIZE:
            self.keys.pop(next(iter(self.keys)))
        self.keys[payload.key] = None
        return True

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _start_with(self, item: _Item) -> _Item | None:
        """Start the process for ``item``, letting a worker that is up take the chunk
        meanwhile (else every chunk held by a starting worker waits for it, and so does the
        caller's window, while another worker is free). Returns the item if it is still
        this worker's to send, else ``None``."""
        owner = self.owner
        if item[3].cancelled():  # nothing to start a process for
            return None
        with owner.held_lock:
            owner.held.append(item)
        owner.queue.put(_HELD)
        error: Exception | None = None
        try:
            self.spawn()
        except Exception as exc:
            self.proc, self.conn = None, None
            error = exc
        if owner.take_held(item) is None:
            return None  # sent by another worker
        if error is not None:
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                item[3].set_exception(error)
            return None
        return item

    def _send(self, item: _Item) -> bool:
        """Start the worker if needed and send it a chunk; False if the chunk is settled."""
        payload, data, stop_on_error, fut = item
        ticks = fut.updates is not None and fut.updates.wants_ticks
        if fut.cancelled():
            return False
        try:
            if self.proc is None or self.proc.poll() is not None:
                # Before the chunk's clock starts: a timeout is for the call, not start-up.
                self.spawn()
        except Exception as exc:
            self.proc, self.conn = None, None
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                fut.set_exception(exc)
            return False
        assert self.conn is not None
        if payload.key not in self.keys and not self._preload(payload, fut):
            return False
        # Registered before it counts as started, so that abandon() always finds it.
        self.seq += 1
        self.owner.running[fut] = (self, self.seq)
        if not fut.mark_started():
            self.owner.running.pop(fut, None)
            return False
        try:
            first = payload.key not in self.keys
            _wire.send_frame(
                self.conn,
                pickle.dumps(
                    (payload.key, payload.serialized() if first else None, data, stop_on_error,
                     self.seq, ticks),
                    protocol=_wire.PROTOCOL,
                ),
            )
        except OSError:
            self.owner.running.pop(fut, None)
            self._lost(fut)
            return False
        return True

    def _loop(self) -> None:
        owner = self.owner
        sent: ChunkFuture | None = None  # the chunk the worker is running
        stopping = False
        while True:
            if sent is None:
                if stopping:
                    break
                got = owner.queue.get()
                if got is None:
                    break
                if isinstance(got, _Held):  # a chunk waits for a worker that is starting
                    item = owner.take_held() if self._alive() else None
                else:
                    item = got if self._alive() else self._start_with(got)
                got = None  # a settled chunk must not stay alive while this thread waits
                if item is None or not self._send(item):
                    item = None
                    continue
                sent = item[3]
            fut = sent
            assert self.conn is not None
            try:
                reply = _wire.recv_frame(self.conn)
            except (EOFError, OSError):
                owner.running.pop(fut, None)
                self._lost(fut)
                sent = None
                continue
            if reply[:1] == _channel.FRAME_TAG:  # updates of the running chunk, not its outcome
                self._updates(reply, fut)
                continue
            owner.running.pop(fut, None)
            self.chunks_done += 1
            retire = owner.max_tasks is not None and self.chunks_done >= owner.max_tasks
            # Hand the worker its next chunk before unpickling this reply, so that the
            # worker computes while the caller rebuilds the results.
            sent = None
            if not stopping and not retire:
                try:
                    nxt = owner.queue.get_nowait()
                except queue.Empty:
                    nxt = None
                else:
                    if nxt is None:
                        stopping = True
                    elif isinstance(nxt, _Held):
                        nxt = owner.take_held()
                if nxt is not None and self._send(nxt):
                    sent = nxt[3]
            self._deliver(reply, fut)
            # This thread may wait long for its next chunk: it must not keep this one's
            # results (the future holds them) alive meanwhile.
            del fut, reply
            item = nxt = None
            if retire:
                # maxtasksperchild: a planned exit, not a crash; the next chunk that comes
                # to this feeder starts a fresh process.
                log.debug("worker %s retires after %d chunks", self.pid, self.chunks_done)
                self.stop()
        self.stop()

    def _updates(self, frame: bytearray, fut: ChunkFuture) -> None:
        if fut.updates is None:
            return
        try:
            records, dropped, done = _channel.decode(memoryview(frame)[1:])
        except Exception as exc:  # a value whose class the caller cannot import
            log.debug("updates from worker %s could not be read: %s", self.pid, exc)
            return
        fut.updates.receive(f"compute-{self.index}", records, dropped, done)

    def _deliver(self, reply: bytearray, fut: ChunkFuture) -> None:
        try:
            status, *rest = _wire.loads(reply)
        except Exception as exc:
            fut.set_exception(
                ReceiveError(
                    f"a result came back from worker process {self.pid} but cannot be "
                    f"rebuilt in the caller: {type(exc).__name__}: {exc}. Is the result's "
                    f"class importable in the caller?"
                )
            )
            return
        if status == "ok":
            result: ChunkResult = rest[0]
            fut.set_result(_wire.rebuild_outcome(result))
        elif status == "unsendable":
            fut.set_exception(ReceiveError(rest[1]))
        else:  # "unloadable": the chunk could not be rebuilt in the worker
            fut.set_exception(
                SendError(
                    f"the worker process could not rebuild the function or its arguments "
                    f"(is their module importable in the worker?):\n{rest[1]}"
                )
            )

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._close_ctl()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class ProcessExecutor(Executor):
    """Runs chunks in ``workers`` worker processes, started on first use and kept.

    Args:
        workers: the number of worker processes.
        initializer: called once in each worker process before its first chunk.
        initargs: the arguments for ``initializer``.
        max_tasks: replace a worker process after it has run this many chunks (the
            ``maxtasksperchild`` of ``multiprocessing.Pool``, whose tasks are chunks too);
            ``None`` keeps workers for the life of the pool.
    """

    name = "compute"
    recycles_workers = True
    remote = True
    chunks_per_worker = 4
    in_flight_per_worker = 2
    target_chunk_seconds = 0.05

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks: int | None = None,
    ) -> None:
        super().__init__(workers)
        self.max_tasks = max_tasks
        self.queue: queue.SimpleQueue[_Item | _Held | None] = queue.SimpleQueue()
        # Chunks taken by a worker that is starting its process, for a worker that is up.
        self.held: list[_Item] = []
        self.held_lock = threading.Lock()
        self.running: dict[ChunkFuture, tuple[_Worker, int]] = {}
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.init_bytes: bytes | None = None
        if initializer is not None:
            try:
                self.init_bytes = _wire.dumps_function((initializer, initargs))
            except Exception as exc:
                raise SendError(
                    f"cannot send the initializer {initializer!r} to the worker processes: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this compute pool has been shut down")
            if not self._workers:
                self._workers = [_Worker(self, i) for i in range(self.workers)]
                for w in self._workers:
                    w.thread.start()
                log.info("compute pool: %d worker processes", self.workers)

    def take_held(self, item: _Item | None = None) -> _Item | None:
        """Take ``item`` (else the oldest) from the chunks held by starting workers."""
        with self.held_lock:
            if item is None:
                return self.held.pop(0) if self.held else None
            for i, held in enumerate(self.held):
                if held is item:
                    return self.held.pop(i)
            return None

    def submit(self, task: Task) -> ChunkFuture:
        """Serialise the chunk (in the caller, so a bad argument fails here) and queue it."""
        shared_payload(task.payload, task.run)  # its constants' segment lasts the run
        data = dumps_columns(task.columns, task.payload.name, "a worker process", shared=True)
        if not self._workers:
            self._start()
        fut = ChunkFuture()
        fut.updates = task.updates
        if isinstance(data, _shm.Shared):  # its segment lives until the chunk is settled
            fut.add_done_callback(data.release)
        self.queue.put((task.payload, data, task.stop_on_error, fut))
        return fut

    def abandon(self, future: ChunkFuture) -> None:
        """Cancel a queued chunk; kill the worker running a started one (it is replaced)."""
        if future.cancel():
            return
        entry = self.running.get(future)
        if entry is not None:
            entry[0].kill()

    def stop_after_call(self, future: ChunkFuture) -> None:
        """Ask the worker process running ``future`` to end it after the current call."""
        entry = self.running.get(future)
        if entry is not None:
            entry[0].stop_chunk(entry[1])

    def shutdown(self, wait: bool = True) -> None:
        """Stop every worker process."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for _ in workers:
            self.queue.put(None)
        for w in workers:
            if w.thread.is_alive() and w.proc is not None and w.index in self._busy_indexes():
                w.kill()
        if wait:
            for w in workers:
                w.thread.join(timeout=5)
                if w.thread.is_alive():
                    w.kill()
                    w.thread.join(timeout=2)

    def _busy_indexes(self) -> set[int]:
        return {w.index for w, _ in list(self.running.values())}

    def pids(self) -> list[int]:
        """The process ids of the live worker processes."""
        # A killed worker is not live even before its exit is noticed: the kill is final.
        return [
            w.proc.pid
            for w in self._workers
            if w.proc is not None and not w.killed and w.proc.poll() is None
        ]
