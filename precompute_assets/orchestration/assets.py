"""The asset factory: one partitioned, graph-backed report asset per tool.

``initialise (the jobs, and their shards as a DynamicOut) -> scan_shard (mapped) -> finalise``

Every scope is a dynamic partition; a run refreshes one scope or a range of them
(``core/run_work.py``). ``scan_shard`` checkpoints each batch in the ledger and skips the batches
already there, so a retried shard or a rerun after a crash never counts twice, then lifts each
shard's batches into one partial; ``finalise`` folds exactly the planned batches from the
partials and what a crash left unlifted, rescanning any that is missing, and commits the report
in one transaction.
"""

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSpec,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
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
from sqlalchemy import Engine

from precompute_assets.contract import MalformedReportError, ReportTool, ScopeNotFoundError
from precompute_assets.core.completeness import check_completeness
from precompute_assets.core.errors import (
    ScanError,
    SchemaVersionError,
    SettingsError,
    StaleGenerationError,
    ToolContractError,
)
from precompute_assets.core.ledger import OPEN
from precompute_assets.core.phases import ShardResult, finalise_job, open_job, run_shard
from precompute_assets.core.plan import JobPlan
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.run_work import (
    RunPlan,
    RunShard,
    ScopeFailure,
    ShardOutcome,
    shard_counts,
    spread_shards,
)
from precompute_assets.core.settings import SCOPES_PER_RUN
from precompute_assets.core.text import markdown_table
from precompute_assets.orchestration.executors import concurrent_steps
from precompute_assets.orchestration.resources import PrecomputeResource

