"""Reaching a dask scheduler with a bound on every wait: used by clients and by
``just-distribute worker`` alike (this module imports no executor code).

dask's own ``Client(address, timeout=...)`` bounds the TCP connect, not what follows: a port
that accepts connections but is no scheduler (a dashboard, any HTTP server) can keep it
waiting for minutes, and a malformed address fails deep inside with a raw ``ValueError``.
So the address is checked first (:func:`check_address`), and the scheduler is asked who it
is over a fresh connection, on an event loop of its own, within a timeout (:func:`probe`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from typing import Any

from just_distribute.errors import ClusterUnreachableError

__all__ = ["check_address", "host_port", "probe", "route_to"]

_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def check_address(address: str, secure: bool) -> str:
    """The address with its scheme (``tls://`` when ``secure`` and none is given).

    Raises:
        ValueError: the address is not ``[tcp://|tls://]HOST:PORT``; says what is.
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"address={address!r} is not a scheduler address; give "
                         f"'tcp://HOST:PORT' (or tls://HOST:PORT for a TLS service)")
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = ("tls" if secure else "tcp"), text
    if scheme not in _SCHEMES:
        raise ValueError(
            f"address={address!r} has the scheme {scheme!r}, which is no dask scheduler's; "
            f"give 'tcp://HOST:PORT' (or tls://HOST:PORT). The dashboard's http:// URL is "
            f"not the scheduler's address."
        )
    if scheme in ("tcp", "tls"):
        host, colon, port = rest.rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"address={address!r} needs a host and a port between 1 and 65535, e.g. "
                f"'{scheme}://10.0.0.5:8786'"
            )
        if "/" in rest or " " in host:
            raise ValueError(f"address={address!r} is not HOST:PORT after {scheme}://")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(part and (part.replace("-", "").isalnum()) for part in host.split(".")):
                raise ValueError(f"address={address!r}: {host!r} is not a host name or an "
                                 f"IP address") from None
    return f"{scheme}://{rest}"


async def _identity(address: str, security: Any, timeout: float) -> dict[str, Any]:
    from distributed.comm.core import connect as dask_connect

    args = security.get_connection_args("client") if security is not None else {}
    comm = await dask_connect(address, timeout=timeout, **args)  # type: ignore[no-untyped-call]
    try:
        await comm.write({"op": "identity", "reply": True})
        answer = await comm.read()
    finally:
        comm.abort()
    return answer if isinstance(answer, dict) else {}


def probe(address: str, security: Any, timeout: float) -> dict[str, Any]:
    """Ask the scheduler at ``address`` who it is; return its answer within ``timeout``.

    Runs on an event loop of its own in a thread of its own, so that it works from inside
    another event loop too.

    Raises:
        ClusterUnreachableError: no answer in time, a refusal, or no scheduler there.
    """
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(asyncio.run(asyncio.wait_for(
                _identity(address, security, timeout), timeout)))
        except BaseException as exc:  # handed to the caller below
            result.append(exc)

    thread = threading.Thread(target=run, name="just_distribute-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    if not result:
        raise ClusterUnreachableError(
            f"the dask scheduler at {address} did not answer within {timeout}s")
    answer = result[0]
    if isinstance(answer, BaseException):
        if isinstance(answer, (asyncio.TimeoutError, TimeoutError)):
            raise ClusterUnreachableError(
                f"the dask scheduler at {address} did not answer within {timeout}s "
                f"(connect_timeout): is it stopped, or is that port something else (the "
                f"dashboard? another server)?")
        raise ClusterUnreachableError(
            f"cannot reach the dask scheduler at {address} within {timeout}s "
            f"(connect_timeout): {type(answer).__name__}: {answer}") from answer
    if answer.get("type") != "Scheduler":
        raise ClusterUnreachableError(
            f"{address} answered, but it is no dask scheduler (it says it is "
            f"{answer.get('type', 'something else')!r}): give the scheduler's address")
    return dict(answer)


def host_port(address: str) -> tuple[str, int]:
    """The host and port of a checked ``tcp://`` or ``tls://`` address."""
    rest = address.partition("://")[2]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def route_to(address: str) -> str:
    """The local IP address of the interface that reaches ``address`` (no packet is sent)."""
    host, port = host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(info[0][4])
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1" if family == socket.AF_INET else "::1"
