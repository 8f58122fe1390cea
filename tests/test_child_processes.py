"""``convolens serve`` runs its enrichment worker in a child process (worker/process.py), started and
stopped with the server, and scrubs requests of the heavy lane in another (server/scrubbing_process.py):
messages are enriched by the child, not by the API process, and no process is left behind when the
server stops, or when it is killed without stopping anything."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from conftest import ServeProcess
from convolens.enrich.pii import EMAIL_DUMMY, scrub_text
from convolens.server.errors import ApiError
from convolens.server.scrubbing_process import ScrubbingProcess
from convolens.store.tables import message
from convolens.worker.process import NICE

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads Linux's /proc")


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _running(pid: int) -> bool:
    """Still a live process (a zombie waiting for its parent is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_until_gone(pids: list[int], seconds: float = 120) -> list[int]:
    """The pids still running after ``seconds`` (a worker in the middle of a batch finishes it first)."""
    deadline = time.monotonic() + seconds
    while (left := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _log_a_conversation(server: ServeProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/api/v1/log/conversation",
        headers={"Authorization": f"Bearer {server.token}"},
        json={"conversation": {"messages": [
            {"role": "user", "message": "The invoice shows the wrong billing address."},
            {"role": "assistant", "message": "You can change it under Settings, then Billing."},
        ]}},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 201


def _log_a_heavy_conversation(server: ServeProcess) -> None:
    """More text than HEAVY_TEXT_CHARS: scrubbed in the scrubbing child, which starts with it."""
    response = httpx.post(
        f"{server.base_url}/api/v1/log/conversation",
        headers={"Authorization": f"Bearer {server.token}"},
        json={"conversation": {"messages": [{"role": "user", "message": "word " * 14_000}] * 2}},
        timeout=60,
    )
    assert response.status_code == 201


def _pending(server: ServeProcess) -> int:
    db = server.db()
    try:
        with db.reader() as conn:
            return conn.execute(
                select(func.count()).select_from(message).where(message.c.enriched_version.is_(None))
            ).scalar_one()
    finally:
        db.dispose()


def test_the_child_enriches_and_is_gone_once_the_server_stops(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    server = ServeProcess(tmp_path, log_level="info", log_path=log)
    try:
        server.start()  # inside: a server that starts too slowly is stopped too
        assert server.process is not None
        _log_a_conversation(server)
        _log_a_heavy_conversation(server)
        children = _children(server.process.pid)
        assert len(children) >= 3  # the worker, the scrubbing child, multiprocessing's resource tracker
        deadline = time.monotonic() + 120
        while _pending(server):
            assert time.monotonic() < deadline, "the embedded worker did not enrich the conversation"
            time.sleep(0.2)
        # The worker names itself host:pid:suffix when it starts: its pid is a child's, not the server's.
        started = re.findall(r"worker [^:\s]+:(\d+):\w+ started", log.read_text())
        assert len(started) == 1
        assert int(started[0]) in children and int(started[0]) != server.process.pid
        # Its transactions (its own thread) at the server's priority, its enrichment on a thread below it:
        # a niced thread holding SQLite's write lock was preempted mid-transaction (worker/low_priority.py).
        child, server_nice = int(started[0]), _nice(server.process.pid)
        threads = {int(t.name): _nice(child, int(t.name)) for t in Path(f"/proc/{child}/task").iterdir()}
        assert threads[child] == server_nice
        assert server_nice + NICE in threads.values()
    finally:
        server.stop()
    assert _wait_until_gone(children) == []
    assert "stopped after 4 messages" in log.read_text()


def test_a_server_stop_in_the_middle_of_a_backlog_interrupts_the_worker_and_hands_its_claim_back(
    tmp_path: Path,
) -> None:
    """The server stopped its worker child by waiting up to STOP_SECONDS for its batch, then killing it:
    on a busy machine a batch at low priority outlasted that, so stops took 10 s and the batch waited out
    its lease. Stopped right after its first batch, with more to do, the child ends without being killed
    and leaves no message leased. (Whether a batch outlasts the wait depends on the machine's load:
    test_enrichment.py interrupts a step that never ends by itself; this test holds the wiring — the stop
    reaches the step through the child's pipe, and the child's exit does not wait for the step's thread.)"""
    log = tmp_path / "serve.log"
    server = ServeProcess(tmp_path, log_level="debug", log_path=log)
    try:
        server.start()
        response = httpx.post(
            f"{server.base_url}/api/v1/ingest",
            headers={"Authorization": f"Bearer {server.token}"},
            json={"events": [
                {"type": "message", "conversation_id": f"c{i}", "role": "user",
                 "content": f"Ticket {i}: the export to PDF drops every image after page two. " * 8}
                for i in range(320)
            ]},
            timeout=60,
        )  # fmt: skip
        assert response.status_code == 202
        deadline = time.monotonic() + 120
        while not re.search(r"worker \S+: enriched \d+ messages", log.read_text()):
            assert time.monotonic() < deadline, "the embedded worker enriched nothing"
            time.sleep(0.05)
    finally:
        server.stop()
    assert "did not stop within" not in log.read_text()
    assert _pending(server) > 0, "the backlog was already enriched: nothing was interrupted"
    db = server.db()
    try:
        with db.reader() as conn:
            leased = conn.execute(
                select(func.count()).select_from(message).where(message.c.lease_owner.is_not(None))
            ).scalar_one()
    finally:
        db.dispose()
    assert leased == 0


def _nice(pid: int, tid: int | None = None) -> int:
    stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of stat, the 17th after the name


def test_the_child_stops_when_the_server_is_killed(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path)
    try:
        server.start()
        assert server.process is not None
        _log_a_heavy_conversation(server)
        children = _children(server.process.pid)
        assert len(children) >= 3, "no child process for the embedded worker or the scrubbing"
    except BaseException:
        server.stop()
        raise
    server.kill()  # SIGKILL: the server's shutdown never runs, so nobody stops the child
    assert _wait_until_gone(children) == []


def test_several_api_processes_share_one_child_and_leave_nothing_behind(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    server = ServeProcess(tmp_path, serve_args=["--workers", "2"], log_level="info", log_path=log)
    try:
        server.start()  # inside: a server that starts too slowly is stopped too
        assert server.process is not None
        _log_a_conversation(server)
        deadline = time.monotonic() + 120
        while _pending(server):
            assert time.monotonic() < deadline, "the embedded worker did not enrich the conversation"
            time.sleep(0.2)
        descendants = _children(server.process.pid)
        descendants += [grandchild for child in descendants for grandchild in _children(child)]
        assert len(re.findall(r"worker \S+ started", log.read_text())) == 1  # not one per API process
    finally:
        server.stop()
    assert _wait_until_gone(descendants) == []


def _exit_at_once(_value: str) -> str:
    os._exit(1)  # as the kernel's OOM killer would end the child


def test_a_scrubbing_child_that_dies_fails_the_request_closed_and_is_replaced() -> None:
    child = ScrubbingProcess()
    try:
        assert child.call(scrub_text, "mail ann.lee@example.com") == f"mail {EMAIL_DUMMY}"
        with pytest.raises(ApiError) as refused:
            child.call(_exit_at_once, "mail ann.lee@example.com")
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "5"}
        assert child.call(scrub_text, "or ann.lee@example.org") == f"or {EMAIL_DUMMY}"  # a new child
    finally:
        child.stop()


def test_a_worker_child_that_dies_is_started_again(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    server = ServeProcess(tmp_path, log_level="info", log_path=log)
    try:
        server.start()
        assert server.process is not None
        deadline = time.monotonic() + 60
        while not (started := re.findall(r"worker [^:\s]+:(\d+):\w+ started", log.read_text())):
            assert time.monotonic() < deadline, "the embedded worker did not start"
            time.sleep(0.2)
        os.kill(int(started[0]), 9)  # as the kernel's out-of-memory killer would
        deadline = time.monotonic() + 60
        while len(started := re.findall(r"worker [^:\s]+:(\d+):\w+ started", log.read_text())) < 2:
            assert time.monotonic() < deadline, "the dead worker was not started again"
            time.sleep(0.2)
        assert started[1] != started[0] and int(started[1]) in _children(server.process.pid)
        assert "enrichment worker exited (code -9)" in log.read_text()
        _log_a_conversation(server)  # enriched by the new child
        deadline = time.monotonic() + 120
        while _pending(server):
            assert time.monotonic() < deadline, "the restarted worker did not enrich the conversation"
            time.sleep(0.2)
    finally:
        server.stop()


def test_ctrl_c_stops_the_demo_quietly(tmp_path: Path) -> None:
    """Ctrl-C on `make run`'s demo: a clean shutdown, the shell's code for SIGINT, no traceback (which
    reads like a crash: uvicorn raises the signal again after shutting down), and no child left."""
    import signal

    from conftest import CLI, free_port

    port = free_port()
    env = {**os.environ, "CONVOLENS_HOME": str(tmp_path / "home")}
    demo = subprocess.Popen(
        # Enough conversations that Ctrl-C, sent as soon as the server answers, usually lands while the
        # demo is still seeding: the stop must be as quiet then as after it.
        [*CLI, "demo", "--port", str(port), "--conversations", "300"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert demo.poll() is None and time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.3)
        children = _children(demo.pid)
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, output
    assert "Traceback" not in output
    assert "did not stop within" not in output  # the worker, seeded mid-batch, is not killed (see below)
    assert _wait_until_gone(children) == []
