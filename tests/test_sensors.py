"""Sensors and the schedule, ticked with build_sensor_context against a real instance."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import run_partition
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterRunStatus,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from precompute_assets.contract import REPORT_COLUMNS
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.refresh import scope_states
from precompute_assets.core.report_store import ReportHeader, headers
from precompute_assets.demo.source import DemoScale, generate_source, touch_space
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

TOOL = "unused_fields"
PARTITIONS = f"{TOOL}_scopes"


@pytest.fixture
def own(own_source, tools):
    return own_source, build_definitions(tools, own_source)


def _tick(defs, name, instance, precompute, cursor=None):
    context = build_sensor_context(
        instance=instance, resources={"precompute": precompute}, cursor=cursor
    )
    return defs.resolve_sensor_def(name)(context)


def _refreshes(result):
    """The tick's refresh runs."""
    return [r for r in result.run_requests if r.asset_selection]


def _scopes_of(request, instance) -> list[str]:
    """The scopes a run request covers: its partition, or its range of partitions."""
    if request.partition_key is not None:
        return [request.partition_key]
    order = instance.get_dynamic_partitions(PARTITIONS)
    first = order.index(request.tags["dagster/asset_partition_range_start"])
    return order[first : order.index(request.tags["dagster/asset_partition_range_end"]) + 1]


def _refreshed(result, instance) -> list[tuple[str, str]]:
    """(scope, reason) of every scope the tick asks to refresh, run by run."""
    return [
        (scope, request.tags["precompute/reason"])
        for request in _refreshes(result)
        for scope in _scopes_of(request, instance)
    ]


def _apply(result, instance) -> None:
    """What the daemon does with a tick's partition requests."""
    for request in result.dynamic_partitions_requests:
        keys = list(request.partition_keys)
        if type(request).__name__ == "AddDynamicPartitionsRequest":
            instance.add_dynamic_partitions(PARTITIONS, keys)
        else:
            for key in keys:
                instance.delete_dynamic_partition(PARTITIONS, key)


def _freshness_scopes(result) -> list[str] | None:
    """The scopes a freshness tick asks the freshness job to record, or None if it asks nothing."""
    if not result.run_requests:
        return None
    [request] = result.run_requests
    return request.run_config["ops"][f"{TOOL}_record_freshness"]["config"]["scopes"]


def _states(precompute, tools):
    return {
        s.scope: s
        for s in scope_states(tools[TOOL], precompute.source_engine(), precompute.store())
    }


def _register_all(instance, precompute, tools, defs):
    """Every scope of the source registered, as the discovery sensor's first tick does."""
    _apply(_tick(defs, f"{TOOL}_discovery_sensor", instance, precompute), instance)
    return sorted(_states(precompute, tools))


def _commit_fake_report(precompute, scope, watermark, computed_at, generation=1):
    """A header as a past run would have left it (rows do not matter to the policy)."""
    header = ReportHeader(TOOL, scope, generation, computed_at, watermark, 1, 0, 0, 1, 1, 0.1)
    precompute.store().commit(header, pd.DataFrame(columns=list(REPORT_COLUMNS)))


def test_discovery_adds_new_scopes_removes_gone_ones_and_requests_first_reports(
    own, instance, tools, monkeypatch
):
    precompute, defs = own
    monkeypatch.setenv("PRECOMPUTE_REFRESH_BUDGET", "3")
    instance.add_dynamic_partitions(PARTITIONS, ["gone-s999"])
    _commit_fake_report(precompute, "gone-s999", "w", 1.0)

    result = _tick(defs, f"{TOOL}_discovery_sensor", instance, precompute)

    states = _states(precompute, tools)
    [add, delete] = result.dynamic_partitions_requests
    # Added highest utilisation first, so the first reports are neighbours.
    by_utilisation = sorted(states, key=lambda s: (-states[s].utilisation, s))
    assert list(add.partition_keys) == by_utilisation
    assert list(delete.partition_keys) == ["gone-s999"]
    assert precompute.store().header(TOOL, "gone-s999") is None
    _apply(result, instance)
    # The first reports, within the budget, highest utilisation first: new scopes are small
    # until their first report says otherwise, so the three share one run.
    [run] = result.run_requests
    assert _scopes_of(run, instance) == by_utilisation[:3]
    assert run.tags["precompute/reason"] == "missing"

    # Known now: the next tick adds nothing and asks for nothing.
    again = _tick(defs, f"{TOOL}_discovery_sensor", instance, precompute)
    assert again.dynamic_partitions_requests == [] and again.run_requests == []


