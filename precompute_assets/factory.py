"""The asset factory: one partitioned, graph-backed report asset per tool.

``initialise -> plan_shards (DynamicOut) -> scan_shard (mapped) -> finalise (collect)``

Every scope is a dynamic partition. ``scan_shard`` checkpoints each batch in the ledger and skips
the batches already there, so a retried shard or a rerun after a crash never counts twice;
``finalise`` folds exactly the planned batches, rescanning any that is missing, and commits the
report in one transaction.
"""

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import (
    AssetKey,
    AssetsDefinition,
    Backoff,
    DynamicOut,
    DynamicOutput,
    DynamicPartitionsDefinition,
    Jitter,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    graph_asset,
    op,
)

from precompute_assets.contract import Batch, ReportTool, validate_report
from precompute_assets.db import write_transaction
from precompute_assets.ledger import Ledger
from precompute_assets.plan import JobPlan, Shard
from precompute_assets.report_store import ReportHeader
from precompute_assets.resources import PrecomputeResource

DEFAULT_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
GROUP_NAME = "precompute_reports"


class ScanError(RuntimeError):
    """A tool's scan raised; the message names the tool, scope and batch."""


@dataclass(frozen=True)
class ShardTask:
    plan: JobPlan
    shard: Shard


@dataclass(frozen=True)
class ShardResult:
    shard: int
    batches_scanned: int
    batches_skipped: int
    seconds: float


def report_asset_key(tool: ReportTool[Any]) -> AssetKey:
    return AssetKey(f"{tool.name}_report")


def scopes_partitions(tool: ReportTool[Any]) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{tool.name}_scopes")


