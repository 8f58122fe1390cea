"""What routes get from the app: the database and the limits, set once by the app factory."""

from __future__ import annotations

from fastapi import Request

from convolens.config import Limits
from convolens.store.db import Database


def database(request: Request) -> Database:
    return request.app.state.db


def limits(request: Request) -> Limits:
    return request.app.state.settings.limits


def count_ingested(request: Request, created_messages: int) -> None:
    request.app.state.metrics.ingested_messages.inc(created_messages)
