"""The frames between the caller and a compute worker: every size arrives whole, in order."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from just_distribute.executors import wire


@pytest.mark.timeout(60)
def test_frames_of_every_size_arrive_whole_and_in_order() -> None:
    a, b = socket.socketpair()
    wire.tune_socket(a)
    wire.tune_socket(b)
    # Around the one-write threshold, and larger than both socket buffers together (the
    # receiver must drain while the sender is still writing).
    sizes = [0, 1, 65535, 65536, 65537, 3 * wire.SOCKET_BUFFER + 7]
    frames = [os.urandom(n) for n in sizes]
    got: list[bytes] = []
    reader = threading.Thread(
        target=lambda: got.extend(bytes(wire.recv_frame(b)) for _ in frames), daemon=True
    )
    reader.start()
    try:
        for frame in frames:
            wire.send_frame(a, frame)
        reader.join(timeout=30)
        assert not reader.is_alive()
        assert [len(g) for g in got] == sizes
        assert got == frames
        a.close()
        with pytest.raises(EOFError):
            wire.recv_frame(b)
    finally:
        a.close()
        b.close()
