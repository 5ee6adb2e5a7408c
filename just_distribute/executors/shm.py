"""Large buffers through shared memory instead of the socket (``job="compute"`` only).

Pickle protocol 5 hands every large contiguous buffer of a message (a numpy array, the
numeric blocks of a pandas frame, a ``bytearray``) to a callback instead of copying it into
the stream. When those of :data:`MIN_BUFFER` bytes or more add up to :data:`MIN_BYTES`,
they go into one *segment*, a file in ``/dev/shm`` (memory, not disk; the temporary folder
where there is no ``/dev/shm``), and only the small stream and the segment's name cross the
socket::

    caller                                 /dev/shm                     worker
    pickle(columns, buffer_callback) --> pwrite jd-<caller>-<pid>-n --> open, mmap, unlink
    stream + name  ----------------------- socket ------------------->  pickle.loads(stream,
                                                                          buffers=views of the map)
    open, mmap, unlink   <----------------- jd-<caller>-<pid>-n <------- pwrite(results)

The writer copies each buffer once, with ``pwrite`` (its pages never join the writer's
resident memory); the reader maps the file, so an array it rebuilds is a view of the
segment, not a copy. The reader unlinks a message's segment as soon as it has mapped it:
from then on the memory lives exactly as long as the arrays that view it.

Nothing is left behind. A segment's name holds the pid of the caller it serves (its
*owner*) and of the process that wrote it, so that whoever outlives a writer can find its
segments: the caller unlinks a chunk's input when the chunk is settled (run, cancelled or
its worker lost), a run's constants when the run ends, the results a lost worker had
written (:func:`sweep`), and every segment of its own at exit; a worker whose caller died
(killed) unlinks all of that caller's segments before it exits (:func:`reap_if_orphaned`);
and the first segment a process writes sweeps those whose owner and writer are both dead,
for the case where caller and workers died together.

This module is imported by worker processes: the standard library only, no numpy.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import mmap
import os
import pickle
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from just_distribute._pids import alive

__all__ = [
    "MIN_BYTES",
    "TAG",
    "dumps",
    "is_shared",
    "leftovers",
    "loads",
    "reap_if_orphaned",
    "sweep",
]

#: A message whose buffers of :data:`MIN_BUFFER` bytes or more add up to at least this many
#: bytes sends them through shared memory; a smaller one stays one pickle (a segment costs a
#: file, a map and its page faults: about 0.1 ms, what the socket takes for ~1 MB).
MIN_BYTES = 1 << 20
#: Buffers smaller than this always stay in the pickle.
MIN_BUFFER = 64 << 10
#: The first byte of a message whose large buffers are in a segment (a pickle starts 0x80).
TAG = b"S"
PREFIX = "jd-"

def _folder() -> str:
    if os.path.isdir("/dev/shm"):
        return "/dev/shm"
    import tempfile  # (not imported where there is /dev/shm: workers start faster)

    return tempfile.gettempdir()


DIR = _folder()
_ALIGN = 64  # every buffer starts on a cache line (and numpy's preferred alignment)
_META = struct.Struct("!I")

_counter = itertools.count()
_lock = threading.Lock()
_started = False


def _parse(name: str) -> tuple[int, int] | None:
    """``(owner, writer)`` from a segment's file name, or None if it is not one of ours."""
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX):].split("-")
    if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def leftovers(owner: int | None = None) -> list[str]:
    """The paths of the segments that exist now (of ``owner`` only, if given)."""
    try:
        names = os.listdir(DIR)
    except OSError:
        return []
    found = []
    for name in names:
        ids = _parse(name)
        if ids is not None and (owner is None or ids[0] == owner):
            found.append(os.path.join(DIR, name))
    return found


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def sweep(owner: int | None = None, writer: int | None = None) -> int:
    """Unlink the segments of ``owner`` (default: this process, as a caller) written by
    ``writer`` (default: any); return how many. The caller calls it for a worker it lost."""
    owner = os.getpid() if owner is None else owner
    count = 0
    for path in leftovers(owner):
        ids = _parse(os.path.basename(path))
        if ids is not None and (writer is None or ids[1] == writer):
            _unlink(path)
            count += 1
    return count


def _sweep_dead_owners() -> None:
    for path in leftovers():
        ids = _parse(os.path.basename(path))
        if ids is not None and not alive(ids[0]) and not alive(ids[1]):
            _unlink(path)


def _first_use(owner: int) -> None:
    global _started
    with _lock:
        if _started:
            return
        _started = True
    _sweep_dead_owners()
    if owner == os.getpid():  # a caller: whatever of its own is still there at exit is nobody's
        atexit.register(sweep, owner)


