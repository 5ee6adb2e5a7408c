"""``job="serial"``: every call in the caller's own thread, one at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from just_distribute.executors.base import ChunkFuture, Executor, Task
from just_distribute.executors.chunk import run_chunk

__all__ = ["SerialExecutor"]


class SerialExecutor(Executor):
    """Runs each chunk at once, in the calling thread: for debugging, profiling and pdb."""

    name = "serial"
    runs_inline = True
    native_initializer = True
    chunks_per_worker = 64
    in_flight_per_worker = 1

    def __init__(
        self, initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = ()
    ) -> None:
        super().__init__(1)
        if initializer is not None:
            initializer(*initargs)  # the caller's thread is the one worker: run it now

    def submit(self, task: Task) -> ChunkFuture:
        """Run the chunk now and return a finished future."""
        fut = ChunkFuture()
        fut.mark_started()
        name = f"serial:{threading.current_thread().name}"
        result = run_chunk(
            task.payload.fn,
            task.columns,
            task.stop_on_error,
            name,
            "",  # nested calls inside a serial run may use any job
            False,
            task.channel(name),
        )
        fut.set_result(result)
        return fut

    def check_nesting(self) -> bool:
        """Serial never needs to fall back: it is already serial."""
        return False
