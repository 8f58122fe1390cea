"""Every error the API returns has one shape: ``{"detail": "...", "errors": [{"field", "msg"}]}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from convolens.enrich.names import NamesUnavailable
from convolens.schemas.bounds import FieldError, field_name
from convolens.server.responses import JSONResponse
from convolens.store.db import DatabaseUnavailable

log = logging.getLogger("convolens.server")

RETRY_AFTER_SECONDS = 5


class FieldProblem(BaseModel):
    field: str
    msg: str
    loc: list[str | int] | None = None


class ErrorBody(BaseModel):
    """The one shape of every error response."""

    detail: str
    errors: list[FieldProblem] = []


# Declared on every router, so /openapi.json tells clients the truth (FastAPI's default 422 schema
# describes its own error format, which convolens does not use).
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Malformed JSON or body encoding"),
        (401, "Missing, invalid or revoked token"),
        (403, "The token lacks the scope"),
        (404, "Not found in this project"),
        (413, "Body over a size bound"),
        (422, "A field of the wrong shape or over a bound; each named in errors[]"),
        (429, "Rate limit exceeded; see Retry-After"),
        (503, "Database unavailable; see Retry-After"),
    )
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, errors: Sequence[dict] = (), headers: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers


def query_error(field: str, msg: str) -> ApiError:
    """A 422 for one query parameter, named in the detail and in ``errors``."""
    return ApiError(422, f"{field}: {msg}", [{"field": field, "loc": ["query", field], "msg": msg}])


def validation_errors(exc: ValidationError | RequestValidationError, prefix: Sequence = ()) -> list[dict]:
    errors = []
    for err in exc.errors()[:20]:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        loc = [*prefix, *loc]
        errors.append({"field": field_name(loc), "loc": loc, "msg": err.get("msg", "invalid")})
    return errors


def invalid(errors: list[dict]) -> ApiError:
    fields = ", ".join(e["field"] for e in errors[:5] if e.get("field"))
    first = errors[0]["msg"] if errors else "invalid request"
    return ApiError(422, f"invalid request: {fields}: {first}" if fields else f"invalid request: {first}", errors)


def bound_violation(errors: list[FieldError]) -> ApiError:
    return invalid([e.as_dict() for e in errors[:20]])


def error_response(exc: Exception) -> JSONResponse | None:
    """The response for an exception the API answers in its one error shape; ``None`` for any other
    (a bug: the server's 500). Shared by the exception handlers and the hot routes (server/asgi/fast_path.py),
    which run outside FastAPI's exception middleware."""
    if isinstance(exc, ApiError):
        return JSONResponse({"detail": exc.detail, "errors": exc.errors}, status_code=exc.status, headers=exc.headers)
    if isinstance(exc, RequestValidationError):
        err = invalid(validation_errors(exc))
        return JSONResponse({"detail": err.detail, "errors": err.errors}, status_code=422)
    if isinstance(exc, StarletteHTTPException):
        return JSONResponse(
            {"detail": exc.detail, "errors": []}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )
    if isinstance(exc, NamesUnavailable):
        # Fail closed: storing the text unredacted would break the project's promise; the client keeps it.
        log.error("project asks for name redaction, but %s", exc)
        return JSONResponse(
            {"detail": "name redaction is on for this project but the server lacks its model; retry later",
             "errors": []},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )  # fmt: skip
    if isinstance(exc, DatabaseUnavailable):
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is unavailable; retry later", "errors": []},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return None


def install(app: FastAPI) -> None:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        response = error_response(exc)
        assert response is not None, f"no error response for {type(exc).__name__}"
        return response

    for exc_class in (ApiError, RequestValidationError, StarletteHTTPException, NamesUnavailable, DatabaseUnavailable):
        app.add_exception_handler(exc_class, handle)
