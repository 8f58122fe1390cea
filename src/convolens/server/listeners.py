"""The listening sockets of ``convolens serve --workers N``: one per API process, on the same port.

uvicorn's supervisor shares one listening socket between its processes, and an event loop that wakes
on it accepts every connection waiting there. Keep-alive clients that connect at about the same time
(a load balancer's pool, a benchmark's connections) all landed in one process while the other idled:
py-spy saw one API process at 74% CPU and the other at 12% during a native ingest run. With
``SO_REUSEPORT`` each process has an accept queue of its own and Linux spreads new connections over
them by their addresses. Elsewhere (where ``SO_REUSEPORT`` does not balance) the shared socket stays.
"""

from __future__ import annotations

import socket
import sys

REUSE_PORT_BALANCES = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _own_listener(host: str, port: int) -> list[socket.socket]:
    return [bind(host, port, reuse_port=True)]


class PerProcessListeners(list):
    """What the supervisor hands each API process as its sockets: empty here, and unpickled in the
    process (uvicorn starts them with multiprocessing's spawn) as a new socket bound with
    ``SO_REUSEPORT``, so every process, a restarted one too, listens on a socket of its own."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host, self.port = host, port

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_own_listener, (self.host, self.port))


def for_processes(host: str, port: int) -> tuple[list[socket.socket], socket.socket]:
    """The ``sockets`` argument for uvicorn's ``Multiprocess``, and a socket the supervisor keeps bound
    (not listening) so that the port is taken, and a port already in use fails here, at once, rather
    than in every API process it starts."""
    if not REUSE_PORT_BALANCES:
        shared = bind(host, port, reuse_port=False)
        return [shared], shared
    held = bind(host, port, reuse_port=True)
    return PerProcessListeners(host, port), held
