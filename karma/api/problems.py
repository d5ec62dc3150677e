"""Errors as RFC 9457 problem details (`application/problem+json`), one shape for all."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from karma.errors import (
    ActionNotFoundError,
    ActionUnreadableError,
    FieldError,
    LedgerUnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Request too large",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}


class Problem(Exception):
    """Raised by a route: answered as a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers


def problem_response(
    status: int,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"field": e.field, "reason": e.reason} for e in errors]
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}


AUTH_CODES = (401, 403, 429)  # no key or a bad one, a missing scope, over the key's rate


def problems(*codes: int, auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problem documents a route answers with (and those of
    the API keys' checks, unless `auth` is False)."""
    return {
        code: {"description": TITLES[code], "content": {PROBLEM: {"schema": PROBLEM_SCHEMA}}}
        for code in sorted({*codes, *(AUTH_CODES if auth else ())})
    }


def _location(loc: tuple[Any, ...]) -> str:
    """`("body", "params", "x")` → `params.x`; query and header names as they are."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return problem_response(422, str(exc), exc.errors)

    @app.exception_handler(ActionNotFoundError)
    async def _not_found(request: Request, exc: ActionNotFoundError) -> JSONResponse:
        return problem_response(404, str(exc))

    @app.exception_handler(ActionUnreadableError)
    @app.exception_handler(LedgerUnavailableError)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(503, str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(KafkaError)
    async def _kafka(request: Request, exc: KafkaError) -> JSONResponse:
        return problem_response(503, f"Kafka: {exc}", headers={"Retry-After": "5"})

    @app.exception_handler(RPCError)
    async def _temporal(request: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return problem_response(503, f"Temporal: {exc.message}", headers={"Retry-After": "5"})
        if exc.status == RPCStatusCode.FAILED_PRECONDITION:
            # e.g. a workflow that closed before it ever ran cannot answer a query
            return problem_response(409, f"Temporal: {exc.message}")
        log.error("%s %s: Temporal answered %r", request.method, request.url.path, exc)
        return problem_response(500, f"Temporal: {exc.message}")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(field=_location(tuple(e.get("loc", ()))), reason=str(e.get("msg", "")))
            for e in exc.errors()
        ]
        return problem_response(422, "; ".join(str(e) for e in errors), errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return problem_response(500, f"unexpected error: {type(exc).__name__}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail))
