"""Statements handed to the DB-API driver's cursor as they are, for ingest's hot path and the token
look-up every request makes.

SQLAlchemy Core builds and type-processes every parameter of every row in Python; for a batch of 800
messages that was most of the store's time (bench/README.md: 175 ms of a 250 ms batch). Even
``exec_driver_sql`` costs about 70 µs a statement in execution contexts and result wrapping, against
4 µs on the cursor itself, and a one-conversation request runs about ten statements. Here rows are
plain tuples in a fixed column order, written with the cursor's own ``executemany`` (a C loop in
``sqlite3``, pipelined in psycopg) or one multi-row ``INSERT … ON CONFLICT … RETURNING``, inside the
transaction SQLAlchemy opened on the same connection. Only the encodings SQLAlchemy would have applied
are reproduced (timestamps in its SQLite text format, JSON as text), and driver errors are wrapped in
SQLAlchemy's exceptions so that callers see the same ones (``store/db`` maps them to 503s). Everything
else in the store keeps using SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError


class Statements:
    """The few spellings that differ between the two drivers, for one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgresql = conn.dialect.name == "postgresql"
        self.mark = "%s" if self.postgresql else "?"
        self.least = "least" if self.postgresql else "min"
        self.greatest = "greatest" if self.postgresql else "max"
        self._cursor: Any = None

    def _cursor_for(self) -> Any:
        if self._cursor is None:
            driver = self.conn.connection.driver_connection
            if self.postgresql:
                from psycopg import RawCursor

                self._cursor = RawCursor(driver)  # type: ignore[arg-type]
            else:
                self._cursor = driver.cursor()  # type: ignore[union-attr]
        return self._cursor

    def _for_driver(self, sql: str) -> str:
        """PostgreSQL: the statement with numbered placeholders (``$1``…), which psycopg's ``RawCursor``
        sends as they are. Its usual cursor parses ``%s`` with a regular expression and caches the result
        only for statements of at most 50 parameters, so every multi-row insert was parsed anew: about a
        fifth of a group's time in the client (bench/README.md)."""
        return _numbered(sql) if self.postgresql else sql

    def execute(self, sql: str, params: Sequence[Any] = (), *, plan_each_time: bool = False) -> list[tuple]:
        """Run one statement; its rows (none for a statement that returns none).

        ``plan_each_time``: never as a prepared statement on PostgreSQL, so never with a generic plan.
        psycopg prepares a statement run five times on a connection, and PostgreSQL may then plan it once
        for any parameters; planned while a table was small, such a plan outlives the table's growth (the
        look-up of a batch's message ids became a ~1 s scan, bench/README.md). For look-ups whose best
        plan depends on the data; statements that write fixed rows are better prepared."""
        cursor = self._cursor_for()
        try:
            if plan_each_time and self.postgresql:
                cursor.execute(self._for_driver(sql), params, prepare=False)
            else:
                cursor.execute(self._for_driver(sql), params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise self._wrapped(sql, exc) from exc

    def _wrapped(self, sql: str, exc: Exception) -> BaseException:
        return DBAPIError.instance(sql, None, exc, self.conn.dialect.loaded_dbapi.Error, hide_parameters=True)

    def timestamp(self, value: datetime | None) -> Any:
        """SQLite has no datetime type: SQLAlchemy stores ``YYYY-MM-DD HH:MM:SS.ffffff`` (always with
        microseconds, so stored values compare as strings). psycopg takes datetimes as they are."""
        if value is None or self.postgresql:
            return value
        return value.isoformat(" ", "microseconds")

    def read_timestamp(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value)

    @staticmethod
    def json(value: Any) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    @staticmethod
    def read_json(value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    def row_marks(self, width: int) -> str:
        return "(" + ", ".join([self.mark] * width) + ")"

    def executemany(self, sql: str, rows: Sequence[tuple]) -> None:
        if not rows:
            return
        if len(rows) == 1:  # psycopg's executemany enters and leaves a pipeline even for one row
            self.execute(sql, rows[0])
            return
        try:
            self._cursor_for().executemany(self._for_driver(sql), rows)
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise self._wrapped(sql, exc) from exc

    def execute_together(self, statements: Sequence[tuple[str, Sequence[Any], bool]]) -> list[list[tuple]]:
        """Run ``(sql, params, plan_each_time)`` statements in order; the rows of each. On PostgreSQL they
        go as one psycopg pipeline: one round trip for all, where each costs the client and the server
        system calls and a wake-up (bench/README.md). SQLite runs them one after another."""
        if not self.postgresql:
            return [self.execute(sql, params, plan_each_time=plan) for sql, params, plan in statements]
        from psycopg import RawCursor

        driver = self.conn.connection.driver_connection
        cursors = []
        sql = ""
        try:
            with driver.pipeline():  # type: ignore[union-attr]
                for sql, params, plan in statements:
                    cursor = RawCursor(driver)  # type: ignore[arg-type]
                    cursor.execute(_numbered(sql), params, prepare=False if plan else None)
                    cursors.append(cursor)
            return [[tuple(row) for row in c.fetchall()] if c.description else [] for c in cursors]
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise self._wrapped(sql, exc) from exc

    def copy_in(self, table: str, columns: str, types: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """PostgreSQL only: the rows through ``COPY table (columns) FROM STDIN`` in binary format, each
        column as the PostgreSQL type in ``types`` (psycopg's binary dumpers: a JSON column goes as
        ``text``, the JSON text itself). psycopg formats them in C and sends them in a few large writes;
        ``executemany`` runs one prepared INSERT a row, one ``sendto`` each, and both ends paid ~15 µs
        of CPU a row more; the binary format costs both ends less than the text one (bench/README.md).
        COPY has no ``ON CONFLICT``: for rows that cannot be stored yet (ids just made), where a
        conflict is an error."""
        sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
        try:
            with self._cursor_for().copy(sql) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise self._wrapped(sql, exc) from exc

    def insert_returning(self, head: str, rows: Sequence[tuple], tail: str, chunk: int = 500) -> list[tuple]:
        """``head VALUES (…), (…) tail`` over the rows, ``chunk`` rows a statement; every returned row."""
        out: list[tuple] = []
        if not rows:
            return out
        marks = self.row_marks(len(rows[0]))
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            sql = f"{head} VALUES {', '.join([marks] * len(part))} {tail}"
            params = tuple(value for row in part for value in row)
            out.extend(self.execute(sql, params))
        return out

    def select_by_ids(
        self, columns: str, table: str, project_pk: int, ids: Iterable[str], chunk: int = 500
    ) -> list[tuple]:
        """``columns`` of the ``table`` rows of a project with these external ids, ``chunk`` ids a query.

        PostgreSQL: the ids as one array joined to the table, so that each is one probe of the table's
        ``(project_pk, id)`` unique index whatever the statistics say. As ``id IN (…)``, a table not yet
        analysed (a fresh load; a server with autovacuum off, as this machine's) was read through its
        ``(project_pk, …)`` index instead, every row of the project: 950 ms a batch at a million messages,
        2.5 ms as a join (bench/README.md)."""
        values = list(ids)
        out: list[tuple] = []
        for start in range(0, len(values), chunk):
            part = values[start : start + chunk]
            if self.postgresql:
                sql = (
                    f"SELECT {columns} FROM unnest(%s::text[]) AS wanted(wanted_id)"
                    f" JOIN {table} ON {table}.project_pk = %s AND {table}.id = wanted.wanted_id"
                )
                params: tuple = (part, project_pk)
            else:
                sql = f"SELECT {columns} FROM {table} WHERE project_pk = ? AND id IN ({', '.join('?' * len(part))})"
                params = (project_pk, *part)
            out.extend(self.execute(sql, params, plan_each_time=True))
        return out


@lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """``%s`` placeholders as ``$1``, ``$2``…; the statements here hold no other ``%``."""
    parts = sql.split("%s")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]
