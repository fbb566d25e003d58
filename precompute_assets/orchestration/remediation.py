"""Remediation runs: per tool that offers one, ``<tool>_remediation_job`` applies or undoes one
action (``core/remediation.py``), launched through the run queue as on-demand refreshes are, and
tagged so that operators see it beside the report runs: the tool, the scope, apply or undo, the
action and the key that asked. Its end asks for the scope's report to be refreshed, through the
queue; a crashed run is retried by the daemon (``dagster.yaml``) and resumes the action from its
last done batch.
"""

from typing import Any

from dagster import Config, JobDefinition, OpExecutionContext, job, op
from pydantic import Field

from precompute_assets.contract import ReportTool
from precompute_assets.core.actions import Action, ActionLog
from precompute_assets.core.errors import DagsterUnavailableError
from precompute_assets.core.remediation import run_action
from precompute_assets.core.scope_index import ScopeIndex
from precompute_assets.core.settings import ServiceSettings
from precompute_assets.orchestration.assets import (
    DEFAULT_RETRY_POLICY,
    MAX_RUNTIME_TAG,
    report_asset_key,
)
from precompute_assets.orchestration.on_demand import request_refresh
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.sensors import TOOL_TAG
from precompute_assets.orchestration.webserver import DagsterWebserver

ACTION_TAG = "precompute/action"  # apply or undo
ACTION_ID_TAG = "precompute/action_id"
SCOPE_TAG = "precompute/scope"
KEY_TAG = "precompute/key"  # the id of the key that asked: who, never the key
# As on-demand refreshes: an admin is waiting.
ACTION_PRIORITY = 1_000


class RemediationConfig(Config):
    action_id: str = Field(description="the action to apply or undo (precompute_actions)")


def remediation_job_name(tool: ReportTool[Any]) -> str:
    return f"{tool.name}_remediation_job"


def remediate_op_name(tool: ReportTool[Any]) -> str:
    return f"{tool.name}_remediate"


def build_remediation_job(tool: ReportTool[Any], max_runtime_s: int) -> JobDefinition:
    """Apply or undo one action of ``tool``, batch by batch, then refresh the scope's report."""

    @op(name=remediate_op_name(tool), retry_policy=DEFAULT_RETRY_POLICY)
    def remediate(
        context: OpExecutionContext, precompute: PrecomputeResource, config: RemediationConfig
    ) -> None:
        store = precompute.store()
        log = ActionLog(store.engine)
        try:
            result = run_action(tool, config.action_id, precompute.source_writer(), log, store)
        except Exception as error:
            log.fail(config.action_id, f"{type(error).__name__}: {error}")
            raise
        action = result.action
        context.log.info(
            f"{action.kind} {action.action_id} of {tool.name}/{action.scope}: {action.message} "
            f"({result.batches_run} batches run, {result.batches_done_before} done before)"
        )
        if result.refused:
            return
        run_id, note = refresh_after(tool, action, precompute)
        log.refresh_requested(action.action_id, run_id, note)
        context.log.info(note or f"report refresh {run_id} requested")

    @job(
        name=remediation_job_name(tool),
        description=f"Apply or undo an action on {tool.name} entities, then refresh the report.",
        tags={TOOL_TAG: tool.name, MAX_RUNTIME_TAG: str(max_runtime_s)},
    )
    def remediation_job() -> None:
        remediate()

    return remediation_job


def refresh_after(
    tool: ReportTool[Any], action: Action, precompute: PrecomputeResource
) -> tuple[str | None, str | None]:
    """The scope's report refresh after an action, through the run queue: its run id, or why
    none was asked for (the refresh sensor will see the source changed)."""
    store = precompute.store()
    known = ScopeIndex(store.engine).get(tool.name, action.scope)
    header = store.header(tool.name, action.scope)
    try:
        refresh = request_refresh(
            DagsterWebserver(ServiceSettings.from_env().dagster_url),
            store.engine,
            tool,
            action.scope,
            utilisation=(known.utilisation if known else None) or 0.0,
            entity_count=None if header is None else header.entity_count,
            executors=precompute.executor_settings(),
        )
    except DagsterUnavailableError as error:
        return None, f"report refresh not requested ({error})"
    return refresh.run_id, None


def launch_action(webserver: DagsterWebserver, tool: ReportTool[Any], action: Action) -> str:
    """Submit the action's run to the instance's run queue through the webserver; its run id.

    DagsterUnavailableError if the webserver does not answer or no daemon would start it.
    """
    webserver.check_daemon()
    tags = {
        "dagster/priority": str(ACTION_PRIORITY),
        TOOL_TAG: tool.name,
        SCOPE_TAG: action.scope,
        ACTION_TAG: action.kind,
        ACTION_ID_TAG: action.action_id,
        KEY_TAG: action.key_id,
    }
    return webserver.launch(
        {
            "selector": {
                **webserver.repository_of(report_asset_key(tool).path),
                "pipelineName": remediation_job_name(tool),
            },
            "runConfigData": {
                "ops": {remediate_op_name(tool): {"config": {"action_id": action.action_id}}}
            },
            "mode": "default",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
    )
