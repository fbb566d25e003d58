"""The asset factory: one partitioned, graph-backed report asset per tool.

``initialise -> plan_shards (DynamicOut) -> scan_shard (mapped) -> finalise (collect)``

Every scope is a dynamic partition. ``scan_shard`` checkpoints each batch in the ledger and skips
the batches already there, so a retried shard or a rerun after a crash never counts twice, then
lifts its batches into one partial; ``finalise`` folds exactly the planned batches from the
partials and what a crash left unlifted, rescanning any that is missing, and commits the report
in one transaction.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
from dagster import (
    AssetKey,
    AssetsDefinition,
    Backoff,
    DynamicOut,
    DynamicOutput,
    DynamicPartitionsDefinition,
    Failure,
    Jitter,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    graph_asset,
    op,
)

from precompute_assets.contract import MalformedReportError, ReportTool, ScopeNotFoundError
from precompute_assets.core.errors import (
    ScanError,
    SchemaVersionError,
    SettingsError,
    StaleGenerationError,
    ToolContractError,
)
from precompute_assets.core.ledger import OPEN
from precompute_assets.core.phases import ShardResult, finalise_job, open_job, run_shard
from precompute_assets.core.plan import JobPlan, Shard, ShardTask
from precompute_assets.core.report_store import ReportHeader
from precompute_assets.core.text import markdown_table
from precompute_assets.orchestration.resources import PrecomputeResource

# The one retry policy of every op: a step that failed for a reason that may pass (the database,
# the network) is tried again after 1, 2, then 4 seconds.
DEFAULT_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
GROUP_NAME = "precompute_reports"
REPORT_IO_MANAGER = "precompute_reports"
# The concurrency pool of every scan step, across runs: an instance caps how many scans the source
# database serves at once (deploy/dagster.yaml; `dagster instance concurrency set`).
SOURCE_POOL = "precompute_source"
# Read by dagster.yaml's run monitoring: the most seconds a run may take.
MAX_RUNTIME_TAG = "dagster/max_runtime"
# Failures no retry can mend: the tool's code, the data, the configuration.
PERMANENT_ERRORS = (
    ScanError,
    MalformedReportError,
    ScopeNotFoundError,
    SchemaVersionError,
    SettingsError,
    StaleGenerationError,
    ToolContractError,
)


@contextmanager
def fail_at_once() -> Iterator[None]:
    """A tool or data error fails the step without its retries: trying again cannot mend it."""
    try:
        yield
    except PERMANENT_ERRORS as error:
        raise Failure(description=str(error), allow_retries=False) from error


def report_job_name(tool: ReportTool[Any]) -> str:
    """The tool's partitioned job, for the launchpad and the command line."""
    return f"{tool.name}_job"


def report_asset_key(tool: ReportTool[Any]) -> AssetKey:
    return AssetKey(f"{tool.name}_report")


def scopes_partitions(tool: ReportTool[Any]) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{tool.name}_scopes")


