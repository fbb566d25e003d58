"""The refresh loop under the real daemon: sensor ticks, freshness history, killed and runaway runs.

One ``dagster-webserver`` and one ``dagster-daemon`` for the module, on an on-disk instance made
from the project's ``dagster.yaml`` (queued runs, run retries, run monitoring; its poll interval
shortened to 2 s so that the test waits seconds, not minutes). The code location is
``tests/live_location.py``: the project's tools and ``slow_fields``, a tool whose scans take a
second per batch and log their process. Sensors tick every 5 s (``PRECOMPUTE_SENSOR_INTERVAL_S``).
Everything the UI would do goes through the webserver's GraphQL: turning a sensor on, launching
runs, reading ticks, runs and the check's history.

Wall time: about 3 minutes on 2 CPUs, most of it runs waiting for the 2 queue slots.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import source_connection
from dagster import DagsterInstance
from dagster_graphql import DagsterGraphQLClient
from ground_truth import comparable, unused_fields_truth
from live_dagster import LiveDagster, free_port, wait_for_webserver, wait_until
from processes import Server, daemon_command, server_group, webserver_command

from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.refresh import scope_states
from precompute_assets.core.registry import load_tools
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import Settings
from precompute_assets.demo.source import DemoScale, generate_source, touch_space
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.runs import materialise_scope, register_scopes

pytestmark = [pytest.mark.slow, pytest.mark.servers]

PROJECT = Path(__file__).resolve().parents[1]
SCALE = DemoScale(tenants=2, spaces=8, work_items=8_000, seed=5)
LOCATION = "live"
TOOL = "unused_fields"
SLOW = "slow_fields"
SCAN_S = 1.0
RUN_TIMEOUT_S = 180
ASSET_JOB = "__ASSET_JOB"  # Dagster's asset job: what an asset page's Materialize launches

SENSOR_QUERY = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 200) {
      status timestamp skipReason runIds error { message }
    } } }
    ... on PythonError { message }
  }
}
"""
START_SENSOR = """
mutation ($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""
RUNS_QUERY = """
query ($filter: RunsFilter) { runsOrError(filter: $filter) {
  __typename
  ... on Runs { results { runId jobName status startTime tags { key value } } }
} }
"""
CHECK_HISTORY = """
query ($assetKey: AssetKeyInput!, $partition: String) {
  assetCheckExecutions(assetKey: $assetKey, checkName: "report_fresh", partition: $partition,
                       limit: 50) {
    id runId status evaluation { severity }
  }
}
"""
RUN_EVENTS = """
query ($runId: ID!) { logsForRun(runId: $runId) {
  ... on EventConnection { events { __typename ... on MessageEvent { message } } }
} }
"""


@dataclass
class Deployment(LiveDagster):
    home: Path
    source_url: str
    store_url: str
    scan_log: Path
    processes: list[Server]
    earlier_runs: set[str]  # the runs that computed the first reports, before the servers

    def servers(self) -> list[Server]:
        return self.processes

    def sensor_ticks(self, sensor: str) -> list[dict[str, Any]]:
        selector = {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "sensorName": sensor,
        }
        found = self.query(SENSOR_QUERY, selector=selector)["sensorOrError"]
        if found["__typename"] != "Sensor":
            self.fail(f"no sensor {sensor}: {found}")
        return sorted(found["sensorState"]["ticks"], key=lambda tick: tick["timestamp"])

    def start_sensor(self, sensor: str) -> None:
        selector = {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "sensorName": sensor,
        }
        started = self.query(START_SENSOR, selector=selector)["startSensor"]
        if started.get("sensorState", {}).get("status") != "RUNNING":
            self.fail(f"could not start {sensor}: {started}")

    def runs(self, job: str | None = None) -> list[dict[str, Any]]:
        """The runs since the servers started (of ``job``), oldest first."""
        runs_filter = {"pipelineName": job} if job else {}
        result = self.query(RUNS_QUERY, filter=runs_filter)["runsOrError"]["results"]
        for run in result:
            run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
        fresh = [run for run in result if run["runId"] not in self.earlier_runs]
        return sorted(fresh, key=lambda run: run["startTime"] or float("inf"))

    def report_runs(self, tool: str) -> list[dict[str, Any]]:
        """Runs of the tool's report: the sensors' (the asset job, which the asset page's
        *Materialize* launches too) and the launchpad's (the tool's job)."""
        return [
            run
            for run in self.runs()
            if run["jobName"] == f"{tool}_job"
            or (run["jobName"] == ASSET_JOB and run["tags"].get("precompute/tool") == tool)
        ]

    def history(self, tool: str, scope: str) -> list[tuple[str, str | None]]:
        """``report_fresh`` evaluations of one scope, oldest first: (status, severity)."""
        executions = self.query(
            CHECK_HISTORY, assetKey={"path": [f"{tool}_report"]}, partition=scope
        )["assetCheckExecutions"]
        ordered = sorted(executions, key=lambda execution: int(execution["id"]))
        return [(e["status"], (e["evaluation"] or {}).get("severity")) for e in ordered]

    def wait_for_runs_to_end(
        self, of: str | Callable[[], list[dict[str, Any]]], count: int
    ) -> list[dict[str, Any]]:
        """Until ``of`` (a job's name, or what lists the runs) has ``count`` runs and none of
        them is queued or running."""
        found = of if callable(of) else (lambda: self.runs(of))

        def ended() -> list[dict[str, Any]] | None:
            self.check_running()
            runs = found()
            done = len(runs) >= count and all(
                run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs
            )
            return runs if done else None

        return wait_until(ended, RUN_TIMEOUT_S, lambda: f"{found()}\n{self.logs()}", 1.0)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("daemon_home")
    config = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    config["run_monitoring"]["poll_interval_seconds"] = 2
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    workspace = home / "workspace.yaml"
    location = {
        "relative_path": str(PROJECT / "tests" / "live_location.py"),
        "working_directory": str(PROJECT),
        "location_name": LOCATION,
    }
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": location}]}))

    source_url, store_url = sqlite_url(home / "source.db"), sqlite_url(home / "reports.db")
    generate_source(source_url, SCALE)
    scan_log = home / "scans.log"
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PRECOMPUTE_")},
        "DAGSTER_HOME": str(home),
        "PRECOMPUTE_SOURCE_URL": source_url,
        "PRECOMPUTE_STORE_URL": store_url,
        "PRECOMPUTE_BATCH_SIZE": "500",
        "PRECOMPUTE_MAX_SHARDS": "1",
        "PRECOMPUTE_SENSOR_INTERVAL_S": "5",
        "SLOW_FIELDS_SCAN_S": str(SCAN_S),
        "SLOW_FIELDS_LOG": str(scan_log),
    }
    earlier_runs = _compute_every_report(home, source_url, store_url)

    port = free_port()
    with ExitStack() as stack:
        webserver = stack.enter_context(
            server_group("webserver", webserver_command(port, workspace), env, home, PROJECT)
        )
        daemon = stack.enter_context(
            server_group("daemon", daemon_command(workspace), env, home, PROJECT)
        )
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        deployed = Deployment(
            client, port, home, source_url, store_url, scan_log, [webserver, daemon], earlier_runs
        )
        wait_for_webserver(deployed)
        yield deployed


def _compute_every_report(home: Path, source_url: str, store_url: str) -> set[str]:
    """Every scope's report, as the demo computes them, before the servers start; their runs."""
    tools = {TOOL: load_tools(autoload=False)[TOOL]}
    precompute = PrecomputeResource(source_url=source_url, store_url=store_url, batch_size=500)
    defs = build_definitions(tools, precompute)
    with DagsterInstance.from_config(str(home)) as instance:
        with source_connection(source_url) as source:
            scopes = list(tools[TOOL].catalogue.scopes(source))
        register_scopes(instance, tools[TOOL], scopes)
        instance.add_dynamic_partitions(f"{SLOW}_scopes", scopes)
        instance.add_dynamic_partitions("failing_fields_scopes", scopes)
        results = [materialise_scope(defs, tools[TOOL], scope, instance) for scope in scopes]
    assert all(result.success for result in results)
    return {result.run_id for result in results}


def _scopes_by_utilisation(deployment: Deployment) -> list[str]:
    tool = load_tools(autoload=False)[TOOL]
    states = scope_states(
        tool,
        create_engine_for(deployment.source_url, read_only=True),
        ReportStore(create_engine_for(deployment.store_url, read_only=True)),
    )
    return [state.scope for state in sorted(states, key=lambda s: -s.utilisation)]


def _largest_scope(source_url: str) -> str:
    """The scope with the most work items: eight batches, eight seconds of slow scans."""
    with source_connection(source_url) as source:
        return source.exec_driver_sql(
            "SELECT s.key FROM spaces s JOIN work_items w ON w.space_id = s.id"
            " GROUP BY s.key ORDER BY COUNT(*) DESC LIMIT 1"
        ).scalar()


def _space_id(source_url: str, scope: str) -> int:
    with source_connection(source_url) as source:
        return source.exec_driver_sql("SELECT id FROM spaces WHERE key = ?", (scope,)).scalar()


def _edit_by_hand(source_url: str, statement: str, *params: Any) -> None:
    """As another application would: plain sqlite3, no framework code."""
    path = source_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        assert connection.execute(statement, params).rowcount > 0


def _wait_for_freshness_runs(deployment: Deployment, count: int) -> None:
    runs = deployment.wait_for_runs_to_end(f"{TOOL}_freshness_job", count)
    assert {run["status"] for run in runs} == {"SUCCESS"}, runs


def test_the_sensors_tick_green_and_record_every_change_of_freshness(
    deployment: Deployment,
):
    high, *_, low = _scopes_by_utilisation(deployment)
    refresh, freshness = f"{TOOL}_refresh_sensor", f"{TOOL}_freshness_sensor"
    deployment.start_sensor(freshness)
    deployment.start_sensor(refresh)

    # First ticks: nothing was recorded, so one freshness run records every scope fresh; then
    # both sensors have nothing to do and say why.
    _wait_for_freshness_runs(deployment, 1)
    for sensor, reason in [
        (freshness, "8 scopes; freshness recorded for every scope"),
        (refresh, "8 scopes, 0 due, 0 in flight, 0 over budget, 0 requested"),
    ]:
        wait_until(
            lambda sensor=sensor, reason=reason: [
                tick
                for tick in deployment.sensor_ticks(sensor)
                if tick["status"] == "SKIPPED" and tick["skipReason"] == reason
            ],
            60,
            lambda sensor=sensor: str(deployment.sensor_ticks(sensor)),
        )

    # Flip 1: users add work items to the high scope and the low one. The high one is
    # refreshed (and recorded stale, then fresh again); the low one is recorded stale.
    touch_space(deployment.source_url, high, items=3)
    touch_space(deployment.source_url, low, items=3)
    refreshes = deployment.wait_for_runs_to_end(lambda: deployment.report_runs(TOOL), 1)
    assert [
        (r["tags"]["dagster/partition"], r["tags"]["precompute/reason"]) for r in refreshes
    ] == [(high, "changed")]
    assert refreshes[0]["status"] == "SUCCESS"
    # The job the asset page's Materialize launches, as the Runs page shows it.
    assert refreshes[0]["jobName"] == ASSET_JOB
    wait_until(
        lambda: (
            deployment.history(TOOL, high)[-1][0] == "SUCCEEDED"
            and deployment.history(TOOL, low)[-1][0] == "FAILED"
        ),
        90,
        lambda: f"{deployment.history(TOOL, high)} {deployment.history(TOOL, low)}",
    )

    # Flip 2: the low scope's report is refreshed from the launchpad; its freshness comes back.
    run_id = deployment.client.submit_job_execution(f"{TOOL}_job", tags={"dagster/partition": low})
    wait_until(
        lambda: deployment.history(TOOL, low)[-1][0] == "SUCCEEDED",
        90,
        lambda: f"{deployment.history(TOOL, low)} run {run_id}",
    )

    # Flip 3: someone removes the low scope's screens by hand in SQL.
    _edit_by_hand(
        deployment.source_url,
        "DELETE FROM space_screens WHERE space_id = ?",
        _space_id(deployment.source_url, low),
    )
    wait_until(
        lambda: deployment.history(TOOL, low)[-1][0] == "FAILED",
        90,
        lambda: f"{deployment.history(TOOL, low)}",
    )

    # One evaluation per change of freshness, the low scope's a warning, the high one's an error.
    assert deployment.history(TOOL, low) == [
        ("SUCCEEDED", "WARN"),
        ("FAILED", "WARN"),
        ("SUCCEEDED", "WARN"),
        ("FAILED", "WARN"),
    ]
    high_history = [status for status, _ in deployment.history(TOOL, high)]
    assert high_history[0] == "SUCCEEDED" and high_history[-1] == "SUCCEEDED"
    assert all(a != b for a, b in itertools.pairwise(high_history))
    assert all(severity == "ERROR" for _, severity in deployment.history(TOOL, high)[1:])
    # Every tick succeeded or said why it skipped; the high scope was refreshed once only.
    for sensor in (refresh, freshness):
        ticks = deployment.sensor_ticks(sensor)
        assert len(ticks) >= 5 and {t["status"] for t in ticks} <= {"SUCCESS", "SKIPPED"}, ticks
    refreshed = [r["tags"]["dagster/partition"] for r in deployment.report_runs(TOOL)]
    assert sorted(refreshed) == sorted([high, low])


def _scans(deployment: Deployment) -> list[tuple[int, int]]:
    if not deployment.scan_log.exists():
        return []
    lines = deployment.scan_log.read_text().split()
    return [(int(pid), int(batch)) for pid, batch in zip(lines[::2], lines[1::2], strict=True)]


def test_a_killed_run_is_marked_failed_and_retried_from_the_ledger(deployment: Deployment):
    scope = _largest_scope(deployment.source_url)
    first = deployment.client.submit_job_execution(f"{SLOW}_job", tags={"dagster/partition": scope})
    # Mid-scan: two batches started, the first of them checkpointed in the ledger.
    scans = wait_until(
        lambda: len(_scans(deployment)) >= 2 and _scans(deployment), 120, deployment.logs, 0.2
    )
    pid = scans[0][0]
    os.kill(pid, signal.SIGKILL)

    runs = deployment.wait_for_runs_to_end(f"{SLOW}_job", 2)
    [killed] = [run for run in runs if run["runId"] == first]
    [retry] = [run for run in runs if run["tags"].get("dagster/parent_run_id") == first]
    assert killed["status"] == "FAILURE" and retry["status"] == "SUCCESS", runs

    done = _scans(deployment)
    before = {batch for p, batch in done if p == pid}
    after = {batch for p, batch in done if p != pid}
    header, rows = ReportStore(create_engine_for(deployment.store_url)).read(SLOW, scope)
    assert before | after == set(range(header.batch_count))
    # Only the batches the kill interrupted were scanned twice, the last one each scan thread
    # took: the rest came from the ledger.
    threads = Settings.from_env({}).scan_threads
    assert before & after <= set(sorted(before)[-threads:])
    with source_connection(deployment.source_url) as source:
        truth = unused_fields_truth(source, scope, header.summary["params"])
    pd.testing.assert_frame_equal(comparable(rows), truth)


def test_a_run_past_its_maximum_runtime_is_stopped(deployment: Deployment):
    scope = _largest_scope(deployment.source_url)
    started = time.monotonic()
    run_id = deployment.client.submit_job_execution(
        f"{SLOW}_job", tags={"dagster/partition": scope, "dagster/max_runtime": "3"}
    )

    def ended() -> dict[str, Any] | None:
        [run] = [run for run in deployment.runs(f"{SLOW}_job") if run["runId"] == run_id]
        return run if run["status"] in ("FAILURE", "CANCELED") else None

    run = wait_until(ended, 120, deployment.logs)
    assert time.monotonic() - started < 60, "stopped within seconds of its deadline"
    messages = [
        event.get("message", "")
        for event in deployment.query(RUN_EVENTS, runId=run_id)["logsForRun"]["events"]
    ]
    assert any("maximum runtime of 3 seconds" in message for message in messages), messages
    assert run["status"] == "FAILURE", run


def test_a_run_that_failed_on_a_tool_error_is_not_retried(deployment: Deployment):
    """Run retries are for crashed runs: a tool's bug failed its step, which no retry mends."""
    scope = _largest_scope(deployment.source_url)
    run_id = deployment.client.submit_job_execution(
        "failing_fields_job", tags={"dagster/partition": scope}
    )
    [run] = deployment.wait_for_runs_to_end("failing_fields_job", 1)
    assert (run["runId"], run["status"]) == (run_id, "FAILURE")
    # The retry daemon looks at failures every few seconds; a retry would be there by now.
    time.sleep(20)
    assert [r["runId"] for r in deployment.runs("failing_fields_job")] == [run_id]
