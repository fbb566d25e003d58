"""``GET /v1/tools/{tool}/scopes/{scope}/report``: one report, its header, staleness and rows.

The cheap path: a request costs the key (cached for ``PRECOMPUTE_SERVICE_KEY_CACHE_S``) and one
indexed lookup (the scope's generation and tenant), made on the event loop; a known generation
answers 304 or its bytes encoded on first use (``reports.py``). A scope of another tenant is a 404
like a scope that does not exist.

The route skips FastAPI's per-request dependency solving and parameter validation, which cost
more than the rest of a read (profiled under load): ``ReportRoute`` authenticates the caller and
validates the query with the endpoint's own model, once per distinct query string. The endpoint's
signature still describes the route in the OpenAPI document.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import QueryParams

from precompute_assets.contract import ReportTool
from precompute_assets.core.window import window_start
from precompute_assets.service.dependencies import Caller, ServiceState, authenticate, tool_named
from precompute_assets.service.encoding import json_bytes, staleness_tail
from precompute_assets.service.metrics import report_served
from precompute_assets.service.models import ReportPage
from precompute_assets.service.problems import Problem, documented, not_found
from precompute_assets.service.reports import Cursor, CursorError, Generation, View
from precompute_assets.service.store import ScopeFacts
from precompute_assets.service.urls import refresh_path, report_path, with_query

Sort = Literal["entity_id", "usage_count", "-usage_count", "last_used", "-last_used"]
CACHE_CONTROL = "private, no-cache"  # any cache may keep it, and must revalidate (ETag) first
VARY = "Accept, Accept-Encoding, Authorization"


class ReportQuery(BaseModel):
    """The report route's query parameters."""

    unused: bool = Field(False, description="only the unused entities")
    sort: Sort = Field("entity_id", description="order of the rows; `-` for descending")
    limit: int = Field(1_000, ge=1, le=10_000, description="rows per page")
    cursor: str | None = Field(None, description="from a page's `next`")


class ReportRoute(APIRoute):
    """The report route: the caller and the query resolved here, the endpoint called with them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handle(request: Request) -> Response:
            caller = authenticate(request)  # before the query: no key is a 401, not a 422
            query = _query(request.scope["query_string"])
            path = request.path_params
            return await read_report(request, caller, path["tool"], path["scope"], query)

        return handle


router = APIRouter(prefix="/v1", tags=["reports"], route_class=ReportRoute)


@router.get(
    "/tools/{tool}/scopes/{scope}/report",
    response_model=ReportPage,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        304: {"description": "the report has not changed since the ETag given"},
        **documented(401, 404, 406, 409, 503),
    },
)
async def read_report(
    request: Request,
    caller: Caller,
    tool: Annotated[str, Path(description="a tool's name")],
    scope: Annotated[str, Path(description="a scope of the tool")],
    query: Annotated[ReportQuery, Query()],
) -> Response:
    """A stored report with how stale it is. `Accept: text/csv` gives its rows as CSV (the next
    page in a `Link` header). The ETag names the report's generation: `If-None-Match` with it
    answers 304 until the report is recomputed."""
    state: ServiceState = request.app.state.service
    found = tool_named(state, tool)
    facts = state.store.facts(found.name, scope)
    if facts is None or not caller.sees(facts.tenant):
        raise not_found(f"no scope {scope!r} of tool {found.name!r}")
    if facts.generation is None:
        raise Problem(
            404,
            "no-report",
            "No report yet",
            f"no {found.name} report for {scope!r} yet: POST {refresh_path(found.name, scope)} "
            "to compute it",
            refresh=refresh_path(found.name, scope),
        )
    sort, unused, limit = query.sort, query.unused, query.limit
    pinned = _cursor(query.cursor, sort, unused)
    media = _media(request.headers.get("accept", "*/*"))
    report = await _generation(state, found, scope, facts)
    if pinned is not None and pinned.generation != report.generation:
        raise Problem(
            409,
            "generation-replaced",
            "Report replaced",
            f"the report was recomputed (generation {report.generation}, your cursor's was "
            f"{pinned.generation}) while you paged through it: start again from the first page",
            generation=report.generation,
            first=with_query(report_path(found.name, scope), sort=sort, unused=_flag(unused)),
        )
    label, tail = _staleness(found, report, facts)
    report_served(found.name, label).inc()
    etag = report.etag(media)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": VARY}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    view = View(unused, sort, limit, None if pinned is None else pinned.after)

    def next_url(after: Cursor) -> str:
        path = report_path(found.name, scope)
        return with_query(path, sort=sort, unused=_flag(unused), limit=limit, cursor=after.encode())

    encoded, following = report.encoded(view, media, next_url)
    if media == "csv":
        tail = b""  # the staleness is the JSON answer's only
        if following is not None:
            headers["Link"] = f'<{next_url(following)}>; rel="next"'
    if encoded.gzip_start is not None and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = encoded.gzip_body(tail)
    else:
        body = encoded.body(tail)
    media_type = "text/csv; charset=utf-8" if media == "csv" else "application/json"
    return Response(body, headers=headers, media_type=media_type)


@functools.lru_cache(maxsize=1_024)
def _query(raw: bytes) -> ReportQuery:
    """The query string's parameters, validated as FastAPI would (the last of repeated ones;
    unknown ones ignored), with its errors: a 422 problem."""
    try:
        return ReportQuery.model_validate(dict(QueryParams(raw.decode("latin-1"))))
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("query", *e["loc"])} for e in error.errors()]
        ) from None


async def _generation(
    state: ServiceState, tool: ReportTool[Any], scope: str, facts: ScopeFacts
) -> Generation:
    """The scope's stored generation from this process's cache, else read once from the store
    (in a thread: reading the rows takes milliseconds, the lookups microseconds)."""
    cached = state.cache.get(tool.name, scope, facts.generation or 0)
    if cached is not None:
        return cached
    stored = await run_in_threadpool(state.store.report, tool.name, scope)
    if stored is None:  # deleted since the lookup
        raise not_found(f"no scope {scope!r} of tool {tool.name!r}")
    report = Generation.from_records(*stored, tenant=facts.tenant)
    state.cache.put(report)
    return report


def _staleness(tool: ReportTool[Any], report: Generation, facts: ScopeFacts) -> tuple[str, bytes]:
    """How stale the report is: its label in the metrics, and the answer's tail (the staleness
    document, closing the report's)."""
    now = time.time()
    header = report.header
    label, before_age, after_age = _staleness_parts(
        report.computed_at,
        header.summary.get("params", {}).get("since"),
        header.watermark,
        facts.source_watermark,
        window_start(tool, now),
    )
    age = round(max(0.0, now - header.computed_at), 3)
    return label, before_age + repr(age).encode() + after_age


