"""``report_fresh``: whether each scope's report is fresh (``report_complete`` is evaluated by
the report asset's finalise, scope by scope).

It tells, per scope, whether the stored report is fresh: not missing, its source unchanged,
younger than its maximum age. It is evaluated by ``<tool>_freshness_job``, which the freshness
sensor launches whenever it sees a scope whose freshness differs from its last recorded
evaluation (the store keeps it beside the scope's refresh state), so the check's history holds
one evaluation per change of freshness, for every scope, and always the truth of its last tick.
A stale report is an error for a scope at or above the refresh threshold, a warning below it.
"""

import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    Config,
    JobDefinition,
    OpExecutionContext,
    asset_check,
    job,
    op,
)

from precompute_assets.contract import ReportTool
from precompute_assets.core.refresh import ScopeState, is_high, is_stale, scope_states
from precompute_assets.core.settings import RefreshSettings
from precompute_assets.orchestration.assets import report_asset_key, scopes_partitions
from precompute_assets.orchestration.resources import PrecomputeResource

FRESHNESS_CHECK = "report_fresh"


def build_freshness_check(tool: ReportTool[Any]) -> AssetChecksDefinition:
    """The scope's report is fresh now; run by hand, it evaluates one scope."""

    def report_fresh(
        context: AssetCheckExecutionContext, precompute: PrecomputeResource
    ) -> AssetCheckResult:
        settings = precompute.refresh_settings()
        now = time.time()
        scope = context.partition_key
        states = scope_states(tool, precompute.source_engine(), precompute.store(), [scope], now)
        if not states:
            return AssetCheckResult(passed=False, metadata={"problem": "scope not in the source"})
        passed, severity, metadata = freshness_evaluation(states[0], settings, now)
        return AssetCheckResult(passed=passed, severity=severity, metadata=metadata)

    return _per_scope_check(
        tool,
        FRESHNESS_CHECK,
        report_fresh,
        "The report is fresh: present, its source unchanged, younger than its maximum age.",
    )


def freshness_evaluation(
    state: ScopeState, settings: RefreshSettings, now: float
) -> tuple[bool, AssetCheckSeverity, dict[str, Any]]:
    """Whether the scope's report is fresh, how serious it is if not, and why."""
    high = is_high(state, settings)
    metadata = {
        "utilisation": state.utilisation,
        "above_threshold": high,
        "report_age_s": -1.0 if state.header is None else round(state.age_s(now), 1),
        "report_missing": state.header is None,
        "source_changed": state.source_changed,
        "window_moved": state.window_moved,
    }
    severity = AssetCheckSeverity.ERROR if high else AssetCheckSeverity.WARN
    return not is_stale(state, settings, now), severity, metadata


def freshness_changes(
    states: Iterable[ScopeState],
    recorded: Mapping[str, bool | None],
    settings: RefreshSettings,
    now: float,
) -> list[ScopeState]:
    """The scopes whose freshness differs from their last recorded evaluation (or has none)."""
    return [
        state
        for state in states
        if recorded.get(state.scope) != (not is_stale(state, settings, now))
    ]


class FreshnessConfig(Config):
    scopes: list[str]


def freshness_job_name(tool: ReportTool[Any]) -> str:
    return f"{tool.name}_freshness_job"


def build_freshness_job(tool: ReportTool[Any]) -> JobDefinition:
    """Records ``report_fresh`` for the given scopes whose freshness changed since it last was.

    Each scope is judged when the run executes, so a scope refreshed meanwhile is not recorded
    stale after the fact.
    """
    asset_key = report_asset_key(tool)

    @op(name=f"{tool.name}_record_freshness")
    def record_freshness(
        context: OpExecutionContext, precompute: PrecomputeResource, config: FreshnessConfig
    ) -> None:
        settings = precompute.refresh_settings()
        now = time.time()
        states = scope_states(
            tool, precompute.source_engine(), precompute.store(), config.scopes, now
        )
        fleet = precompute.fleet()
        recorded = fleet.recorded_freshness(tool, config.scopes)
        changed = freshness_changes(states, recorded, settings, now)
        for state in changed:
            passed, severity, metadata = freshness_evaluation(state, settings, now)
            context.log_event(
                AssetCheckEvaluation(  # type: ignore[arg-type]  # log_event accepts it
                    asset_key=asset_key,
                    check_name=FRESHNESS_CHECK,
                    passed=passed,
                    severity=severity,
                    partition=state.scope,
                    metadata=metadata,
                )
            )
        fresh = {state.scope: not is_stale(state, settings, now) for state in changed}
        fleet.record_freshness(tool, fresh)
        stale = sum(1 for is_fresh in fresh.values() if not is_fresh)
        context.log.info(
            f"{len(changed)} of {len(config.scopes)} scopes changed freshness: "
            f"{stale} now stale, {len(changed) - stale} now fresh"
        )

    @job(
        name=freshness_job_name(tool),
        description=f"Records the {FRESHNESS_CHECK} check of {tool.name} scopes that changed.",
        tags={"precompute/tool": tool.name},
    )
    def freshness_job() -> None:
        record_freshness()

    return freshness_job


def _per_scope_check(
    tool: ReportTool[Any], name: str, check: Callable[..., AssetCheckResult], description: str
) -> AssetChecksDefinition:
    """An asset check partitioned like the tool's report, one evaluation per scope."""
    with warnings.catch_warnings():
        # Partitioned checks are a Dagster preview; its warning would repeat in every process.
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return asset_check(
            asset=report_asset_key(tool),
            name=name,
            partitions_def=scopes_partitions(tool),
            description=description,
        )(check)
