"""The dashboard's CSV export defuses every cell a spreadsheet would run as a formula, not only the first
message's: ids, user ids, tenants, topic names and metadata come from ingested data too."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid

from conftest import RunningServer, make_project
from web_support import add_account, signed_in

# OWASP's CSV injection list: what a spreadsheet may take for the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PAYLOAD = 'HYPERLINK("http://evil.example","x")'


def test_every_cell_of_the_csv_export_is_defused(sqlite_server: RunningServer) -> None:
    project = make_project(sqlite_server.db, "csv")
    with sqlite_server.client(project.admin_token) as client:
        topic = client.post("/api/v1/topics", json={"name": f"={PAYLOAD}", "kind": "keyword", "keywords": ["refund"]})
        assert topic.status_code == 201, topic.text
        sent = {}
        for i, start in enumerate(FORMULA_STARTS):
            value = f"{start}{PAYLOAD}{i}"
            ident = value if value.isprintable() else f"c{i}"  # ids may not hold control characters
            sent[ident] = value
            events = [
                {"type": "conversation", "id": ident, "user_id": ident, "tenant_id": ident,
                 "metadata": {"plan": value}},
                {"type": "message", "conversation_id": ident, "id": f"m{i}", "role": "user",
                 "content": f"{value} refund"},
            ]  # fmt: skip
            response = client.post("/api/v1/ingest", json={"events": events})
            assert response.status_code in (200, 201, 202), response.text
        deadline = time.monotonic() + 60  # the embedded worker tags the messages with the topic
        while any(not c["topics"] for c in client.get("/api/v1/conversations").json()["conversations"]):
            assert time.monotonic() < deadline, "the worker did not tag the conversations"
            time.sleep(0.2)
    account = add_account(sqlite_server.db, f"{uuid.uuid4().hex[:8]}@example.com", project.name, "viewer")
    with signed_in(sqlite_server, account) as browser:
        export = browser.get(f"/p/{project.name}/export.csv")
    assert export.status_code == 200
    header, *rows = list(csv.reader(io.StringIO(export.text, newline="")))
    assert len(rows) == len(FORMULA_STARTS)
    for row in rows:
        assert [c for c in row if c.startswith(FORMULA_STARTS)] == [], row
        cells = dict(zip(header, row, strict=True))
        ident = cells["id"].removeprefix("'")
        value = sent[ident]
        for column in ("id", "user_id", "tenant_id"):
            assert cells[column] == _defused(ident), column
        assert cells["topics"] == f"'={PAYLOAD}"
        assert cells["first_user_message"] == f"'{value} refund"
        assert json.loads(cells["metadata"]) == {"plan": value}  # JSON: starts with {


def _defused(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text
