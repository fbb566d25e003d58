"""Reports materialised through a real Dagster instance equal an independent SQL ground truth."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import run_partition, source_connection
from dagster import DagsterEventType, asset, materialize
from ground_truth import comparable, unused_fields_truth, unused_work_types_truth

from precompute_assets.core.window import reference_params
from precompute_assets.orchestration.assets import build_report_asset, scopes_partitions
from precompute_assets.orchestration.definitions import build_definitions, report_resources
from tool_plugins.unused_fields import UnusedFields
from tool_plugins.unused_work_types import UnusedWorkTypes


def _all_scopes(source_url: str) -> list[str]:
    with source_connection(source_url) as source:
        return [key for (key,) in source.execute(sa.text("SELECT key FROM spaces ORDER BY key"))]


def test_materialize_one_partition_commits_the_report(tools, precompute, instance):
    tool = tools["unused_fields"]
    scope = _all_scopes(precompute.source_url)[0]
    instance.add_dynamic_partitions("unused_fields_scopes", [scope])
    result = materialize(
        [build_report_asset(tool)],
        partition_key=scope,
        instance=instance,
        resources=report_resources(precompute),
    )
    assert result.success
    [materialisation] = result.asset_materializations_for_node("unused_fields_report")
    metadata = materialisation.metadata
    header, rows = precompute.store().read("unused_fields", scope)
    assert metadata["entities_scanned"].value == header.entity_count > 0
    assert metadata["batches"].value == header.batch_count == -(-header.entity_count // 1_000)
    assert metadata["shards"].value == 1  # in-process: one step at a time, one shard
    assert metadata["unused"].value == header.unused_count == int(rows["unused"].sum())
    assert metadata["dagster/row_count"].value == len(rows)
    # Figures as people say them: a percentage of the limit, names, "never", how many shown.
    assert metadata["utilisation"].value == f"{len(rows) / 700:.0%} ({len(rows)} of 700)"
    preview = metadata["unused_preview"].value
    assert preview.startswith(f"Showing {min(20, header.unused_count)} of {header.unused_count}")
    first = rows[rows["unused"]].iloc[0]
    assert f"| {first['entity_id']} | {first['detail']['name']} |" in preview
    assert ("never" in preview) == rows[rows["unused"]].head(20)["last_used"].isna().any()
    assert materialisation.partition == scope


def test_a_downstream_asset_loads_the_report_from_the_store(tools, precompute, instance):
    """The report is the asset's value: an asset that depends on it gets its rows."""
    tool = tools["unused_fields"]
    scope = _all_scopes(precompute.source_url)[0]
    instance.add_dynamic_partitions("unused_fields_scopes", [scope])
    seen = {}

    @asset(partitions_def=scopes_partitions(tool))
    def unused_field_names(unused_fields_report: pd.DataFrame) -> list[str]:
        seen["rows"] = unused_fields_report
        unused = unused_fields_report[unused_fields_report["unused"]]
        return sorted(detail["name"] for detail in unused["detail"])

    report = build_report_asset(tool)
    resources = report_resources(precompute)
    assert materialize([report], partition_key=scope, instance=instance, resources=resources)
    # Only the downstream asset runs: its input comes from the report store, not a step output.
    assert materialize(
        [report.to_source_asset(), unused_field_names],
        partition_key=scope,
        instance=instance,
        resources=resources,
    ).success
    header, rows = precompute.store().read("unused_fields", scope)
    pd.testing.assert_frame_equal(seen["rows"], rows)
    assert seen["rows"].attrs["header"]["generation"] == header.generation
    assert header.unused_count == len(seen["rows"][seen["rows"]["unused"]]) > 0


@pytest.mark.slow
def test_reports_equal_ground_truth_for_every_space(defs, precompute, instance):
    scopes = _all_scopes(precompute.source_url)
    with source_connection(precompute.source_url) as source:
        for scope in scopes:
            for tool_name in ("unused_fields", "unused_work_types"):
                assert run_partition(defs, tool_name, scope, instance).success
            header, rows = precompute.store().read("unused_fields", scope)
            truth = unused_fields_truth(source, scope, header.summary["params"])
            pd.testing.assert_frame_equal(comparable(rows), truth)
            header, rows = precompute.store().read("unused_work_types", scope)
            truth = unused_work_types_truth(source, scope, header.summary["params"])
            pd.testing.assert_frame_equal(comparable(rows), truth)


