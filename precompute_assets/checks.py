"""Asset checks on every tool's report: complete when written, fresh while it is read."""

import time
import warnings
from collections.abc import Callable
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from precompute_assets.contract import ReportTool
from precompute_assets.factory import report_asset_key, scopes_partitions
from precompute_assets.refresh import ScopeState, is_high, is_stale, scope_states
from precompute_assets.resources import PrecomputeResource
from precompute_assets.settings import RefreshSettings

FRESHNESS_CHECK = "report_fresh"


def build_completeness_check(tool: ReportTool[Any]) -> AssetChecksDefinition:
    """Every planned batch folded, and one row per entity the tool reports on now."""

    def report_complete(
        context: AssetCheckExecutionContext, precompute: PrecomputeResource
    ) -> AssetCheckResult:
        scope = context.partition_key
        stored = precompute.store().read(tool.name, scope)
        if stored is None:
            return AssetCheckResult(passed=False, metadata={"problem": "no report stored"})
        header, rows = stored
        folded = header.summary.get("batches_folded")
        with precompute.source_engine().connect() as source:
            # Finalising an empty fold lists every entity the report must cover, without a scan.
            expected = tool.finalise(source, scope, tool.empty(), header.summary.get("params", {}))
        expected_ids = set(expected["entity_id"].astype(str))
        stored_ids = set(rows["entity_id"])
        missing, extra = sorted(expected_ids - stored_ids), sorted(stored_ids - expected_ids)
        passed = folded == header.batch_count and not missing and not extra
        return AssetCheckResult(
            passed=passed,
            metadata={
                "batches_planned": header.batch_count,
                "batches_folded": folded,
                "rows": len(rows),
                "entities_missing": len(missing),
                "entities_extra": len(extra),
                "examples": MetadataValue.json({"missing": missing[:10], "extra": extra[:10]}),
            },
        )

    return _per_scope_check(
        tool,
        report_complete,
        "Every planned batch was folded and the report has one row per entity.",
    )


def build_freshness_check(tool: ReportTool[Any]) -> AssetChecksDefinition:
    """Warns when a scope at or above the refresh threshold has a stale report.

    The refresh sensor reports this check for every high scope whose freshness changes; running
    it by hand evaluates one scope now.
    """

    def report_fresh(
        context: AssetCheckExecutionContext, precompute: PrecomputeResource
    ) -> AssetCheckResult:
        settings = RefreshSettings.from_env()
        scope = context.partition_key
        states = scope_states(tool, precompute.source_engine(), precompute.store(), [scope])
        now = time.time()
        if not states:
            return AssetCheckResult(passed=False, metadata={"problem": "scope not in the source"})
        [state] = states
        stale = is_high(state, settings) and is_stale(state, settings, now)
        return AssetCheckResult(
            passed=not stale,
            severity=AssetCheckSeverity.WARN,
            metadata=freshness_metadata(state, now),
        )

    return _per_scope_check(
        tool, report_fresh, "A scope above the utilisation threshold has a fresh report."
    )


def _per_scope_check(
    tool: ReportTool[Any], check: Callable[..., AssetCheckResult], description: str
) -> AssetChecksDefinition:
    """An asset check partitioned like the tool's report, one evaluation per scope."""
    with warnings.catch_warnings():
        # Partitioned checks are a Dagster preview; its warning would repeat in every process.
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return asset_check(
            asset=report_asset_key(tool),
            name=check.__name__,
            partitions_def=scopes_partitions(tool),
            description=description,
        )(check)


def freshness_metadata(state: ScopeState, now: float) -> dict[str, Any]:
    return {
        "utilisation": state.utilisation,
        "report_age_s": -1.0 if state.header is None else round(state.age_s(now), 1),
        "source_changed": state.source_changed,
        "report_missing": state.header is None,
    }
