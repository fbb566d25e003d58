"""``POST .../refresh`` and ``GET /v1/refreshes/{run_id}``: on-demand refreshes and their runs.

The only routes that reach Dagster (the webserver's GraphQL API), imported when first asked: the
read routes never load Dagster. While Dagster is down these answer 503 and reads go on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Response

from precompute_assets.core.api_keys import ApiKey
from precompute_assets.service.dependencies import Caller, ServiceState, State, tool_named
from precompute_assets.service.metrics import REFRESHES
from precompute_assets.service.models import RefreshAccepted, RefreshStatus
from precompute_assets.service.problems import documented, not_found
from precompute_assets.service.urls import refresh_status_path, report_path

if TYPE_CHECKING:
    from precompute_assets.orchestration.webserver import RunInfo

router = APIRouter(prefix="/v1", tags=["refreshes"])


@router.post(
    "/tools/{tool}/scopes/{scope}/refresh",
    status_code=202,
    responses=documented(401, 404, 503),
)
def request_refresh(
    response: Response,
    state: State,
    caller: Caller,
    tool: Annotated[str, Path(description="a tool's name")],
    scope: Annotated[str, Path(description="a scope of the tool")],
) -> RefreshAccepted:
    """Recompute the scope's report through Dagster's run queue, at on-demand priority. While a
    run of the scope is queued or running, this answers that run: many requests, one run."""
    from precompute_assets.orchestration.on_demand import request_refresh as submit

    found = tool_named(state, tool)
    facts = state.store.facts(found.name, scope)
    if facts is None or not caller.sees(facts.tenant):
        raise not_found(f"no scope {scope!r} of tool {found.name!r}")
    known = state.store.known(found.name, scope)
    header = state.store.header(found.name, scope)
    refresh = submit(
        _webserver(state),
        state.store.writer,
        found,
        scope,
        utilisation=(known.utilisation if known else None) or 0.0,
        entity_count=None if header is None else header.entity_count,
        executors=state.executors,
    )
    REFRESHES.labels(found.name, "coalesced" if refresh.coalesced else "launched").inc()
    status_url = refresh_status_path(refresh.run_id)
    response.headers["Location"] = status_url
    return RefreshAccepted(
        run_id=refresh.run_id,
        status=refresh.status,
        coalesced=refresh.coalesced,
        status_url=status_url,
    )


@router.get("/refreshes/{run_id}", responses=documented(401, 404, 503))
def refresh_status(
    state: State,
    caller: Caller,
    run_id: Annotated[str, Path(description="a refresh's run id")],
) -> RefreshStatus:
    """The status of a refresh's run (Dagster's: QUEUED, STARTED, SUCCESS, FAILURE, ...)."""
    missing = not_found(f"no refresh run {run_id!r}")
    run = _webserver(state).run(run_id) if _looks_like_run_id(run_id) else None
    if run is None:
        raise missing
    tool, scope = _report_of(state, run)
    if tool is None or scope is None or not _sees(state, caller, tool, scope):
        raise missing
    from precompute_assets.orchestration.webserver import TERMINAL

    return RefreshStatus(
        run_id=run.run_id,
        status=run.status,
        tool=tool,
        scope=scope,
        finished=run.status in TERMINAL,
        report=report_path(tool, scope),
    )


def _webserver(state: ServiceState) -> Any:
    from precompute_assets.orchestration.webserver import DagsterWebserver

    return DagsterWebserver(state.settings.dagster_url)


def _looks_like_run_id(run_id: str) -> bool:
    # Dagster's run ids are UUIDs; anything else is not asked of it.
    return len(run_id) == 36 and all(c in "0123456789abcdef-" for c in run_id)


def _report_of(state: ServiceState, run: RunInfo) -> tuple[str | None, str | None]:
    """The tool and scope a run computes, whichever job it is of."""
    from precompute_assets.orchestration.assets import report_asset_key, report_job_name

    scope = run.tags.get("dagster/partition")
    for name, tool in state.tools.items():
        if (
            run.tags.get("precompute/tool") == name
            or run.job_name == report_job_name(tool)
            or report_asset_key(tool).to_user_string() in run.asset_keys
        ):
            return name, scope
    return None, scope


def _sees(state: ServiceState, caller: ApiKey, tool: str, scope: str) -> bool:
    facts = state.store.facts(tool, scope)
    return facts is not None and caller.sees(facts.tenant)