def _dying(pid: int) -> bool | None:
    """Whether ``pid`` is exiting or gone (Linux: its /proc flags); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return True if os.path.isdir("/proc/self") else None  # gone (if there is a /proc)
    except OSError:
        return None
    state, flags = fields[0], int(fields[6])
    return state in (b"Z", b"X") or bool(flags & 0x4)  # PF_EXITING: set before its files close


def reap_if_orphaned(parent: int, wait: float = 1.0) -> None:
    """In a worker leaving its loop: if its caller died, unlink every segment of that caller.

    A killed caller's socket closes while it exits, a moment before the worker is
    re-parented; on Linux its /proc flags already say it is exiting then. Elsewhere the
    worker waits up to ``wait`` seconds for the re-parenting, and only when the caller has
    segments left. A caller that just closed its pool is alive and not exiting: nothing is
    touched and nothing waits.
    """
    if not leftovers(parent):
        return
    dying = _dying(parent) if os.getppid() == parent else True
    if dying is None:
        deadline = time.monotonic() + wait
        while os.getppid() == parent and alive(parent):
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        dying = True
    if dying:
        sweep(parent)


# -- writing and reading -----------------------------------------------------------------


class Shared(bytes):
    """A message whose large buffers are in a segment, which it unlinks when dropped (if no
    reader has yet). Pickles as plain bytes."""

    path = ""
    # Held by the class: __del__ may run while the interpreter tears the module down.
    _remove = staticmethod(os.unlink)

    def release(self, *_: object) -> None:
        """Unlink the segment if no reader has yet (the message's chunk is settled); takes
        and ignores a future, to serve as its done-callback."""
        try:  # noqa: SIM105 (not contextlib: at teardown the module's globals are gone)
            self._remove(self.path)
        except Exception:  # already unlinked by its reader: the usual case
            pass

    def __del__(self) -> None:
        # (bytes cannot be weakly referenced, so no weakref.finalize; at interpreter exit
        # the atexit sweep covers what this misses.)
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return bytes, (bytes(self),)


def _new_path(owner: int) -> str:
    _first_use(owner)
    name = f"{PREFIX}{owner}-{os.getpid()}-{next(_counter)}-{os.urandom(4).hex()}"
    return os.path.join(DIR, name)


def _write(buffers: list[memoryview], owner: int) -> tuple[str, list[tuple[int, int]]]:
    """Write ``buffers`` into a new segment; its path and each buffer's (offset, length)."""
    spans, end = [], 0
    for buf in buffers:
        spans.append((end, buf.nbytes))
        end += -(-buf.nbytes // _ALIGN) * _ALIGN
    path = _new_path(owner)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, end)
        for buf, (offset, length) in zip(buffers, spans, strict=True):
            done = 0
            while done < length:  # pwrite may write less than asked (2 GiB per call)
                done += os.pwrite(fd, buf[done:], offset + done)
    except BaseException:
        _unlink(path)
        raise
    finally:
        os.close(fd)
    return path, spans


def dumps(
    obj: Any,
    pickler: Callable[..., Any] | None = None,
    keep: bool = False,
    hand_over: bool = False,
    owner: int | None = None,
) -> bytes:
    """Serialise ``obj``, its buffers of :data:`MIN_BYTES` or more into a segment.

    Args:
        obj: what to send.
        pickler: ``pickler(file, buffer_callback)`` returning an object with ``dump``;
            default the C pickle at protocol 5.
        keep: the segment is read by many (a function's constants): readers do not unlink
            it; it goes when the returned bytes are dropped.
        hand_over: the reader alone unlinks the segment (a worker's results, which it
            drops once sent): plain bytes are returned, not a :class:`Shared`.
        owner: the pid of the caller the segment serves, named in it (default: this
            process; a worker passes its caller's).

    Returns:
        Plain pickle bytes when there is no large buffer; else a :class:`Shared` message.
    """
    import io

    def pickled(limit: float) -> tuple[bytes, list[memoryview]]:
        big: list[memoryview] = []

        def take(buf: pickle.PickleBuffer) -> bool:
            try:
                raw = buf.raw()
            except BufferError:  # not contiguous: it stays in the stream
                return True
            if raw.nbytes < limit:
                return True
            big.append(raw)
            return False  # out of band

        out = io.BytesIO()
        if pickler is None:
            pickle.Pickler(out, protocol=5, buffer_callback=take).dump(obj)
        else:
            pickler(out, take).dump(obj)
        return out.getvalue(), big

    kind = "pickle" if pickler is None else "dill"
    stream, big = pickled(MIN_BUFFER)
    if sum(b.nbytes for b in big) < MIN_BYTES:
        if big:  # not worth a segment after all: every buffer in the stream
            stream, big = pickled(float("inf"))
        return stream  # a plain pickle (or dill) stream, as every reader knows it
    try:
        path, spans = _write(big, os.getpid() if owner is None else owner)
    except OSError as exc:  # no room (or no folder) for segments: the socket, as before
        _fallback(exc)
        return pickled(float("inf"))[0]
    try:
        msg = Shared(TAG + _pack_meta((os.path.basename(path), spans, keep, kind)) + stream)
    except BaseException:
        _unlink(path)
        raise
    if hand_over:
        return bytes(msg)
    msg.path = path
    return msg


_warned = False


def _fallback(exc: OSError) -> None:
    global _warned
    if not _warned:
        _warned = True
        import logging

        logging.getLogger("just_distribute").warning(
            "shared memory unavailable in %s (%s): large arrays travel through the socket "
            "instead (slower; free space in %s to get it back)", DIR, exc, DIR,
        )


def _pack_meta(meta: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(meta, protocol=5)
    return _META.pack(len(data)) + data


def is_shared(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` was written by :func:`dumps` with a segment (not a plain pickle)."""
    return bytes(data[:1]) == TAG


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Rebuild what :func:`dumps` wrote; its arrays are views of the mapped segment."""
    view = memoryview(data)
    (n,) = _META.unpack(view[1 : 1 + _META.size])
    start = 1 + _META.size
    name, spans, keep, kind = pickle.loads(view[start : start + n])
    stream = view[start + n :]
    buffers: list[memoryview] = []
    if name:
        path = os.path.join(DIR, os.path.basename(name))
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            # A shared segment is mapped copy-on-write: a call that changes its constant in
            # place changes its own copy, as when the constant came through the socket.
            access = mmap.ACCESS_COPY if keep else mmap.ACCESS_WRITE
            mapped = mmap.mmap(fd, size, access=access)
        finally:
            os.close(fd)
            if not keep:
                _unlink(path)
        whole = memoryview(mapped)
        buffers = [whole[offset : offset + length] for offset, length in spans]
    if kind == "pickle":
        return pickle.loads(stream, buffers=buffers)
    import dill

    return dill.loads(bytes(stream), buffers=buffers)