def test_refresh_orders_by_priority_sets_tags_and_respects_the_budget(
    own, instance, tools, monkeypatch
):
    precompute, defs = own
    monkeypatch.setenv("PRECOMPUTE_REFRESH_BUDGET", "2")
    _register_all(instance, precompute, tools, defs)
    states = _states(precompute, tools)

    result = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)

    ranked = sorted(states.values(), key=lambda s: -s.utilisation)
    assert ranked[0].utilisation >= 0.7, "the demo source has scopes near their limits"
    assert _refreshed(result, instance) == [(s.scope, "missing") for s in ranked[:2]]
    [first] = _refreshes(result)
    assert first.tags["dagster/priority"] == str(round(ranked[0].utilisation * 100))
    assert first.tags["precompute/reason"] == "missing"
    # The run the asset page's Materialize launches: the report and its completeness check.
    assert first.job_name is None
    assert first.asset_selection == [AssetKey(f"{TOOL}_report")]
    assert first.asset_check_keys == [AssetCheckKey(AssetKey(f"{TOOL}_report"), "report_complete")]
    assert first.tags["dagster/max_runtime"] == str(precompute.executor_settings().max_runtime_s)


@pytest.mark.slow
def test_fresh_reports_are_left_alone_below_and_above_the_threshold(own, instance, tools):
    precompute, defs = own
    scopes = _register_all(instance, precompute, tools, defs)
    for scope in scopes:
        assert run_partition(defs, TOOL, scope, instance).success
    result = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)
    assert _refreshes(result) == []


@pytest.mark.slow
def test_a_moved_watermark_refreshes_a_high_scope_but_not_a_low_one(own, instance, tools):
    precompute, defs = own
    scopes = _register_all(instance, precompute, tools, defs)
    for scope in scopes:
        assert run_partition(defs, TOOL, scope, instance).success
    states = _states(precompute, tools)
    high = max(states.values(), key=lambda s: s.utilisation).scope
    low = min(states.values(), key=lambda s: s.utilisation).scope
    touch_space(precompute.source_url, high)
    touch_space(precompute.source_url, low)

    result = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)

    assert _refreshed(result, instance) == [(high, "changed")]
    # The same state gives the same run key: the daemon never launches that refresh twice.
    again = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)
    assert [r.run_key for r in _refreshes(again)] == [r.run_key for r in _refreshes(result)]


def test_reports_past_their_maximum_age_are_refreshed(own, instance, tools):
    precompute, defs = own
    scopes = _register_all(instance, precompute, tools, defs)
    states = _states(precompute, tools)
    high = max(states.values(), key=lambda s: s.utilisation).scope
    low = min(states.values(), key=lambda s: s.utilisation).scope
    now = time.time()
    for scope in scopes:
        _commit_fake_report(precompute, scope, states[scope].watermark, now)
    _commit_fake_report(precompute, high, states[high].watermark, now - 8 * 86_400)
    _commit_fake_report(precompute, low, states[low].watermark, now - 20 * 86_400)
    result = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)
    assert _refreshed(result, instance) == [(high, "aged")]

    _commit_fake_report(precompute, low, states[low].watermark, now - 31 * 86_400)
    result = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)
    assert set(_refreshed(result, instance)) == {(high, "aged"), (low, "aged")}


