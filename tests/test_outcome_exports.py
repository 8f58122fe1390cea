"""The dashboard's exports carry each conversation's outcome and signals: CSV columns (defused like every
cell) and the JSONL's fields, filtered as the list is."""

from __future__ import annotations

import csv
import io
import json
import uuid

from conftest import Project, RunningServer
from test_outcomes import GAVE_UP, THANKED, read_when_enriched, send
from web_support import add_account, signed_in


def test_exports_carry_outcome_and_signals(server: RunningServer, project: Project) -> None:
    with server.client(project.token) as client:
        send(client, "exp-thanked", THANKED)
        send(client, "exp-gave-up", GAVE_UP)
        read_when_enriched(client, "exp-thanked", 3)
        read_when_enriched(client, "exp-gave-up", 7)
    account = add_account(server.db, f"{uuid.uuid4().hex[:8]}@example.com", project.name, "viewer")
    window = "start=2026-01-01"
    with signed_in(server, account) as web:
        exported = web.get(f"/p/{project.name}/export.csv?{window}")
        assert exported.status_code == 200
        rows = {r["id"]: r for r in csv.DictReader(io.StringIO(exported.text, newline=""))}
        lines = [json.loads(line) for line in web.get(f"/p/{project.name}/export.jsonl?{window}").text.splitlines()]
        only_unresolved = web.get(f"/p/{project.name}/export.csv?{window}&outcome=unresolved&signal=rephrase").text
    assert (rows["exp-thanked"]["outcome"], rows["exp-thanked"]["outcome_signals"]) == ("resolved", "thanks")
    assert rows["exp-gave-up"]["outcome"] == "unresolved"
    assert {"rephrase", "gives_up"} <= set(rows["exp-gave-up"]["outcome_signals"].split("; "))
    by_id = {line["id"]: line for line in lines}
    assert by_id["exp-gave-up"]["outcome"] == "unresolved"
    assert "rephrase" in by_id["exp-gave-up"]["outcome_signals"]
    assert [r["id"] for r in csv.DictReader(io.StringIO(only_unresolved, newline=""))] == ["exp-gave-up"]
