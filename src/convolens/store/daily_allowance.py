"""A project's daily allowance of paid provider work (translations, LLM outcome verdicts): one row per
project and day in a usage table, counting what was taken."""

from __future__ import annotations

from sqlalchemy import Column, Connection, Table, select, update

from convolens.store.dialect import insert_ignore


def cap_from(value: object, maximum: int, default: int) -> int:
    """A daily cap from a project's settings: a whole number from 0 to ``maximum`` (JSON's ``true`` is not
    1), else ``default``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    return default


def reserve(conn: Connection, table: Table, counted: Column, project_pk: int, day: str, wanted: int, cap: int) -> int:
    """Take up to ``wanted`` of the project's ``cap`` for ``day`` (``counted`` is ``table``'s count column);
    returns how many may be sent. Run in a write transaction: the row is locked (PostgreSQL) or the
    database is (SQLite) until it ends, so two workers never both take the last of a day's allowance."""
    if wanted <= 0 or cap <= 0:
        return 0
    conn.execute(
        insert_ignore(conn, table, ["project_pk", "day"]), [{"project_pk": project_pk, "day": day, counted.name: 0}]
    )
    where = (table.c.project_pk == project_pk, table.c.day == day)
    used = conn.execute(select(counted).where(*where).with_for_update()).scalar_one()
    granted = max(0, min(wanted, cap - used))
    if granted:
        conn.execute(update(table).where(*where).values({counted.name: used + granted}))
    return granted


def used(conn: Connection, table: Table, counted: Column, project_pk: int, day: str) -> int:
    where = (table.c.project_pk == project_pk, table.c.day == day)
    return int(conn.execute(select(counted).where(*where)).scalar() or 0)
