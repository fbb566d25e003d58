"""The admin pages: a tenant's admin signs in with their key, sees their spaces, refreshes, reads
a report, and removes unused entities with review, an activity log and undo.

Server-rendered (Jinja2 templates in ``templates/``), with a little plain JavaScript and CSS from
``service/static/`` (no CDN, no build step): every page works as plain forms and links, the
script adds progress in place and "select all".
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from precompute_assets.service.dependencies import ServiceState
from precompute_assets.service.pages import remediation, report, session, spaces
from precompute_assets.service.pages.common import (
    PageError,
    PagesState,
    SignInRequired,
    render,
    signed_in,
)

STATIC = Path(__file__).resolve().parents[1] / "static"


def install(app: FastAPI, service: ServiceState, source_url: str) -> None:
    """Serve the pages under ``/admin`` and their files under ``/static``."""
    app.state.pages = PagesState(service, source_url)
    for router in (session.router, spaces.router, report.router, remediation.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, error: SignInRequired) -> Response:
        if "application/json" in request.headers.get("accept", ""):  # the pages' scripts
            return JSONResponse({"error": "signed out: reload the page and sign in again"}, 401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        back = f"?next={_quoted(target)}" if request.method == "GET" else ""
        return RedirectResponse(f"/admin/sign-in{back}", status_code=303)

    @app.exception_handler(PageError)
    async def error_page(request: Request, error: PageError) -> Response:
        try:
            admin = signed_in(request)
        except SignInRequired:
            admin = None
        return render(
            request, "problem.html", admin, error.status, title=error.title, message=error.message
        )


def _quoted(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
