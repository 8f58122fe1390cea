"""``convolens serve --workers N`` spreads connections over its API processes (server/listeners.py).

With uvicorn's one shared listening socket, keep-alive connections that arrived together all went to
one process. These tests look at the kernel's own tables (``/proc``) to see which process holds the
server side of each connection, so they run where ``/proc/net/tcp`` exists (Linux, as in CI).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CLI, ServeProcess
from convolens.server import listeners

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")

_LISTEN, _ESTABLISHED = "0A", "01"


def _tcp_sockets(port: int) -> list[tuple[str, int, int]]:
    """(state, remote port, inode) of every IPv4 socket whose local port is ``port``."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port:
            rows.append((fields[3], int(fields[2].rsplit(":", 1)[1], 16), int(fields[9])))
    return rows


def _socket_owner(pids: list[str]) -> dict[int, str]:
    """Socket inode -> the process (of ``pids``) that has it open."""
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[int(target[8:-1])] = pid
    return owners


def test_keep_alive_connections_that_arrive_together_reach_both_api_processes(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, serve_args=["--workers", "2"], extra_env={"CONVOLENS_EMBEDDED_WORKER": "0"})
    server.start()
    connections: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while sum(state == _LISTEN for state, _, _ in _tcp_sockets(server.port)) < 2:
            assert time.monotonic() < deadline, "the two API processes did not both listen"
            time.sleep(0.1)
        # Sixteen connections at once, each answered before any is closed, as a client pool would.
        connections = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(16)]
        for conn in connections:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for conn in connections:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        assert server.process is not None
        api_processes = subprocess.run(
            ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True
        ).stdout.split()
        owners = _socket_owner(api_processes)
        client_ports = {conn.getsockname()[1] for conn in connections}
        served_by = [
            owners.get(inode)
            for state, remote_port, inode in _tcp_sockets(server.port)
            if state == _ESTABLISHED and remote_port in client_ports
        ]
        assert len(served_by) == 16 and None not in served_by
        # Linux spreads connections by their addresses: all 16 in one of 2 queues has odds of 1 in 32,768.
        assert len(set(served_by)) == 2, f"connections per process: {sorted(served_by)}"
    finally:
        for conn in connections:
            conn.close()
        server.stop()


def test_a_port_in_use_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            listeners.for_processes("127.0.0.1", port)
        server = ServeProcess(tmp_path)
        result = subprocess.run(
            [*CLI, "serve", "--port", str(port), "--workers", "2"],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