# The one retry policy of every op: a step that failed for a reason that may pass (the database,
# the network) is tried again after 1, 2, then 4 seconds.
DEFAULT_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
GROUP_NAME = "precompute_reports"
COMPLETENESS_CHECK = "report_complete"
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
    tool: ReportTool[Any],
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    scopes_per_run: int = SCOPES_PER_RUN,
) -> AssetsDefinition:
    """The graph-backed asset ``<tool>_report``, partitioned by the tool's scopes.

    A run refreshes one scope or a range of them (a backfill puts up to ``scopes_per_run`` in
    each run). Every scope gets its own report, materialisation and ``report_complete``
    evaluation; a scope that fails is set aside while the others are committed, and the run
    fails at its end naming it.
    """
    asset_key = report_asset_key(tool)
    partitions = scopes_partitions(tool)
    with warnings.catch_warnings():
        # Partitioned checks are a Dagster preview; its warning would repeat in every process.
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        completeness_spec = AssetCheckSpec(
            COMPLETENESS_CHECK,
            asset=asset_key,
            partitions_def=partitions,
            description="Every planned batch was folded and the report has one row per entity.",
        )

    # One step opens the jobs and cuts them into shards: a step of its own would cost its events
    # (start, input, output, success) and nothing else.
    @op(
        name=f"{tool.name}_initialise",
        out={"run_plan": Out(RunPlan), "shards": DynamicOut(RunShard)},
        retry_policy=retry_policy,
    )
    def initialise(
        context: OpExecutionContext, precompute: PrecomputeResource
    ) -> Iterator[Output[RunPlan] | DynamicOutput[RunShard]]:
        ledger, source = precompute.ledger(), precompute.source_engine()
        settings = precompute.settings()
        plans, failures, seconds = [], [], {}
        for scope in context.partition_keys:
            started = time.perf_counter()
            try:
                plan = open_job(tool, scope, source, ledger, settings.batch_size)
            except PERMANENT_ERRORS as error:
                failures.append(ScopeFailure(scope, "initialise", str(error)))
                continue
            seconds[scope] = round(time.perf_counter() - started, 4)
            plans.append(plan)
        if not plans:
            raise Failure(description=_failed(failures), allow_retries=False)
        context.log.info(_opened(tool, plans, failures))
        # More shards than the executor runs steps at once only add steps (one in-process).
        steps = concurrent_steps(context.run_config)
        max_shards = settings.max_shards if steps is None else min(settings.max_shards, steps)
        evictions = ledger.evictions()
        shards = spread_shards(plans, max_shards, evictions)
        yield Output(RunPlan(plans, failures, seconds, evictions, shard_counts(shards)), "run_plan")
        # Dagster needs at least one output for the collect step to run; a run of empty scopes
        # gets one step with nothing to scan.
        for work in shards or [RunShard(0, [])]:
            yield DynamicOutput(work, mapping_key=work.mapping_key, output_name="shards")

    @op(name=f"{tool.name}_scan_shard", retry_policy=retry_policy, pool=SOURCE_POOL)
    def scan_shard(
        context: OpExecutionContext, precompute: PrecomputeResource, work: RunShard
    ) -> Output[ShardOutcome]:
        source, ledger = precompute.source_engine(), precompute.ledger()
        threads = precompute.settings().scan_threads
        pool_limit = _source_pool_limit(context)
        threads = threads if pool_limit is None else max(1, min(threads, pool_limit))
        outcome = ShardOutcome()
        for task in work.tasks:
            scope = task.plan.scope
            if any(failure.scope == scope for failure in outcome.failures):
                continue
            try:
                result = run_shard(tool, task.plan, task.shard, source, ledger, threads)
            except PERMANENT_ERRORS as error:
                outcome.failures.append(ScopeFailure(scope, "scan", str(error)))
                continue
            outcome = _add_result(outcome, scope, result)
            if result.job_status != OPEN:
                context.log.info(
                    f"{scope}: job {task.plan.generation} is {result.job_status}, scanned nothing"
                )
        context.log.info(
            f"step {work.index}: {len(work.tasks)} shard(s) of "
            f"{len({task.plan.scope for task in work.tasks})} scope(s); scanned "
            f"{outcome.batches_scanned} batches, skipped {outcome.batches_skipped} already in "
            f"the ledger, lifted {outcome.shards_lifted} shard(s) into partials, in "
            f"{sum(outcome.seconds.values()):.2f}s"
        )
        return Output(
            outcome,
            metadata={
                "scopes": len(outcome.seconds),
                "batches_scanned": outcome.batches_scanned,
                "batches_skipped": outcome.batches_skipped,
                "shards_lifted": outcome.shards_lifted,
                "seconds": round(sum(outcome.seconds.values()), 4),
                "failed_scopes": len(outcome.failures),
            },
        )

    # The report is the asset's value, committed to the store here and loaded from it by the
    # IO manager. Each scope's materialisation and check are events of their own, so a run of
    # many scopes gives each its figures, and a failed or already committed scope none.
    @op(
        name=f"{tool.name}_finalise",
        out={
            "report": Out(is_required=False, io_manager_key=REPORT_IO_MANAGER),
            "complete": Out(is_required=False),
        },
        retry_policy=retry_policy,
    )
    def finalise(
        context: OpExecutionContext,
        precompute: PrecomputeResource,
        run_plan: RunPlan,
        outcomes: list[ShardOutcome],
    ) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
        source, ledger, store = precompute.source_engine(), precompute.ledger(), precompute.store()
        failures = [*run_plan.failures, *(f for outcome in outcomes for f in outcome.failures)]
        failed = {failure.scope for failure in failures}
        shards = run_plan.shards
        scanning = _seconds_by_scope(outcomes)
        committed = 0
        for plan in run_plan.plans:
            if plan.scope in failed:
                continue
            compute_s = run_plan.initialise_s.get(plan.scope, 0.0) + scanning.get(plan.scope, 0.0)
            try:
                report = finalise_job(
                    tool,
                    plan,
                    source,
                    ledger,
                    store,
                    shard_count=shards.get(plan.scope, 0),
                    run_id=context.run_id,
                    compute_s=compute_s,
                )
            except PERMANENT_ERRORS as error:
                failures.append(ScopeFailure(plan.scope, "finalise", str(error)))
                continue
            if report is None:
                context.log.info(
                    f"job {plan.generation} of {tool.name}/{plan.scope} is "
                    f"{ledger.status(plan)}: another run committed its report or a newer job "
                    "replaced it; nothing committed"
                )
                continue
            committed += 1
            metadata = _materialisation_metadata(tool, report.header, report.rows)
            metadata["batches_rescanned_at_finalise"] = len(report.rescanned)
            evictions = ledger.evictions()
            if evictions is not None and run_plan.evictions_before is not None:
                metadata["cache_evictions"] = evictions - run_plan.evictions_before
            yield AssetMaterialization(asset_key, partition=plan.scope, metadata=metadata)
            yield _completeness_evaluation(tool, plan.scope, store, source)
        context.log.info(
            f"committed {committed} of {len(context.partition_keys)} {tool.name} report(s)"
            + (f"; failed: {_failed(failures)}" if failures else "")
        )
        if failures:
            raise Failure(
                description=_failed(failures),
                metadata={"failed_scopes": [failure.scope for failure in failures]},
                allow_retries=False,
            )

    @graph_asset(
        name=asset_key.path[-1],
        partitions_def=partitions,
        group_name=GROUP_NAME,
        description=tool.description or f"The {tool.name} report, one partition per scope.",
        check_specs=[completeness_spec],
        backfill_policy=BackfillPolicy.multi_run(scopes_per_run),
    )
    def report_asset():
        run_plan, run_shards = initialise()
        report, complete = finalise(run_plan, run_shards.map(scan_shard).collect())
        return {"result": report, completeness_spec.get_python_identifier(): complete}

    return report_asset