def test_no_request_for_a_scope_with_a_run_in_flight(own, instance, tools, monkeypatch):
    """In flight from the launchpad (the tool's job) or from a sensor or the asset page (the
    asset job): either way the scope waits."""
    precompute, defs = own
    monkeypatch.setenv("PRECOMPUTE_REFRESH_BUDGET", "1")
    _register_all(instance, precompute, tools, defs)
    asset_job = defs.resolve_implicit_global_asset_job_def()
    first = _refreshes(_tick(defs, f"{TOOL}_refresh_sensor", instance, precompute))[0]
    instance.create_run_for_job(
        defs.resolve_job_def(f"{TOOL}_job"),
        tags={"dagster/partition": first.partition_key},
        status=DagsterRunStatus.STARTED,
    )
    second = _refreshes(_tick(defs, f"{TOOL}_refresh_sensor", instance, precompute))[0]
    assert second.partition_key != first.partition_key
    # A run over a range of partitions, as a backfill's runs are, holds every scope in it.
    order = instance.get_dynamic_partitions(PARTITIONS)
    at = order.index(second.partition_key)
    instance.create_run_for_job(
        asset_job,
        asset_selection=frozenset({AssetKey(f"{TOOL}_report")}),
        tags={
            "dagster/asset_partition_range_start": order[at],
            "dagster/asset_partition_range_end": order[at + 1],
        },
        status=DagsterRunStatus.STARTING,
    )
    [third] = _refreshes(_tick(defs, f"{TOOL}_refresh_sensor", instance, precompute))
    assert third.partition_key not in (first.partition_key, *order[at : at + 2])


def _record_freshness(defs, instance, precompute, scopes):
    """Run the freshness job for ``scopes`` as the daemon would for the sensor's request."""
    job = defs.resolve_job_def(f"{TOOL}_freshness_job")
    config = {"ops": {f"{TOOL}_record_freshness": {"config": {"scopes": scopes}}}}
    result = job.execute_in_process(run_config=config, instance=instance)
    assert result.success
    return {e.partition: e for e in result.get_asset_check_evaluations()}


@pytest.mark.slow
def test_freshness_is_recorded_for_every_scope_when_it_changes(own, instance, tools):
    precompute, defs = own
    scopes = _register_all(instance, precompute, tools, defs)
    for scope in scopes:
        assert run_partition(defs, TOOL, scope, instance).success
    states = _states(precompute, tools)
    high = max(states.values(), key=lambda s: s.utilisation).scope
    low = min(states.values(), key=lambda s: s.utilisation).scope

    sensor = f"{TOOL}_freshness_sensor"

    # Nothing recorded yet: every scope is asked for, and recorded fresh.
    first = _tick(defs, sensor, instance, precompute)
    assert sorted(_freshness_scopes(first)) == scopes
    [request] = first.run_requests
    assert defs.resolve_sensor_def(sensor).job_name == f"{TOOL}_freshness_job"
    assert int(request.tags["dagster/priority"]) > 1_000, "ahead of every refresh"
    recorded = _record_freshness(defs, instance, precompute, _freshness_scopes(first))
    assert sorted(recorded) == scopes and all(e.passed for e in recorded.values())

    quiet = _tick(defs, sensor, instance, precompute)
    assert quiet.run_requests == []
    assert quiet.skip_reason.skip_message == (
        f"{len(scopes)} scopes; freshness recorded for every scope"
    )
    refresh = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)
    assert refresh.skip_reason.skip_message == (
        f"{len(scopes)} scopes, 0 due, 0 in flight, 0 over budget, 0 requested"
    )

    touch_space(precompute.source_url, high)
    touch_space(precompute.source_url, low)
    moved = _tick(defs, sensor, instance, precompute)
    assert sorted(_freshness_scopes(moved)) == sorted([high, low])
    stale = _record_freshness(defs, instance, precompute, _freshness_scopes(moved))
    assert {scope: e.passed for scope, e in stale.items()} == {high: False, low: False}
    # A stale report is an error near the limit, a warning below the threshold.
    assert stale[high].severity.value == "ERROR" and stale[low].severity.value == "WARN"
    assert stale[high].metadata["source_changed"].value is True

    # Once recorded, freshness is not asked for again; the high scope's refresh is.
    assert _freshness_scopes(_tick(defs, sensor, instance, precompute)) is None
    again = _tick(defs, f"{TOOL}_refresh_sensor", instance, precompute)
    assert _refreshed(again, instance) == [(high, "changed")]


