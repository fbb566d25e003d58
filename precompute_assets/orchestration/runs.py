"""Running report jobs outside the daemon: the demo, and on-demand refreshes from the CLI.

Runs go through the project's Dagster instance, so the UI shows them like any other run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    JobExecutionResult,
    RetryPolicy,
    build_reconstructable_job,
)

# execute_job cannot take a run id, and `refresh --no-wait` names the run before it exists.
from dagster._core.execution.api import execute_run

from precompute_assets.contract import ReportTool
from precompute_assets.core.cache import cache_from_url, check_cache_reachable
from precompute_assets.core.db import check_reachable, create_engine_for
from precompute_assets.core.reader import UnknownScopeError
from precompute_assets.core.refresh import Reason, RefreshRequest, ScopeState, run_key, scope_states
from precompute_assets.core.registry import get_tool, load_tools
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import ExecutorSettings, Settings
from precompute_assets.core.text import shorten
from precompute_assets.orchestration.assets import (
    DEFAULT_RETRY_POLICY,
    report_job_name,
    scopes_partitions,
)
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.executors import execution_run_config, executor_for
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.sensors import refresh_tags

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


def add_scope_partition(instance: DagsterInstance, tool: ReportTool[Any], scope: str) -> None:
    """Register ``scope`` as a partition of the tool unless it is one, even while another process
    registers it too (two on-demand refreshes of a new scope)."""
    name = scopes_partitions(tool).name
    if instance.has_dynamic_partition(name, scope):
        return
    try:
        instance.add_dynamic_partitions(name, [scope])
    except sa.exc.IntegrityError:
        # Dagster's SQLite storage checks, then inserts; PostgreSQL's upserts and cannot get here.
        if not instance.has_dynamic_partition(name, scope):
            raise


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


def refresh_scope(
    tool: ReportTool[Any],
    scope: str,
    settings: Settings,
    instance: DagsterInstance,
    *,
    run_id: str | None = None,
    log_level: str = "INFO",
) -> JobExecutionResult:
    """An on-demand refresh: a run of the tool's job for ``scope``, tagged and prioritised.

    The run's executor is chosen from the scope's last plan, as the refresh sensor chooses it.
    """
    state = refreshable_state(tool, scope, settings)
    add_scope_partition(instance, tool, scope)
    request = RefreshRequest(scope, Reason.ON_DEMAND, state.utilisation, run_key(state))
    executors = ExecutorSettings.from_env()
    run_config = {
        **execution_run_config(executor_for(state.entity_count, executors), executors),
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    # The pointer names the tool only: step processes read where the data is from their own
    # environment, so no URL (nor its password) lands in the run's record.
    job = report_job(tool.name)
    definition = job.get_definition()
    run = instance.create_run_for_job(
        definition,
        run_id=run_id,
        run_config=run_config,
        # The job's own tags too (its maximum runtime), as a launch from the UI would have them.
        tags={**definition.tags, **refresh_tags(tool, request), "dagster/partition": scope},
        job_code_origin=job.get_python_origin(),
    )
    return execute_run(job, run, instance)


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


def refresh_in_background(tool: ReportTool[Any], scope: str, settings: Settings) -> str:
    """Start ``precompute refresh`` in a detached process and return its run id at once."""
    refreshable_state(tool, scope, settings)
    run_id = str(uuid.uuid4())
    log = settings.home / "logs" / f"refresh-{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "precompute_assets.cli", "refresh", tool.name, scope]
    with log.open("w") as output:
        subprocess.Popen(
            [*command, "--run-id", run_id],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return run_id
