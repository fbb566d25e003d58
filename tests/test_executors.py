"""The executor of each run: chosen from the scope's last plan, set in the run's config."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import run_partition
from dagster import build_sensor_context, execute_job

from precompute_assets.core.db import connect, sqlite_url
from precompute_assets.core.settings import ExecutorSettings, SettingsError
from precompute_assets.demo.source import touch_space
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.executors import execution_run_config, executor_for
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.runs import report_job

TOOL = "unused_fields"


def _executor(run_config: dict) -> str:
    [name] = run_config["execution"]["config"]
    return name


def test_small_and_unknown_scopes_run_in_process_large_ones_as_set():
    settings = ExecutorSettings(large_scope_entities=1_000, large_scope_executor="celery")
    assert executor_for(None, settings) == "in_process"
    assert executor_for(999, settings) == "in_process"
    assert executor_for(1_000, settings) == "celery"
    assert executor_for(5_000, ExecutorSettings(large_scope_entities=1_000)) == "multiprocess"


def test_executor_settings_come_from_the_environment_and_bad_ones_are_named():
    settings = ExecutorSettings.from_env(
        {
            "PRECOMPUTE_LARGE_SCOPE_ENTITIES": "250000",
            "PRECOMPUTE_LARGE_SCOPE_EXECUTOR": "celery",
            "PRECOMPUTE_CELERY_BROKER": "redis://127.0.0.1:6379/3",
        }
    )
    assert (settings.large_scope_entities, settings.large_scope_executor) == (250_000, "celery")
    config = execution_run_config("celery", settings)["execution"]["config"]["celery"]
    # The run's config names the variable: the URL and any password stay out of the run record.
    assert config == {"broker": {"env": "PRECOMPUTE_CELERY_BROKER"}}
    with pytest.raises(SettingsError, match=r"PRECOMPUTE_LARGE_SCOPE_EXECUTOR.*'k8s'"):
        ExecutorSettings.from_env({"PRECOMPUTE_LARGE_SCOPE_EXECUTOR": "k8s"})
    with pytest.raises(SettingsError, match="PRECOMPUTE_LARGE_SCOPE_ENTITIES"):
        ExecutorSettings.from_env({"PRECOMPUTE_LARGE_SCOPE_ENTITIES": "many"})


def test_the_refresh_sensor_gives_large_scopes_the_large_scope_executor(
    own_source, instance, tools, monkeypatch
):
    precompute = own_source
    defs = build_definitions(tools, precompute)
    monkeypatch.setenv("PRECOMPUTE_REFRESH_THRESHOLD", "0.01")  # every scope is high priority
    scopes = _scopes(precompute, tools)
    instance.add_dynamic_partitions(f"{TOOL}_scopes", scopes)
    for scope in scopes[:2]:
        assert run_partition(defs, TOOL, scope, instance).success
    counts = {s: precompute.store().header(TOOL, s).entity_count for s in scopes[:2]}
    small, large = sorted(counts, key=counts.get)
    assert counts[small] < counts[large]
    monkeypatch.setenv("PRECOMPUTE_LARGE_SCOPE_ENTITIES", str(counts[large]))
    for scope in (small, large):
        touch_space(precompute.source_url, scope)

    context = build_sensor_context(instance=instance, resources={"precompute": precompute})
    result = defs.resolve_sensor_def(f"{TOOL}_refresh_sensor")(context)

    order = instance.get_dynamic_partitions(f"{TOOL}_scopes")

    def covered(request) -> list[str]:
        if request.partition_key is not None:
            return [request.partition_key]
        first = order.index(request.tags["dagster/asset_partition_range_start"])
        return order[first : order.index(request.tags["dagster/asset_partition_range_end"]) + 1]

    chosen = {scope: _executor(r.run_config) for r in result.run_requests for scope in covered(r)}
    assert chosen[large] == "multiprocess"
    assert chosen[small] == "in_process"
    never_run = set(scopes[2:]) & set(chosen)
    assert never_run and {chosen[scope] for scope in never_run} == {"in_process"}
    # The large scope has a run of its own; small ones share theirs.
    [request] = [r for r in result.run_requests if large in covered(r)]
    assert request.partition_key == large
    assert max(len(covered(r)) for r in result.run_requests) > 1
    start_method = request.run_config["execution"]["config"]["multiprocess"]["start_method"]
    assert "forkserver" in start_method


@pytest.mark.slow
def test_a_run_with_the_multiprocess_config_gives_the_in_process_report(
    own_source, instance, tools, tmp_path
):
    scope = _scopes(own_source, tools)[0]
    settings = {"source_url": own_source.source_url, "batch_size": 1_000, "max_shards": 3}
    instance.add_dynamic_partitions(f"{TOOL}_scopes", [scope])
    reports = {}
    for name in ("in_process", "multiprocess"):
        store_url = sqlite_url(tmp_path / f"{name}.db")
        result = execute_job(
            report_job(TOOL, store_url=store_url, **settings),
            instance=instance,
            run_config=execution_run_config(name, ExecutorSettings()),
            tags={"dagster/partition": scope},
        )
        assert result.success
        steps = {e.step_key for e in result.all_events if e.pid is not None}
        pids = {e.pid for e in result.all_events if e.step_key in steps and e.pid is not None}
        assert (len(pids) > 1) == (name == "multiprocess"), (name, pids)
        reports[name] = PrecomputeResource(store_url=store_url).store().read(TOOL, scope)[1]
    pd.testing.assert_frame_equal(reports["multiprocess"], reports["in_process"])


def _scopes(precompute: PrecomputeResource, tools) -> list[str]:
    with connect(precompute.source_engine()) as source:
        return list(tools[TOOL].catalogue.scopes(source))