def test_baseline_schedule_requests_aged_reports_of_low_scopes(own, instance, tools):
    precompute, defs = own
    scopes = _register_all(instance, precompute, tools, defs)
    states = _states(precompute, tools)
    now = time.time()
    for scope in scopes:
        _commit_fake_report(precompute, scope, states[scope].watermark, now)
    low = min(states.values(), key=lambda s: s.utilisation).scope
    _commit_fake_report(precompute, low, states[low].watermark, now - 45 * 86_400)

    context = build_schedule_context(instance=instance, resources={"precompute": precompute})
    requests = list(defs.resolve_schedule_def(f"{TOOL}_baseline_schedule")(context))

    assert [(r.partition_key, r.tags["precompute/reason"]) for r in requests] == [(low, "aged")]
    assert precompute.fleet().recorded_freshness(tools[TOOL], [low]) == {low: None}
    assert requests[0].asset_selection == [AssetKey(f"{TOOL}_report")]
    baseline = defs.resolve_schedule_def(f"{TOOL}_baseline_schedule")
    assert baseline.cron_schedule == "0 3 1 * *"
    assert baseline.job_name == "__ASSET_JOB", "the job an asset page's Materialize launches"


def test_removing_a_scope_from_the_source_removes_it_from_the_fleet(own, instance, tools):
    precompute, defs = own
    scopes = _register_all(instance, precompute, tools, defs)
    assert run_partition(defs, TOOL, scopes[0], instance).success
    with create_engine_for(precompute.source_url).begin() as source:
        source.execute(sa.text("DELETE FROM spaces WHERE key = :k"), {"k": scopes[0]})

    result = _tick(defs, f"{TOOL}_discovery_sensor", instance, precompute)

    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [[scopes[0]]]
    with precompute.store().engine.connect() as store:
        assert store.execute(sa.select(headers).where(headers.c.scope == scopes[0])).all() == []


def _statements_per_tick(tmp_path, tools, instance, spaces: int) -> dict[str, int]:
    source_url = sqlite_url(tmp_path / f"source-{spaces}.db")
    generate_source(source_url, DemoScale(tenants=2, spaces=spaces, work_items=spaces * 30))
    precompute = PrecomputeResource(
        source_url=source_url, store_url=sqlite_url(tmp_path / f"r-{spaces}.db")
    )
    defs = build_definitions(tools, precompute)
    _register_all(instance, precompute, tools, defs)
    statements: list[str] = []

    def record(_connection, _cursor, statement, *_args) -> None:
        statements.append(statement)

    for engine in (precompute.source_engine(), precompute.store().engine):
        sa.event.listen(engine, "before_cursor_execute", record)
    counts = {}
    for sensor in ("refresh", "freshness"):
        statements.clear()
        _tick(defs, f"{TOOL}_{sensor}_sensor", instance, precompute)
        counts[sensor] = len(statements)
    return counts


def test_a_tick_makes_the_same_few_queries_for_any_number_of_scopes(tmp_path, tools):
    with instance_for_test() as small, instance_for_test() as large:
        few = _statements_per_tick(tmp_path, tools, small, 6)
        many = _statements_per_tick(tmp_path, tools, large, 60)
    assert few == many
    # The cursor's read and move, the catalogue's changes, and a question or two to the store.
    assert max(many.values()) <= 14
