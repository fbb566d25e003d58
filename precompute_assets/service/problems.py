"""Errors as RFC 9457 problem documents (``application/problem+json``) that say what to do.

Routes raise ``Problem``; the handlers here render it, and turn FastAPI's validation errors
(bad parameters: 422) and the store's unavailability (503 with ``Retry-After``) into problems too.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from precompute_assets.core.db import safe_url
from precompute_assets.core.errors import (
    DagsterUnavailableError,
    DatabaseUnavailableError,
    SchemaVersionError,
)

MEDIA_TYPE = "application/problem+json"
TYPES = "https://precompute-assets.dev/problems/"  # a namespace: the documents name the kind
RETRY_AFTER_S = 5


class ProblemDocument(BaseModel):
    """An RFC 9457 problem: what went wrong and what to do, for people and programs."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a URI naming the kind of problem")
    title: str = Field(description="the kind of problem, in words")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="this occurrence, and what to do about it")
    instance: str | None = Field(None, description="the request's path")


class Problem(Exception):
    """Raise to answer with a problem document; ``extensions`` become members of it."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    def response(self, request: Request) -> JSONResponse:
        body = {
            "type": TYPES + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": request.url.path,
            **self.extensions,
        }
        return JSONResponse(body, self.status, self.headers, media_type=MEDIA_TYPE)


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", "Not found", what)


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", "Unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="reports"'}
    )


def unavailable(kind: str, title: str, detail: str) -> Problem:
    return Problem(503, kind, title, detail, {"Retry-After": str(RETRY_AFTER_S)})


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The problem responses of a route, for its OpenAPI description."""
    return {
        status: {"model": ProblemDocument, "content": {MEDIA_TYPE: {}}}
        for status in sorted({*statuses, 422})
    }


def install(app: FastAPI) -> None:
    """Render every error of the app as a problem document."""

    @app.exception_handler(Problem)
    async def problem(request: Request, error: Problem) -> JSONResponse:
        return error.response(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in e['loc'] if part != 'query')}: {e['msg']}"
            for e in error.errors()
        ]
        return Problem(
            422,
            "invalid-parameters",
            "Invalid parameters",
            "; ".join(problems) + ": see /docs for what each parameter takes",
            errors=[{"location": list(e["loc"]), "message": e["msg"]} for e in error.errors()],
        ).response(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = str(error.detail)
        if error.status_code == 404:
            detail = f"no such path {request.url.path!r}: see /docs for the API"
        return Problem(
            error.status_code, "http-error", detail, detail, dict(error.headers or {})
        ).response(request)

    @app.exception_handler(DatabaseUnavailableError)
    async def store_down(request: Request, error: DatabaseUnavailableError) -> JSONResponse:
        return unavailable(
            "store-unavailable",
            "Report store unavailable",
            f"{safe_url(str(error))}; retry later",
        ).response(request)

    @app.exception_handler(SchemaVersionError)
    async def old_store(request: Request, error: SchemaVersionError) -> JSONResponse:
        return unavailable("store-schema", "Report store needs migrating", str(error)).response(
            request
        )

    @app.exception_handler(DagsterUnavailableError)
    async def dagster_down(request: Request, error: DagsterUnavailableError) -> JSONResponse:
        return unavailable(
            "dagster-unavailable",
            "Refreshes unavailable",
            f"{error}; reports can still be read",
        ).response(request)
