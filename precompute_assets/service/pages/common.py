"""What every admin page needs: its state, the signed-in admin, CSRF checks, rendering.

Pages read through the service's store code (``service/store.py``), as the API does; the few
writes (sessions, plans) go through ``core/``. A page answers HTML with security headers: a
strict Content-Security-Policy (scripts and styles from this site only, no inline code), no
framing, no caching of tenant data.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from starlette.datastructures import FormData

from precompute_assets.contract import ReportTool
from precompute_assets.core.actions import ActionLog
from precompute_assets.core.admin_sessions import AdminSession, AdminSessions
from precompute_assets.core.db import connect, create_engine_for
from precompute_assets.core.text import ago
from precompute_assets.service.dependencies import ServiceState

TEMPLATES = Path(__file__).resolve().parent / "templates"
SESSION_COOKIE = "precompute_session"
CSRF_FIELD = "csrf_token"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class PagesState:
    """Made once per process: templates, sessions, the action log, the source (for plans)."""

    service: ServiceState
    source_url: str
    templates: Jinja2Templates = field(init=False)
    _source: Engine | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.globals.update(ago=ago, quote=quote, percent=percent)

    @property
    def sessions(self) -> AdminSessions:
        return AdminSessions(self.service.store.writer)

    @property
    def actions(self) -> ActionLog:
        return ActionLog(self.service.store.writer)

    def tool(self, name: str) -> ReportTool[Any]:
        tool = self.service.tools.get(name)
        if tool is None:
            raise PageError(404, "Not found", f"There is no tool {name!r}.")
        return tool

    def live_watermark(self, tool: ReportTool[Any], scope: str) -> str | None:
        """The source's watermark of ``scope`` now (plans are made against the live source)."""
        if self._source is None:
            self._source = create_engine_for(self.source_url, read_only=True)
        with connect(self._source) as connection:
            return tool.catalogue.watermark(connection, [scope]).get(scope)


class PageError(Exception):
    """Answer with an error page: what went wrong and what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in page, scripts get a 401."""


def pages_state(request: Request) -> PagesState:
    return request.app.state.pages


Pages = Annotated[PagesState, Depends(pages_state)]


def signed_in(request: Request) -> AdminSession:
    """The signed-in admin of the request's session cookie, or SignInRequired."""
    token = request.cookies.get(SESSION_COOKIE)
    session = None if not token else pages_state(request).sessions.find(token)
    if session is None:
        raise SignInRequired()
    return session


Admin = Annotated[AdminSession, Depends(signed_in)]


async def checked_form(request: Request, admin: Admin) -> FormData:
    """The posted form, once its CSRF token is the session's; a 403 page otherwise."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, admin.csrf_token):
        raise PageError(
            403,
            "Form refused",
            "This form was not sent by a page of this site, or it has expired: reload the page "
            "and try again.",
        )
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def render(
    request: Request,
    template: str,
    admin: AdminSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    pages = pages_state(request)
    return pages.templates.TemplateResponse(
        request,
        template,
        {"admin": admin, "csrf_field": CSRF_FIELD, "now": time.time(), **context},
        status_code=status_code,
        headers=HEADERS,
    )


def secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def percent(fraction: float | None) -> int:
    """0 to 100, for bars (over the limit draws a full bar)."""
    return 0 if fraction is None else max(0, min(100, round(fraction * 100)))
