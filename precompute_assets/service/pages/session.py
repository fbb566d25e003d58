"""Signing in with a tenant's API key, and out.

The sign-in form is protected by a token of its own (a cookie and a hidden field that must
match), since there is no session yet to hold one. The session cookie is HttpOnly (no script
reads it), SameSite=Strict (no other site's page sends it), scoped to the pages, and Secure
when the service is reached over HTTPS.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from precompute_assets.core.admin_sessions import SESSION_S
from precompute_assets.service.pages.common import (
    SESSION_COOKIE,
    CheckedForm,
    Pages,
    render,
    secured,
)

router = APIRouter(prefix="/admin", include_in_schema=False)
SIGN_IN_COOKIE = "precompute_sign_in"
HOME = "/admin"


@router.get("/sign-in")
def sign_in_page(request: Request, next: str = HOME, signed_out: bool = False) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request, "sign_in.html", None, sign_in_token=token, next=_local(next), signed_out=signed_out
    )
    _cookie(request, response, SIGN_IN_COOKIE, token, 3_600, path="/admin/sign-in")
    return response


@router.post("/sign-in")
def sign_in(
    request: Request,
    pages: Pages,
    key: Annotated[str, Form()] = "",
    sign_in_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = HOME,
) -> Response:
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, sign_in_token):
        return _again(request, 403, "This sign-in form expired: sign in again.", next)
    found = pages.service.store.caller(key.strip()) if key.strip() else None
    if found is None:
        return _again(
            request,
            401,
            "This key is unknown or revoked: ask an operator for your tenant's key "
            "(precompute keys create --tenant ...).",
            next,
        )
    token, _ = pages.sessions.start(found)
    response = RedirectResponse(_local(next), status_code=303)
    _cookie(request, response, SESSION_COOKIE, token, SESSION_S, path="/admin")
    response.delete_cookie(SIGN_IN_COOKIE, path="/admin/sign-in")
    return secured(response)


@router.post("/sign-out")
def sign_out(request: Request, pages: Pages, form: CheckedForm) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        pages.sessions.end(token)
    response = RedirectResponse("/admin/sign-in?signed_out=true", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return secured(response)


def _again(request: Request, status: int, error: str, next: str) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        None,
        status_code=status,
        sign_in_token=token,
        next=_local(next),
        error=error,
    )
    _cookie(request, response, SIGN_IN_COOKIE, token, 3_600, path="/admin/sign-in")
    return response


def _cookie(
    request: Request, response: Response, name: str, value: str, max_age: int, path: str
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _local(path: str) -> str:
    """Where to go after signing in: a page of this site only (no open redirect)."""
    if path.startswith("/admin") and not path.startswith("//") and "\\" not in path:
        return path
    return HOME
