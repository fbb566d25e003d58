"""The admin's spaces, per tool: utilisation against the limit, report age, staleness, why a
refresh is due, and "Refresh now" with its progress in place.

The listing is the API's (``GET /v1/tools/{tool}/scopes``, refresh-priority order, from the
store alone); a refresh is the API's too (the run queue, coalesced per scope), and its progress
is its run's status, polled by ``static/admin.js``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from precompute_assets.core.errors import DagsterUnavailableError
from precompute_assets.service.models import ScopeItem
from precompute_assets.service.pages.common import (
    Admin,
    CheckedForm,
    PageError,
    Pages,
    PagesState,
    render,
    secured,
)
from precompute_assets.service.problems import Problem
from precompute_assets.service.routers import refreshes, scopes

router = APIRouter(prefix="/admin", include_in_schema=False)
PER_PAGE = 100


@router.get("")
def spaces_page(
    request: Request, pages: Pages, admin: Admin, queued: str | None = None
) -> Response:
    """Every tool's spaces of the admin's tenant, most pressing first."""
    listed = [_listing(pages, admin, name, None) for name in pages.service.tools]
    return render(request, "spaces.html", admin, listings=listed, queued=queued)


@router.get("/tools/{tool}")
def tool_spaces_page(
    request: Request, pages: Pages, admin: Admin, tool: str, cursor: str | None = None
) -> Response:
    """One tool's spaces, a page at a time."""
    listing = _listing(pages, admin, pages.tool(tool).name, cursor)
    return render(request, "spaces.html", admin, listings=[listing], queued=None)


@router.get("/tools/{tool}/spaces/{scope}/row")
def space_row(request: Request, pages: Pages, admin: Admin, tool: str, scope: str) -> Response:
    """One space's row, as the listing shows it: what the page swaps in after a refresh."""
    found = pages.tool(tool)
    item = _item(pages, admin, found.name, scope)
    return render(request, "_space_row.html", admin, tool=found, item=item, **_bar(pages))


@router.post("/tools/{tool}/spaces/{scope}/refresh")
def refresh_space(
    request: Request,
    pages: Pages,
    admin: Admin,
    form: CheckedForm,
    tool: Annotated[str, Path()],
    scope: Annotated[str, Path()],
) -> Response:
    """Queue the space's report refresh (or join the run in flight). Scripts get the run as
    JSON; a plain form post comes back to the listing."""
    found = pages.tool(tool)
    try:
        accepted = refreshes.request_refresh(
            Response(), pages.service, admin.key, found.name, scope
        )
    except Problem as problem:
        raise PageError(problem.status, problem.title, problem.detail) from None
    except DagsterUnavailableError as error:
        if _wants_json(request):
            return JSONResponse({"error": f"{error}; reports can still be read"}, 503)
        raise PageError(503, "Refreshes unavailable", str(error)) from None
    if _wants_json(request):
        return secured(JSONResponse(accepted.model_dump()))
    return secured(RedirectResponse(f"/admin?queued={scope}", status_code=303))


@router.get("/refreshes/{run_id}")
def refresh_progress(pages: Pages, admin: Admin, run_id: str) -> Response:
    """The refresh run's status, for the page's progress (JSON)."""
    try:
        status = refreshes.refresh_status(pages.service, admin.key, run_id)
    except Problem as problem:
        return secured(JSONResponse({"error": problem.detail}, problem.status))
    except DagsterUnavailableError as error:
        return secured(JSONResponse({"error": str(error)}, 503))
    return secured(JSONResponse(status.model_dump()))


def _listing(pages: PagesState, admin: Admin, tool: str, cursor: str | None) -> dict[str, Any]:
    try:
        page = scopes.list_scopes(pages.service, admin.key, tool, PER_PAGE, cursor)
    except Problem as problem:
        raise PageError(problem.status, problem.title, problem.detail) from None
    return {"tool": pages.tool(tool), "page": page, **_bar(pages)}


def _item(pages: PagesState, admin: Admin, tool: str, scope: str) -> ScopeItem:
    facts = pages.service.store.facts(tool, scope)
    if facts is None or not admin.key.sees(facts.tenant):
        raise PageError(404, "Not found", f"There is no space {scope!r} of yours.")
    cursor = None
    while True:
        page = scopes.list_scopes(pages.service, admin.key, tool, 1_000, cursor)
        for item in page.scopes:
            if item.scope == scope:
                return item
        if page.next is None:
            raise PageError(404, "Not found", f"There is no space {scope!r} of yours.")
        cursor = page.next.split("cursor=", 1)[1]


def _bar(pages: PagesState) -> dict[str, Any]:
    return {"threshold": pages.service.refresh.threshold}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")