@functools.lru_cache(maxsize=1_024)
def _staleness_parts(
    computed_at: str | None,
    since: int | None,
    watermark: str | None,
    source_watermark: str | None,
    current_since: int | None,
) -> tuple[str, bytes, bytes]:
    """The staleness label and the tail's JSON before and after the age, which alone changes
    from one request to the next."""
    source_changed = source_watermark is not None and source_watermark != watermark
    window_moved = current_since is not None and current_since != since
    label = "source_changed" if source_changed else "window_moved" if window_moved else "fresh"
    before_age = json_bytes({"computed_at": computed_at})[:-1] + b',"age_s":'
    after = {
        "source_changed": source_changed,
        "source_watermark": source_watermark,
        "window_since": since,
        "window_moved": window_moved,
    }
    return label, before_age, b"," + staleness_tail(after)[1:]


def _cursor(cursor: str | None, sort: str, unused: bool) -> Cursor | None:
    if cursor is None:
        return None
    try:
        pinned = Cursor.decode(cursor)
    except CursorError as error:
        raise Problem(422, "invalid-cursor", "Invalid cursor", str(error)) from None
    if (pinned.sort, pinned.unused_only) != (sort, unused):
        raise Problem(
            422,
            "invalid-cursor",
            "Invalid cursor",
            f"this cursor pages sort={pinned.sort}&unused={_flag(pinned.unused_only)}: "
            "use the `next` link as it is",
        )
    return pinned


@functools.lru_cache(maxsize=64)
def _media(accept: str) -> str:
    """``json`` or ``csv``, whichever ``Accept`` prefers (JSON when it does not care)."""
    best, best_q = None, -1.0
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = next((_q(p[2:]) for p in params if p.startswith("q=")), 1.0)
        kind = {
            "application/json": "json",
            "application/*": "json",
            "*/*": "json",
            "text/csv": "csv",
            "text/*": "csv",
        }.get(media.lower())
        if kind is not None and q > 0 and q > best_q:
            best, best_q = kind, q
    if best is None:
        raise Problem(
            406,
            "not-acceptable",
            "Not acceptable",
            f"reports are application/json or text/csv; Accept asked for {accept[:100]!r}",
        )
    return best


def _q(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110): ``W/"x"`` and ``"x"`` match."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


def _flag(value: bool) -> str:
    return "true" if value else "false"
