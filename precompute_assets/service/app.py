"""The report service's application: routers, dependencies, problem documents, metrics.

``precompute serve`` runs ``from_env`` under uvicorn, one app per worker process. The read path
imports neither Dagster nor ``orchestration/``; the refresh routes import them when first asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from precompute_assets.contract import ReportTool
from precompute_assets.core.db import safe_url
from precompute_assets.core.registry import load_tools
from precompute_assets.core.settings import (
    ExecutorSettings,
    RefreshSettings,
    ServiceSettings,
    Settings,
)
from precompute_assets.service import pages, problems
from precompute_assets.service.dependencies import ServiceState
from precompute_assets.service.metrics import MetricsMiddleware
from precompute_assets.service.reports import GenerationCache
from precompute_assets.service.routers import health, refreshes, reports, scopes
from precompute_assets.service.routers import tools as tools_routes
from precompute_assets.service.store import ServiceStore

DESCRIPTION = """Pre-computed reports, one tenant at a time. Admins' pages: `/admin`.

Send an API key as `Authorization: Bearer KEY` (`precompute keys create`). A tenant's key sees its
tenant's scopes; an operator's key sees every tenant. Errors are RFC 9457 problem documents."""


def create_app(
    store_url: str,
    tools: Mapping[str, ReportTool[Any]],
    settings: ServiceSettings,
    refresh: RefreshSettings | None = None,
    executors: ExecutorSettings | None = None,
    source_url: str | None = None,
) -> FastAPI:
    """The API and, given the source (plans are made against it), the admin pages."""
    state = ServiceState(
        store=ServiceStore(store_url, settings.key_cache_s),
        tools=dict(tools),
        cache=GenerationCache(settings.cached_reports),
        settings=settings,
        refresh=refresh or RefreshSettings(),
        executors=executors or ExecutorSettings(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.store.dispose()

    app = FastAPI(
        title="precompute-assets reports",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # The service's metrics are Prometheus's (``/metrics``); FastAPI's native OpenTelemetry
        # would otherwise look up the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = state
    problems.install(app)

    @app.exception_handler(sa.exc.DBAPIError)
    async def store_refused(request: Request, error: sa.exc.DBAPIError) -> JSONResponse:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        return problems.unavailable(
            "store-unavailable",
            "Report store unavailable",
            f"the report store failed: {safe_url(reason)}; retry later",
        ).response(request)

    for router in (
        reports.router,  # first: the route read under load is matched first
        tools_routes.router,
        scopes.router,
        refreshes.router,
        health.router,
    ):
        app.include_router(router)
    if source_url is not None:
        pages.install(app, state, source_url)
    app.add_middleware(MetricsMiddleware)
    return app


def from_env() -> FastAPI:
    """The app as the environment configures it (``PRECOMPUTE_*``): uvicorn's factory."""
    settings = Settings.from_env()
    return create_app(
        settings.store_url,
        load_tools(),
        ServiceSettings.from_env(),
        RefreshSettings.from_env(),
        ExecutorSettings.from_env(),
        source_url=settings.source_url,
    )