def _source_pool_limit(context: OpExecutionContext) -> int | None:
    """The instance's limit on the source pool, if it has one: the scans the source serves at
    once, which one step's threads never exceed."""
    for pool in context.instance.event_log_storage.get_pool_limits():
        if pool.name == SOURCE_POOL:
            return pool.limit
    return None


def _add_result(outcome: ShardOutcome, scope: str, result: ShardResult) -> ShardOutcome:
    seconds = {**outcome.seconds, scope: outcome.seconds.get(scope, 0.0) + result.seconds}
    return replace(
        outcome,
        batches_scanned=outcome.batches_scanned + result.batches_scanned,
        batches_skipped=outcome.batches_skipped + result.batches_skipped,
        shards_lifted=outcome.shards_lifted + int(result.lifted),
        seconds=seconds,
    )


def _seconds_by_scope(outcomes: list[ShardOutcome]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for outcome in outcomes:
        for scope, spent in outcome.seconds.items():
            seconds[scope] = seconds.get(scope, 0.0) + spent
    return seconds


def _opened(tool: ReportTool[Any], plans: list[JobPlan], failures: list[ScopeFailure]) -> str:
    """One line for the opened jobs: a run of many scopes logs one, not one per scope."""
    if len(plans) == 1 and not failures:
        [plan] = plans
        return (
            f"{'resumed' if plan.resumed else 'opened'} job {plan.generation} for "
            f"{tool.name}/{plan.scope}: {plan.extent.entity_count} entities in "
            f"{plan.batch_count} batches"
        )
    resumed = sum(1 for plan in plans if plan.resumed)
    entities = sum(plan.extent.entity_count for plan in plans)
    return (
        f"opened {len(plans) - resumed} and resumed {resumed} {tool.name} jobs: {entities} "
        f"entities in {sum(plan.batch_count for plan in plans)} batches"
        + (f"; failed: {_failed(failures)}" if failures else "")
    )


def _failed(failures: list[ScopeFailure]) -> str:
    return f"{len(failures)} scope(s) failed: " + "; ".join(f.describe() for f in failures)


def _completeness_evaluation(
    tool: ReportTool[Any], scope: str, store: ReportStore, source: Engine
) -> AssetCheckEvaluation:
    """``report_complete`` of the report just committed, read back from the store."""
    found = check_completeness(tool, scope, store, source)
    metadata: dict[str, Any] = {"problem": "no report stored"}
    if found is not None:
        metadata = {**found.figures(), "examples": MetadataValue.json(found.examples())}
    return AssetCheckEvaluation(
        asset_key=report_asset_key(tool),
        check_name=COMPLETENESS_CHECK,
        passed=found is not None and found.passed,
        partition=scope,
        metadata=metadata,
    )


PREVIEW_ROWS = 20


def _materialisation_metadata(
    tool: ReportTool[Any], header: ReportHeader, rows: pd.DataFrame
) -> dict[str, Any]:
    """What an operator reads on the materialisation: figures as people say them."""
    return {
        "scope": header.scope,
        "tenant": header.tenant or "",
        "entities_scanned": header.entity_count,
        "batches": header.batch_count,
        "shards": header.shard_count,
        "compute_s": header.summary.get("compute_s", header.duration_s),
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
