"""Running report jobs in this process (the demo), and what a refresh checks before it asks.

Runs go through the project's Dagster instance, so the UI shows them like any other run.
On-demand refreshes go through the run queue instead (``on_demand.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    RetryPolicy,
    build_reconstructable_job,
)

from precompute_assets.contract import ReportTool
from precompute_assets.core.cache import cache_from_url, check_cache_reachable
from precompute_assets.core.db import check_reachable, create_engine_for
from precompute_assets.core.reader import UnknownScopeError
from precompute_assets.core.refresh import ScopeState, scope_states
from precompute_assets.core.registry import get_tool, load_tools
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import Settings
from precompute_assets.core.text import shorten
from precompute_assets.orchestration.assets import (
    DEFAULT_RETRY_POLICY,
    report_job_name,
    scopes_partitions,
)
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

if TYPE_CHECKING:
    from dagster._core.definitions.reconstruct import ReconstructableJob


def project_instance(project_dir: Path) -> DagsterInstance:
    """The persistent Dagster instance of the project (``DAGSTER_HOME``, else the project dir).

    ``dagster dev`` started with the same ``DAGSTER_HOME`` shows the runs made here.
    """
    if not os.environ.get("DAGSTER_HOME"):
        if not (project_dir / "dagster.yaml").exists():
            raise FileNotFoundError(
                f"no dagster.yaml in {project_dir}: run from the project root or set DAGSTER_HOME"
            )
        os.environ["DAGSTER_HOME"] = str(project_dir.resolve())
    return DagsterInstance.get()


def make_report_job(tool: str, max_retries: int | None = None, **precompute: Any) -> JobDefinition:
    """A registered tool's report job, on the data named by ``precompute`` (resource fields)."""
    tools = load_tools()
    retry_policy = DEFAULT_RETRY_POLICY if max_retries is None else RetryPolicy(max_retries)
    defs = build_definitions(tools, PrecomputeResource(**precompute), retry_policy)
    return defs.resolve_job_def(report_job_name(get_tool(tools, tool)))


def report_job(tool: str, **kwargs: Any) -> ReconstructableJob:
    """A pointer to ``make_report_job(tool, **kwargs)`` that step processes on any host follow.

    Multiprocess, celery and Kubernetes steps rebuild their job from a pointer instead of
    receiving it; the data's whereabouts travel in it rather than in a shared environment.
    """
    return build_reconstructable_job(
        __name__,
        make_report_job.__name__,
        reconstructable_args=(tool,),
        reconstructable_kwargs=kwargs,
    )


def register_scopes(
    instance: DagsterInstance, tool: ReportTool[Any], scopes: list[str]
) -> list[str]:
    """Make the tool's partitions equal to ``scopes``; return the scopes added."""
    name = scopes_partitions(tool).name
    known = set(instance.get_dynamic_partitions(name))
    added = [scope for scope in scopes if scope not in known]
    if added:
        instance.add_dynamic_partitions(name, added)
    for scope in sorted(known - set(scopes)):
        instance.delete_dynamic_partition(name, scope)
    return added


def materialise_scope(
    defs: Definitions,
    tool: ReportTool[Any],
    scope: str,
    instance: DagsterInstance,
    *,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    log_level: str = "WARNING",
) -> ExecuteInProcessResult:
    """Compute one scope's report in this process, recorded as a run of the tool's job."""
    return defs.resolve_job_def(report_job_name(tool)).execute_in_process(
        partition_key=scope,
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        tags=tags,
        run_id=run_id,
        raise_on_error=False,
    )


def refreshable_state(tool: ReportTool[Any], scope: str, settings: Settings) -> ScopeState:
    """The scope's state, once the source, the store and any cache tier answer (errors name
    them, passwords masked) and the source holds the scope. A missing SQLite store is created."""
    source = check_reachable(create_engine_for(settings.source_url, read_only=True))
    store = ReportStore(check_reachable(create_engine_for(settings.store_url)))
    if settings.cache_url:
        check_cache_reachable(cache_from_url(settings.cache_url))
    states = scope_states(tool, source, store, [scope])
    if not states:
        raise UnknownScopeError(f"unknown scope {shorten(scope)!r}: the source has no such scope")
    return states[0]