def build_report_asset(
    tool: ReportTool[Any], retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
) -> AssetsDefinition:
    """The graph-backed asset ``<tool>_report``, partitioned by the tool's scopes."""

    @op(name=f"{tool.name}_initialise", out=Out(JobPlan), retry_policy=retry_policy)
    def initialise(context: OpExecutionContext, precompute: PrecomputeResource) -> JobPlan:
        with fail_at_once():
            plan = open_job(
                tool,
                context.partition_key,
                precompute.source_engine(),
                precompute.ledger(),
                precompute.settings().batch_size,
            )
        context.log.info(
            f"{'resumed' if plan.resumed else 'opened'} job {plan.generation} for "
            f"{tool.name}/{plan.scope}: {plan.extent.entity_count} entities in "
            f"{plan.batch_count} batches"
        )
        return plan

    @op(name=f"{tool.name}_plan_shards", out=DynamicOut(ShardTask), retry_policy=retry_policy)
    def plan_shards(context: OpExecutionContext, precompute: PrecomputeResource, plan: JobPlan):
        shards = plan.shards(precompute.settings().max_shards)
        # Dagster needs at least one output for the collect step to run; an empty scope gets one
        # shard with no batches.
        for shard in shards or [Shard(0, 0, -1)]:
            yield DynamicOutput(
                ShardTask(plan, shard, precompute.ledger().evictions()),
                mapping_key=shard.mapping_key,
            )

    @op(name=f"{tool.name}_scan_shard", retry_policy=retry_policy, pool=SOURCE_POOL)
    def scan_shard(
        context: OpExecutionContext, precompute: PrecomputeResource, task: ShardTask
    ) -> Output[ShardResult]:
        shard = task.shard
        with fail_at_once():
            result = run_shard(
                tool, task.plan, shard, precompute.source_engine(), precompute.ledger()
            )
        done = (
            f"scanned {result.batches_scanned} batches, skipped {result.batches_skipped} "
            f"already in the ledger, in {result.seconds:.2f}s"
            + ("; lifted into one partial" if result.lifted else "")
            if result.job_status == OPEN
            else f"job {task.plan.generation} is {result.job_status}, scanned nothing"
        )
        context.log.info(f"shard {shard.index}: {done}")
        return Output(
            result,
            metadata={
                "batches_scanned": result.batches_scanned,
                "batches_skipped": result.batches_skipped,
                "lifted": result.lifted,
                "first_batch": shard.first_batch,
                "last_batch": shard.last_batch,
                "seconds": result.seconds,
            },
        )

    # The report is the asset's value, committed to the store here and loaded from it by the
    # IO manager. Not required: a run whose job another run committed materialises nothing.
    @op(
        name=f"{tool.name}_finalise",
        out=Out(is_required=False, io_manager_key=REPORT_IO_MANAGER),
        retry_policy=retry_policy,
    )
    def finalise(
        context: OpExecutionContext,
        precompute: PrecomputeResource,
        tasks: list[ShardTask],
        shard_results: list[ShardResult],
    ) -> Iterator[Output[pd.DataFrame]]:
        ledger = precompute.ledger()
        plan = tasks[0].plan
        with fail_at_once():
            report = finalise_job(
                tool,
                plan,
                precompute.source_engine(),
                ledger,
                precompute.store(),
                shard_count=len(shard_results),
                run_id=context.run_id,
            )
        if report is None:
            context.log.info(
                f"job {plan.generation} of {tool.name}/{plan.scope} is {ledger.status(plan)}: "
                "another run committed its report or a newer job replaced it; nothing committed"
            )
            return
        header = report.header
        context.log.info(
            f"committed {tool.name}/{plan.scope}: {header.row_count} rows, "
            f"{header.unused_count} unused, generation {plan.generation}"
            + (f"; rescanned lost batches {report.rescanned}" if report.rescanned else "")
        )
        metadata = _materialisation_metadata(tool, header, report.rows, len(report.rescanned))
        evictions = ledger.evictions()
        if evictions is not None and tasks[0].evictions_before is not None:
            metadata["cache_evictions"] = evictions - tasks[0].evictions_before
        yield Output(report.rows, metadata=metadata)

    @graph_asset(
        name=report_asset_key(tool).path[-1],
        partitions_def=scopes_partitions(tool),
        group_name=GROUP_NAME,
        description=tool.description or f"The {tool.name} report, one partition per scope.",
    )
    def report_asset():
        tasks = plan_shards(initialise())
        return finalise(tasks.collect(), tasks.map(scan_shard).collect())

    return report_asset


PREVIEW_ROWS = 20


def _materialisation_metadata(
    tool: ReportTool[Any], header: ReportHeader, rows: pd.DataFrame, rescanned: int
) -> dict[str, Any]:
    """What an operator reads on the materialisation: figures as people say them."""
    return {
        "scope": header.scope,
        "tenant": header.tenant or "",
        "entities_scanned": header.entity_count,
        "batches": header.batch_count,
        "shards": header.shard_count,
        "batches_rescanned_at_finalise": rescanned,
        "unused": header.unused_count,
        "dagster/row_count": header.row_count,
        "utilisation": MetadataValue.text(_utilisation(tool, header.utilisation)),
        "duration_s": header.duration_s,
        "generation": header.generation,
        "watermark": header.watermark,
        "source_anomalies": MetadataValue.json(header.summary.get("source_anomalies", {})),
        "unused_preview": MetadataValue.md(_unused_preview(rows, header.unused_count)),
    }


def _utilisation(tool: ReportTool[Any], utilisation: float | None) -> str:
    """``97% (682 of 700)``, or ``97%`` when the catalogue has no limit."""
    if utilisation is None:
        return "unknown"
    limit = tool.catalogue.limit
    of_limit = f" ({round(utilisation * limit)} of {limit})" if limit else ""
    return f"{utilisation:.0%}{of_limit}"


def _unused_preview(rows: pd.DataFrame, unused_count: int) -> str:
    """The first unused entities with their names, and how many of how many are shown."""
    if not unused_count:
        return "No unused entity."
    unused = rows.loc[rows["unused"]].head(PREVIEW_ROWS)
    table = [
        [
            entity_id,
            str(detail.get("name", "")),
            str(count),
            "never" if pd.isna(used) else f"{used:%Y-%m-%d}",
        ]
        for entity_id, detail, count, used in zip(
            unused["entity_id"],
            unused["detail"],
            unused["usage_count"],
            unused["last_used"],
            strict=True,
        )
    ]
    shown = f"Showing {len(table)} of {unused_count} unused."
    titles = ["entity", "name", "uses", "last used"]
    return f"{shown}\n\n{markdown_table(titles, table)}"
