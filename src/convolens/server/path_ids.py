"""The type of a row key in a URL (``/settings/tokens/{token_pk}/revoke``): 1 to 2^63-1, the range of
the BIGINT keys on PostgreSQL and of SQLite's INTEGER. Anything outside is a 422 naming the parameter
before it reaches the database, whose driver would otherwise fail on it (a 500)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
