"""``convolens eval run TEST_SET``: start a run of a test set on a convolens server, wait for it, print a
summary, write a JUnit file, and exit non-zero below the bar — the step a CI job runs.

It is a client of the HTTP API (``CONVOLENS_URL``, ``CONVOLENS_TOKEN``: a token with the ``ingest`` and
``read`` scopes), so it runs anywhere the server is reachable. The pass rate is the share of test case x
iteration items whose evaluations are all ``positive`` (an item without a response, or with one
``negative``, ``partially_passed`` or ``inconclusive`` verdict, does not pass).

Exit codes: 0 at or above ``--fail-under``; 1 below it; 2 when the run could not be started or read.
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, TextIO

import httpx


class CiError(Exception):
    """The run could not be started or read (exit code 2)."""


@dataclass(frozen=True)
class Outcome:
    run: dict[str, Any]
    passed: int
    total: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 1.0


def item_passed(result: dict[str, Any]) -> bool:
    return not result.get("error") and all(e.get("outcome") == "positive" for e in result.get("evaluations", []))


def _checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text[:200]
        raise CiError(f"{what}: HTTP {response.status_code} {detail}")
    return response.json()


def run_and_wait(
    client: httpx.Client,
    test_set: str,
    version: int | None,
    iterations: int,
    timeout: float,
    poll_seconds: float = 1.0,
    out: TextIO = sys.stderr,
) -> Outcome:
    if version is None:
        found = _checked(client.get(f"/api/v1/test_sets/{test_set}"), f"test set {test_set!r}")
        version = int(found["version"])
    started = _checked(
        client.post(
            "/api/v1/evaluations/run", json={"test_set_name": test_set, "version": version, "iterations": iterations}
        ),
        "starting the run",
    )
    run_id = started["data"]["run_id"]
    print(f"run {run_id}: {test_set} version {version}, {iterations} iteration(s)", file=out)
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        run = _checked(client.get(f"/api/v1/evaluations/run/{run_id}"), "reading the run")
        progress = (run["progress"]["completed"], run["progress"]["completed"] + run["progress"]["pending"])
        if progress != shown:
            print(f"  {run['status']}: {progress[0]}/{progress[1]}", file=out)
            shown = progress
        if run["status"] in ("completed", "errored"):
            break
        if time.monotonic() > deadline:
            raise CiError(f"the run did not finish within {timeout:.0f} s ({progress[0]}/{progress[1]} done)")
        time.sleep(poll_seconds)
    results = run.get("results", [])
    return Outcome(run, sum(item_passed(r) for r in results), len(results))


def junit(outcome: Outcome) -> bytes:
    """The run as a JUnit XML report: a test case per test case x iteration."""
    details = outcome.run["details"]
    suite_name = f"{details['test_set_name']} v{details['version']}"
    suite = ET.Element("testsuite", name=suite_name, tests=str(outcome.total), failures="0", errors="0", skipped="0")
    failures = errors = 0
    for result in outcome.run.get("results", []):
        case = ET.SubElement(
            suite,
            "testcase",
            classname=details["test_set_name"],
            name=f"{result['test_case']['name']} [iteration {result.get('iteration', 1)}]",
        )
        verdicts = [
            f"{e['evaluator_name']}: {e['outcome']} — "
            + "; ".join(r.get("reason", "") for r in (e.get("reasoning") or {}).get("result", []))
            for e in result.get("evaluations", [])
        ]
        if result.get("error"):
            errors += 1
            ET.SubElement(case, "error", message=result["error"][:500]).text = "\n".join(verdicts)
        elif not item_passed(result):
            failures += 1
            failed = [e["evaluator_name"] for e in result["evaluations"] if e["outcome"] != "positive"]
            ET.SubElement(case, "failure", message=f"not passed: {', '.join(failed)}").text = "\n".join(verdicts)
        output = "".join(m.get("message", "") for m in result["test_case"].get("output", []))
        ET.SubElement(case, "system-out").text = output[:10_000]
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="utf-8", xml_declaration=True)


def main(
    url: str,
    token: str,
    test_set: str,
    version: int | None,
    iterations: int,
    fail_under: float,
    junit_path: str | None,
    timeout: float,
    verify: bool = True,
    out: TextIO = sys.stderr,
) -> int:
    if not token:
        print("convolens eval run: no token (set CONVOLENS_TOKEN or pass --token)", file=out)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30, verify=verify) as client:
            outcome = run_and_wait(client, test_set, version, iterations, timeout, out=out)
    except (CiError, httpx.HTTPError) as exc:
        print(f"convolens eval run: {exc}", file=out)
        return 2
    for result in outcome.run.get("results", []):
        if not item_passed(result):
            outcomes = ", ".join(f"{e['evaluator_name']}={e['outcome']}" for e in result.get("evaluations", []))
            why = result.get("error") or outcomes
            print(f"  FAILED {result['test_case']['name']} [iteration {result.get('iteration')}]: {why}", file=out)
    if junit_path:
        with open(junit_path, "wb") as handle:
            handle.write(junit(outcome))
    verdict = "passed" if outcome.pass_rate >= fail_under else "FAILED"
    rate = f"{outcome.pass_rate:.1%}; the bar is {fail_under:.1%}"
    print(f"{verdict}: {outcome.passed}/{outcome.total} items passed ({rate})", file=out)
    return 0 if outcome.pass_rate >= fail_under else 1
