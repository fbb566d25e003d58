"""One run refreshes many scopes, as a backfill's runs do: every scope gets its own report,
materialisation and check, and a scope that fails stops none of the others."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import source_connection
from dagster import AssetKey, DagsterEventType
from ground_truth import comparable, unused_fields_truth

from precompute_assets.contract import Extent, ScopeNotFoundError
from precompute_assets.core.plan import JobPlan
from precompute_assets.core.run_work import spread_shards
from precompute_assets.orchestration.definitions import build_definitions
from tool_plugins.unused_fields import UnusedFields

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


class PickyFields(UnusedFields):
    """unused_fields, but its scan fails on one scope and its catalogue has lost another."""

    name = "picky_fields"
    failing_scan: str = ""
    vanished: str = ""

    def scan(self, source, batch):
        if batch.scope == self.failing_scan:
            raise ValueError("a bug in the tool for this scope")
        return super().scan(source, batch)


class VanishingSpaces(type(UnusedFields.catalogue)):
    def __init__(self, vanished: str) -> None:
        super().__init__(counted="space_fields", limit=700)
        self.vanished = vanished

    def initialise(self, source, scope):
        if scope == self.vanished:
            raise ScopeNotFoundError(f"no space {scope!r} in the source")
        return super().initialise(source, scope)


def _scopes(url: str) -> list[str]:
    with source_connection(url) as source:
        return list(source.execute(sa.text("SELECT key FROM spaces ORDER BY key")).scalars())


def _run_range(defs, tool_name: str, scopes: list[str], instance):
    instance.add_dynamic_partitions(f"{tool_name}_scopes", scopes)
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        tags={RANGE_START: scopes[0], RANGE_END: scopes[-1]},
        asset_selection=[AssetKey(f"{tool_name}_report")],
        raise_on_error=False,
    )


def _by_partition(events) -> dict[str, object]:
    return {event.partition: event for event in events}


@pytest.mark.slow
def test_one_run_commits_every_scope_with_its_own_event_and_check(tools, precompute, instance):
    defs = build_definitions(tools, precompute)
    scopes = _scopes(precompute.source_url)
    result = _run_range(defs, "unused_fields", scopes, instance)
    assert result.success
    [run] = instance.get_runs()
    materialisations = _by_partition(result.asset_materializations_for_node("unused_fields_report"))
    checks = _by_partition(result.get_asset_check_evaluations())
    assert set(materialisations) == set(checks) == set(scopes)
    with source_connection(precompute.source_url) as source:
        for scope in scopes:
            header, rows = precompute.store().read("unused_fields", scope)
            assert header.run_id == run.run_id
            truth = unused_fields_truth(source, scope, header.summary["params"])
            pd.testing.assert_frame_equal(comparable(rows), truth)
            metadata = materialisations[scope].metadata
            assert metadata["scope"].value == scope
            assert metadata["entities_scanned"].value == header.entity_count
            assert metadata["unused"].value == header.unused_count
            assert checks[scope].passed and checks[scope].check_name == "report_complete"
            # Its own compute, not the run's wall time shared by every scope.
            assert 0 < header.summary["compute_s"] <= header.duration_s
    assert set(instance.get_materialized_partitions(AssetKey("unused_fields_report"))) == set(
        scopes
    )
    # Steps are bounded by the executor's (one step at a time in-process), not by the number
    # of scopes.
    scan_steps = {
        event.step_key
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_SUCCESS and "scan_shard" in event.step_key
    }
    assert len(scan_steps) == 1 < len(scopes)


@pytest.mark.slow
def test_a_failing_scope_neither_fails_nor_delays_the_others(precompute, instance):
    tool = PickyFields()
    scopes = _scopes(precompute.source_url)
    tool.failing_scan = scopes[2]
    tool.catalogue = VanishingSpaces(vanished=scopes[4])
    defs = build_definitions({tool.name: tool}, precompute)
    result = _run_range(defs, tool.name, scopes, instance)

    assert not result.success
    failed = {scopes[2], scopes[4]}
    materialised = _by_partition(result.asset_materializations_for_node(f"{tool.name}_report"))
    assert set(materialised) == set(scopes) - failed
    assert all(check.passed for check in result.get_asset_check_evaluations())
    for scope in set(scopes) - failed:
        assert precompute.store().header(tool.name, scope) is not None
    for scope in failed:
        assert precompute.store().header(tool.name, scope) is None
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    message = failure.event_specific_data.error.message
    assert f"{scopes[2]} (scan)" in message and "a bug in the tool for this scope" in message
    assert f"{scopes[4]} (initialise)" in message and "no space" in message
    # Tool and data errors are not retried: the one failure above is the finalise step's, once.
    assert failure.step_key.endswith("_finalise")


def plan_of(scope: str, entities: int) -> JobPlan:
    """A job of ``entities`` batches of one key each."""
    extent = Extent(0, entities - 1, entities, "w")
    return JobPlan("tool", scope, 1, extent, batch_size=1, resumed=False, started_at=0.0)


def test_shards_of_many_scopes_are_spread_evenly_and_one_scope_keeps_its_own():
    small = [plan_of(f"s{index}", entities=size) for index, size in enumerate([5, 1, 3, 2, 4])]
    steps = spread_shards(small, max_shards=2, evictions_before=None)
    loads = [sum(len(task.shard.batch_indices) for task in step.tasks) for step in steps]
    assert len(steps) == 2 and sorted(loads) == [7, 8]
    assert sorted(task.plan.scope for step in steps for task in step.tasks) == [
        "s0",
        "s1",
        "s2",
        "s3",
        "s4",
    ]
    [large] = [plan_of("big", entities=10)]
    steps = spread_shards([large], max_shards=4, evictions_before=None)
    assert [[task.shard for task in step.tasks] for step in steps] == [
        [shard] for shard in large.shards(4)
    ]
    assert spread_shards([plan_of("empty", entities=0)], 4, None) == []
