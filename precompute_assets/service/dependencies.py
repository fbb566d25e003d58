"""What routes depend on (``Depends``): the store, the tools, the caller's key, the cache.

The app keeps one of each in its state (``app.py``); routes and pages ask for them by type, so a
new router or page needs nothing but these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from precompute_assets.contract import ReportTool
from precompute_assets.core.api_keys import ApiKey
from precompute_assets.core.settings import ExecutorSettings, RefreshSettings, ServiceSettings
from precompute_assets.service.problems import not_found, unauthorized
from precompute_assets.service.reports import GenerationCache
from precompute_assets.service.store import ServiceStore


@dataclass(frozen=True)
class ServiceState:
    """Everything a request may need, made once per process."""

    store: ServiceStore
    tools: dict[str, ReportTool[Any]]
    cache: GenerationCache
    settings: ServiceSettings
    refresh: RefreshSettings
    executors: ExecutorSettings


async def service_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]
_bearer = HTTPBearer(auto_error=False, description="an API key: `precompute keys create`")


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The caller's key (``Authorization: Bearer KEY``), or 401. Never logged, never echoed.
    (``credentials`` puts the bearer scheme in the OpenAPI document.)"""
    return authenticate(request)


def authenticate(request: Request) -> ApiKey:
    """The key of ``Authorization: Bearer KEY``, or 401; looked up on the event loop (a thread
    hand-off would cost more than the lookup), cached per process for ``key_cache_s``."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise unauthorized(
            "no API key: send `Authorization: Bearer KEY` (`precompute keys create` makes one)"
        )
    state: ServiceState = request.app.state.service
    found = state.store.caller(key)
    if found is None:
        raise unauthorized("this API key is unknown or revoked: ask an operator for a new one")
    return found


Caller = Annotated[ApiKey, Depends(caller)]


def tool_named(state: ServiceState, name: str) -> ReportTool[Any]:
    tool = state.tools.get(name)
    if tool is None:
        raise not_found(f"no tool {name!r}: GET /v1/tools lists them")
    return tool
