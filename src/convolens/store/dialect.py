"""The few SQL constructs that differ between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Connection, Table, func, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

Period = Literal["day", "week", "month"]


def insert_ignore(conn: Connection, table: Table, conflict_columns: list[str]):  # type: ignore[no-untyped-def]
    """``INSERT … ON CONFLICT (cols) DO NOTHING`` for the connection's backend."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)


def greatest(conn: Connection, a: ColumnElement, b: object) -> ColumnElement:
    return func.greatest(a, b) if conn.dialect.name == "postgresql" else func.max(a, b)


def least(conn: Connection, a: ColumnElement, b: object) -> ColumnElement:
    return func.least(a, b) if conn.dialect.name == "postgresql" else func.min(a, b)


def bucket(conn: Connection, column: ColumnElement, period: Period) -> ColumnElement:
    """The start date (``YYYY-MM-DD``) of the day, ISO week (Monday) or month a timestamp falls in."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.date_trunc(literal(period), column), "YYYY-MM-DD")
    if period == "day":
        return func.strftime("%Y-%m-%d", column)
    if period == "week":
        return func.date(column, "-6 days", "weekday 1")
    return func.strftime("%Y-%m-01", column)


def plus_days(conn: Connection, column: ColumnElement, days: int) -> ColumnElement:
    """``column`` + ``days`` days, comparable with stored timestamps on either backend."""
    if conn.dialect.name == "postgresql":
        return column + func.make_interval(0, 0, 0, days)
    return func.strftime("%Y-%m-%d %H:%M:%f", column, f"+{int(days)} days")