def test_the_usage_window_starts_at_a_utc_midnight():
    """Two runs of one day over an unchanged space count the same values, seconds apart or not."""
    day = 86_400
    morning, evening = 1_793_491_200 + 3_600, 1_793_491_200 + 22 * 3_600
    params = reference_params(UnusedFields(), morning)
    assert params["since"] % day == 0
    assert params["since"] == (params["as_of"] // day - 730) * day
    assert reference_params(UnusedFields(), evening)["since"] == params["since"]
    assert "since" not in reference_params(UnusedWorkTypes(), morning), "no window, no since"


@pytest.mark.slow
def test_the_ground_truth_comparison_covers_the_edge_cases(defs, precompute, instance):
    """The spaces compared above include every edge case the definition turns on."""
    reports = {}
    for scope in _all_scopes(precompute.source_url):
        assert run_partition(defs, "unused_fields", scope, instance).success
        reports[scope] = precompute.store().read("unused_fields", scope)
    headers = {scope: header for scope, (header, _) in reports.items()}
    rows = pd.concat(
        [frame.assign(scope=scope) for scope, (_, frame) in reports.items()], ignore_index=True
    )
    origin = rows["detail"].map(lambda d: d["origin"])
    on_screen = rows["detail"].map(lambda d: d["on_screen"])
    since = {scope: h.summary["params"]["since"] for scope, h in headers.items()}
    cutoff = rows["scope"].map(lambda s: pd.Timestamp(since[s], unit="s", tz="UTC"))

    assert any(h.entity_count == 0 for h in headers.values()), "a space with no work items"
    last_used_long_ago = (rows["usage_count"] == 0) & rows["last_used"].notna()
    assert (last_used_long_ago & (rows["last_used"] < cutoff) & rows["unused"]).any()
    screen_only = (rows["usage_count"] == 0) & rows["last_used"].isna() & on_screen
    assert (screen_only & (origin == "admin") & ~rows["unused"]).any()
    for kind in ("system", "app"):
        never_used = (origin == kind) & (rows["usage_count"] == 0) & ~on_screen
        assert (never_used & ~rows["unused"]).any(), f"an unused-looking {kind} field is kept"


def _evaluation(result, check_name: str):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == check_name]
    return evaluation


class DroppingFields(UnusedFields):
    """Loses the first field from every report it finalises from a real scan."""

    name = "dropping_fields"

    def finalise(self, source, scope, total, params):
        rows = super().finalise(source, scope, total, params)
        return rows.iloc[1:] if total else rows


def test_asset_check_passes_on_a_complete_report(defs, precompute, instance):
    scope = _all_scopes(precompute.source_url)[1]
    result = run_partition(defs, "unused_fields", scope, instance)
    check = _evaluation(result, "report_complete")
    assert check.passed
    assert check.metadata["batches_folded"].value == check.metadata["batches_planned"].value > 0
    assert check.metadata["entities_missing"].value == 0
    # Freshness is recorded when it changes (the refresh sensor's freshness job), not by each run.
    assert "report_fresh" not in {e.check_name for e in result.get_asset_check_evaluations()}


def test_asset_check_flags_a_report_missing_an_entity(precompute, instance):
    tool = DroppingFields()
    dropping_defs = build_definitions({tool.name: tool}, precompute)
    scope = _all_scopes(precompute.source_url)[1]
    result = run_partition(dropping_defs, tool.name, scope, instance)
    check = _evaluation(result, "report_complete")
    assert not check.passed
    assert check.metadata["entities_missing"].value == 1


def test_shard_steps_report_their_batches(defs, precompute, instance):
    scope = _all_scopes(precompute.source_url)[0]
    result = run_partition(defs, "unused_fields", scope, instance)
    outputs = [
        event
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_OUTPUT and "scan_shard" in event.step_key
    ]
    header = precompute.store().header("unused_fields", scope)
    assert len(outputs) == header.shard_count
    scanned = sum(e.event_specific_data.metadata["batches_scanned"].value for e in outputs)
    assert scanned == header.batch_count


@pytest.mark.slow
def test_values_without_a_time_or_from_the_future_count_as_uses_and_are_listed(
    own_source, instance, tools
):
    defs = build_definitions(tools, own_source)
    path = own_source.source_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        edges = dict(connection.execute("SELECT key, value FROM source_meta"))
    scope, idle = edges["edge.space"], edges["edge.unused_work_type"]
    assert run_partition(defs, "unused_fields", scope, instance).success
    _, rows = own_source.store().read("unused_fields", scope)
    untimed, future = rows.loc[rows["unused"], "entity_id"].head(2)
    with sqlite3.connect(path) as connection:
        [item] = connection.execute(
            "SELECT MAX(w.id) FROM spaces s JOIN work_items w ON w.space_id = s.id WHERE s.key = ?",
            (scope,),
        ).fetchone()
        connection.executemany(
            "INSERT INTO field_values VALUES (?, ?, ?)",
            [(item, int(untimed), None), (item, int(future), 4_102_444_800)],
        )
        connection.execute(
            "UPDATE work_items SET work_type_id = ?, created_at = NULL WHERE id = ?", (idle, item)
        )

    assert run_partition(defs, "unused_fields", scope, instance).success
    header, rows = own_source.store().read("unused_fields", scope)
    by_id = rows.set_index("entity_id")
    for field, kind in ((untimed, "values_without_time"), (future, "values_after_as_of")):
        assert not by_id.loc[field, "unused"], "a field with a value is in use"
        assert by_id.loc[field, "usage_count"] == 1
        assert pd.isna(by_id.loc[field, "last_used"]), "no trustworthy last-used time"
        assert by_id.loc[field, "detail"]["anomalies"] == {kind: 1}
    anomalies = header.summary["source_anomalies"]
    assert anomalies["counts"] == {"values_after_as_of": 1, "values_without_time": 1}
    assert {example["entity_id"] for example in anomalies["examples"]} == {untimed, future}

    assert run_partition(defs, "unused_work_types", scope, instance).success
    header, rows = own_source.store().read("unused_work_types", scope)
    work_type = rows.set_index("entity_id").loc[idle]
    assert not work_type["unused"] and work_type["usage_count"] == 1
    assert header.summary["source_anomalies"]["counts"] == {"items_without_time": 1}
