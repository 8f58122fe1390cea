"""``convolens eval run … --fail-under … --junit …`` against a live server: exit 1 on a failing set, 0 on
a passing one, 2 when the run cannot be had; its JUnit file parses."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from conftest import CLI, Project, RunningServer


def _upload(api: httpx.Client, name: str, responses: list[str]) -> None:
    cases = [
        {"name": f"greeting {i}", "messages": [{"role": "user", "message": "Say hello"}],
         "pregenerated_response": text}
        for i, text in enumerate(responses)
    ]  # fmt: skip
    evaluators = [{"evaluator": "golden_response", "options": {"golden_response": "Hello!", "punctuation": "agnostic"}}]
    found = api.post("/api/v1/test_sets", json={"name": name, "test_cases": cases, "evaluators": evaluators})
    assert found.status_code == 201, found.text


def _eval_run(server: RunningServer, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVOLENS_URL": server.base_url, "CONVOLENS_TOKEN": token}
    return subprocess.run([*CLI, "eval", "run", *args], env=env, capture_output=True, text=True, timeout=120)


def test_eval_run_exits_by_the_bar_and_writes_junit(
    server: RunningServer, project: Project, api: httpx.Client, tmp_path: Path
) -> None:
    _upload(api, "greetings", ["Hello", "hello!", "Hello!", "Goodbye", "Hello."])  # 3 of 5 pass
    report = tmp_path / "results.xml"
    failing = _eval_run(server, project.token, "greetings", "--fail-under", "0.9", "--junit", str(report))
    assert failing.returncode == 1, failing.stderr
    assert "FAILED: 3/5 items passed (60.0%; the bar is 90.0%)" in failing.stderr
    assert "FAILED greeting 1 [iteration 1]: golden_response=negative" in failing.stderr
    suite = ET.parse(report).getroot()
    assert (suite.tag, suite.get("name"), suite.get("tests"), suite.get("failures")) == (
        "testsuite", "greetings v1", "5", "2",
    )  # fmt: skip
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["greeting 1 [iteration 1]", "greeting 3 [iteration 1]"]
    assert suite.find("testcase/failure").text.startswith("golden_response: negative — the response differs")

    passing = _eval_run(server, project.token, "greetings", "--fail-under", "0.6", "--iterations", "2")
    assert passing.returncode == 0, passing.stderr
    assert "passed: 6/10 items passed (60.0%; the bar is 60.0%)" in passing.stderr

    _upload(api, "all-good", ["Hello!", "Hello"])
    assert _eval_run(server, project.token, "all-good").returncode == 0  # default bar: every item passes


def test_eval_run_exits_2_when_there_is_no_run(server: RunningServer, project: Project) -> None:
    missing = _eval_run(server, project.token, "never-uploaded")
    assert missing.returncode == 2 and "HTTP 404" in missing.stderr
    assert _eval_run(server, "", "greetings").returncode == 2
    assert _eval_run(server, project.token, "greetings", "--fail-under", "90").returncode == 2