def build_report_asset(
    tool: ReportTool[Any], retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
) -> AssetsDefinition:
    """The graph-backed asset ``<tool>_report``, partitioned by the tool's scopes."""

    @op(name=f"{tool.name}_initialise", out=Out(JobPlan))
    def initialise(context: OpExecutionContext, precompute: PrecomputeResource) -> JobPlan:
        scope = context.partition_key
        settings = precompute.settings()
        with precompute.source_engine().connect() as source:
            extent = tool.initialise(source, scope)
        plan = precompute.ledger().open_job(tool.name, scope, extent, settings.batch_size)
        context.log.info(
            f"{'resumed' if plan.resumed else 'opened'} job {plan.generation} for "
            f"{tool.name}/{scope}: {extent.entity_count} entities in {plan.batch_count} batches"
        )
        return plan

    @op(name=f"{tool.name}_plan_shards", out=DynamicOut(ShardTask))
    def plan_shards(context: OpExecutionContext, precompute: PrecomputeResource, plan: JobPlan):
        shards = plan.shards(precompute.settings().max_shards)
        # Dagster needs at least one output for the collect step to run; an empty scope gets one
        # shard with no batches.
        for shard in shards or [Shard(0, 0, -1)]:
            yield DynamicOutput(ShardTask(plan, shard), mapping_key=shard.mapping_key)

    @op(name=f"{tool.name}_scan_shard", retry_policy=retry_policy)
    def scan_shard(
        context: OpExecutionContext, precompute: PrecomputeResource, task: ShardTask
    ) -> Output[ShardResult]:
        started = time.perf_counter()
        plan, shard = task.plan, task.shard
        ledger = precompute.ledger()
        recorded = ledger.recorded(plan, shard.batch_indices)
        todo = [index for index in shard.batch_indices if index not in recorded]
        with precompute.source_engine().connect() as source:
            for index in todo:
                _scan_and_record(tool, source, ledger, plan, plan.batch(index))
        result = ShardResult(
            shard.index, len(todo), len(shard.batch_indices) - len(todo), _since(started)
        )
        context.log.info(
            f"shard {shard.index}: scanned {result.batches_scanned} batches, skipped "
            f"{result.batches_skipped} already in the ledger, in {result.seconds:.2f}s"
        )
        return Output(
            result,
            metadata={
                "batches_scanned": result.batches_scanned,
                "batches_skipped": result.batches_skipped,
                "first_batch": shard.first_batch,
                "last_batch": shard.last_batch,
                "seconds": result.seconds,
            },
        )

    @op(name=f"{tool.name}_finalise")
    def finalise(
        context: OpExecutionContext,
        precompute: PrecomputeResource,
        plan: JobPlan,
        shard_results: list[ShardResult],
    ) -> Output[dict[str, Any]]:
        ledger = precompute.ledger()
        contributions = ledger.contributions(plan)
        missing = [index for index in range(plan.batch_count) if index not in contributions]
        with precompute.source_engine().connect() as source:
            for index in missing:
                contributions[index] = _scan_and_record(
                    tool, source, ledger, plan, plan.batch(index)
                )
            total = tool.empty()
            for index in range(plan.batch_count):
                total = tool.merge(total, contributions[index])
            rows = validate_report(
                tool, plan.scope, tool.finalise(source, plan.scope, total, plan.extent.params)
            )
            utilisation = tool.utilisation(source, [plan.scope]).get(plan.scope)
        computed_at = time.time()
        header = ReportHeader(
            tool=tool.name,
            scope=plan.scope,
            generation=plan.generation,
            computed_at=computed_at,
            watermark=plan.extent.watermark,
            entity_count=plan.extent.entity_count,
            row_count=len(rows),
            unused_count=int(rows["unused"].sum()),
            batch_count=plan.batch_count,
            shard_count=len(shard_results),
            duration_s=round(computed_at - plan.started_at, 4),
            utilisation=utilisation,
            run_id=context.run_id,
            summary={
                "params": dict(plan.extent.params),
                "batches_folded": plan.batch_count,
                "batches_rescanned_at_finalise": len(missing),
                "resumed": plan.resumed,
            },
        )
        precompute.store().commit(header, rows)
        ledger.close_job(plan)
        context.log.info(
            f"committed {tool.name}/{plan.scope}: {header.row_count} rows, "
            f"{header.unused_count} unused, generation {plan.generation}"
        )
        return Output(
            {"scope": plan.scope, "rows": header.row_count, "unused": header.unused_count},
            metadata=_materialisation_metadata(header, rows, len(missing)),
        )

    @graph_asset(
        name=report_asset_key(tool).path[-1],
        partitions_def=scopes_partitions(tool),
        group_name=GROUP_NAME,
        description=tool.description or f"The {tool.name} report, one partition per scope.",
    )
    def report_asset():
        plan = initialise()
        results = plan_shards(plan).map(scan_shard)
        return finalise(plan, results.collect())

    return report_asset


def _scan_and_record(
    tool: ReportTool[Any], source: Any, ledger: Ledger, plan: JobPlan, batch: Batch
) -> Any:
    try:
        contribution = tool.scan(source, batch)
    except Exception as error:
        raise ScanError(
            f"tool {tool.name!r} failed to scan scope {batch.scope!r}, batch {batch.index} "
            f"(keys {batch.first_key}..{batch.last_key}): {error}"
        ) from error
    with write_transaction(ledger.engine) as connection:
        ledger.record(connection, plan, batch.index, contribution)
    return contribution


def _materialisation_metadata(
    header: ReportHeader, rows: pd.DataFrame, rescanned: int
) -> dict[str, Any]:
    return {
        "scope": header.scope,
        "entities_scanned": header.entity_count,
        "batches": header.batch_count,
        "shards": header.shard_count,
        "batches_rescanned_at_finalise": rescanned,
        "unused": header.unused_count,
        "dagster/row_count": header.row_count,
        "utilisation": MetadataValue.float(header.utilisation or 0.0),
        "duration_s": header.duration_s,
        "generation": header.generation,
        "watermark": header.watermark,
        "unused_preview": MetadataValue.md(
            rows.loc[rows["unused"], ["entity_id", "usage_count", "last_used"]]
            .head(20)
            .to_markdown(index=False)
            if header.unused_count
            else "none"
        ),
    }


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)
