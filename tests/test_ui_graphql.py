"""What the UI does, for real: launches and backfills through the webserver's GraphQL API.

The test starts ``dagster-webserver`` and ``dagster-daemon`` (each in its own process group) on
one on-disk instance: a temporary DAGSTER_HOME with the project's ``dagster.yaml``, so runs go
through the queued run coordinator (at most 2 at once) and only start because the daemon runs.
The source is a demo of 2 tenants, 4 spaces and 4,000 work items; each job has one shard
(``PRECOMPUTE_MAX_SHARDS=1``). Through GraphQL only, as the UI's buttons do, it launches:

- one run of ``unused_fields_job`` for the space with the most work items
  (``launchPipelineExecution``, via ``DagsterGraphQLClient.submit_job_execution``), and
- a partition backfill of ``unused_work_types_report`` over the 3 other spaces, the one with no
  work items included (``launchPartitionBackfill``), which the report asset's backfill policy
  runs as one run over the 3 partitions.

Both are launched before the daemon starts, which shows that nothing runs without it (the run
stays QUEUED, the backfill has no runs) and lets the daemon's first backfill tick come at once
instead of up to 30 s later. The test then proves that the daemon ran exactly 2 runs (1 + 1),
both successful, that the backfill completed with every partition materialised, each by its own
event, that the ``report_complete`` check passed for each partition in the run that
materialised it, and that the report store holds a report for every launched scope equal to an
independent SQL ground truth (``ground_truth.py``).

Wall time: 60-150 s on 2 CPUs, most of it the runs (in-process, the executor a run gets without
run config; 2 runs at a time) and the backfill daemon's 30-second ticks; startup is ~10 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import source_connection
from dagster_graphql import DagsterGraphQLClient
from ground_truth import comparable, unused_fields_truth, unused_work_types_truth
from live_dagster import (
    LiveDagster,
    free_port,
    run_errors,
    wait_for_run,
    wait_for_webserver,
    wait_until,
)
from processes import Server, daemon_command, server_group, webserver_command

from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.report_store import ReportStore
from precompute_assets.demo.source import DemoScale, generate_source

pytestmark = [pytest.mark.slow, pytest.mark.servers]

PROJECT = Path(__file__).resolve().parents[1]
SCALE = DemoScale(tenants=2, spaces=4, work_items=4_000, seed=3)

BACKFILL_TIMEOUT_S = 240
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS"}
BACKFILL_FAILED = {"FAILED", "COMPLETED_FAILED", "CANCELED"}

LAUNCH_BACKFILL_MUTATION = """
mutation ($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
BACKFILL_QUERY = """
query ($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      status
      error { message }
      runs { runId status tags { key value } }
    }
    ... on Error { message }
  }
}
"""
RUNS_QUERY = """
query { runsOrError {
  __typename
  ... on Runs { results { runId jobName status tags { key value } } }
  ... on Error { message }
} }
"""
CHECK_EXECUTIONS_QUERY = """
query ($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 50) {
    runId partition status
  }
}
"""

MATERIALISATIONS_QUERY = """
query ($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset { assetMaterializations(limit: 50) { partition runId } }
  }
}
"""


@dataclass
class Deployment(LiveDagster):
    """The webserver (the daemon once started), and what the test needs to talk to them."""

    webserver: Server
    source_url: str
    store_url: str
    env: dict[str, str]
    logs_dir: Path
    stack: ExitStack
    daemon: Server | None = None

    def servers(self) -> list[Server]:
        return [server for server in (self.webserver, self.daemon) if server]

    def start_daemon(self) -> Server:
        """``dagster-daemon run``: from now on queued runs start and backfills advance."""
        self.daemon = self.stack.enter_context(
            server_group("daemon", daemon_command(), self.env, self.logs_dir, PROJECT)
        )
        return self.daemon


def server_env(home: Path, source_url: str, store_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRECOMPUTE_")}
    return {
        **env,
        "DAGSTER_HOME": str(home),
        "PRECOMPUTE_HOME": str(home / "precompute"),
        "PRECOMPUTE_SOURCE_URL": source_url,
        "PRECOMPUTE_STORE_URL": store_url,
        "PRECOMPUTE_MAX_SHARDS": "1",
    }


def register_scopes(env: dict[str, str], scopes: list[str]) -> None:
    """Add the scopes as dynamic partitions of both tools in the servers' on-disk instance."""
    register = (
        "import sys; from dagster import DagsterInstance\n"
        "with DagsterInstance.get() as instance:\n"
        "    for name in ('unused_fields_scopes', 'unused_work_types_scopes'):\n"
        "        instance.add_dynamic_partitions(name, sys.argv[1:])\n"
    )
    subprocess.run(
        [sys.executable, "-c", register, *scopes], env=env, check=True, timeout=60, cwd=PROJECT
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A webserver on a fresh instance, a demo source and an empty report store.

    The daemon is left to the test (``start_daemon``); both are stopped at teardown, the daemon
    first.
    """
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_bytes((PROJECT / "dagster.yaml").read_bytes())
    source_url = sqlite_url(home / "source.db")
    store_url = sqlite_url(home / "reports.db")
    generate_source(source_url, SCALE)
    env = server_env(home, source_url, store_url)
    register_scopes(env, scopes_by_work_items(source_url))

    port = free_port()
    with ExitStack() as servers:
        webserver = servers.enter_context(
            server_group("webserver", webserver_command(port), env, home, PROJECT)
        )
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        deployed = Deployment(client, port, webserver, source_url, store_url, env, home, servers)
        wait_for_webserver(deployed)
        yield deployed


def scopes_by_work_items(source_url: str) -> list[str]:
    """Every space key, the one with the most work items first."""
    query = sa.text(
        "SELECT s.key FROM spaces s LEFT JOIN work_items w ON w.space_id = s.id"
        " GROUP BY s.key ORDER BY COUNT(w.id) DESC, s.key"
    )
    with source_connection(source_url) as source:
        return list(source.execute(query).scalars())


def launch_backfill(deployment: Deployment, asset: str, partitions: list[str]) -> str:
    """What *Materialize* on several partitions of an asset does: one partition backfill."""
    params = {"assetSelection": [{"path": [asset]}], "partitionNames": partitions}
    result = deployment.query(
        LAUNCH_BACKFILL_MUTATION, backfillParams={**params, "fromFailure": False}
    )["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        deployment.fail(f"launchPartitionBackfill answered {result}")
    return result["backfillId"]


def wait_for_backfill(deployment: Deployment, backfill_id: str) -> dict[str, Any]:
    def backfill() -> dict[str, Any]:
        return deployment.query(BACKFILL_QUERY, backfillId=backfill_id)["partitionBackfillOrError"]

    def finished() -> dict[str, Any] | None:
        state = backfill()
        if state["__typename"] != "PartitionBackfill":
            deployment.fail(f"backfill {backfill_id}: {state}")
        if state["status"] in BACKFILL_FAILED:
            errors = [run_errors(deployment, run["runId"]) for run in state["runs"]]
            deployment.fail(f"backfill {backfill_id} ended {state['status']}: {state}\n{errors}")
        return state if state["status"] in BACKFILL_DONE else None

    return wait_until(
        finished,
        BACKFILL_TIMEOUT_S,
        lambda: f"backfill {backfill_id}: {backfill()}\n{deployment.logs()}",
        every_s=2.0,
    )


def check_statuses(deployment: Deployment, asset: str, check: str) -> dict[str, tuple[str, str]]:
    """Per partition: the run and status of the check's execution, as the Checks tab lists them."""
    executions = deployment.query(
        CHECK_EXECUTIONS_QUERY, assetKey={"path": [asset]}, checkName=check
    )["assetCheckExecutions"]
    return {
        execution["partition"]: (execution["runId"], execution["status"])
        for execution in executions
    }


def materialisations(deployment: Deployment, asset: str) -> dict[str, str]:
    """Per partition: the run of its materialisation, as the asset's partitions list them."""
    events = deployment.query(MATERIALISATIONS_QUERY, assetKey={"path": [asset]})["assetOrError"]
    return {event["partition"]: event["runId"] for event in events["assetMaterializations"]}


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def test_a_launch_and_a_backfill_from_the_ui_compute_their_reports(deployment: Deployment):
    launched, *backfilled = scopes_by_work_items(deployment.source_url)
    assert len(backfilled) == 3

    # Launched as a user would, one after the other; the daemon is not running yet.
    run_id = deployment.client.submit_job_execution(
        "unused_fields_job", tags={"dagster/partition": launched}
    )
    backfill_id = launch_backfill(deployment, "unused_work_types_report", backfilled)

    # Without the daemon nothing moves: the run waits in the queue, the backfill has no runs.
    assert deployment.client.get_run_status(run_id).value == "QUEUED"
    requested = deployment.query(BACKFILL_QUERY, backfillId=backfill_id)
    assert requested["partitionBackfillOrError"]["status"] == "REQUESTED"
    assert requested["partitionBackfillOrError"]["runs"] == []

    # Started now, the daemon's first backfill tick comes at once rather than 30 s later.
    deployment.start_daemon()
    assert wait_for_run(deployment, run_id) == "SUCCESS"
    backfill = wait_for_backfill(deployment, backfill_id)
    # One run over the 3 partitions (the report asset's backfill policy), not one run each.
    [backfill_run] = backfill["runs"]
    assert backfill_run["status"] == "SUCCESS"
    assert (
        tags(backfill_run)["dagster/asset_partition_range_start"],
        tags(backfill_run)["dagster/asset_partition_range_end"],
    ) == (backfilled[0], backfilled[-1])

    # The Runs page: the launch and the backfill's run, both a success.
    runs = deployment.query(RUNS_QUERY)["runsOrError"]["results"]
    assert len(runs) == 2, runs
    assert {run["status"] for run in runs} == {"SUCCESS"}, runs
    [single] = [run for run in runs if run["runId"] == run_id]
    assert single["jobName"] == "unused_fields_job"
    assert tags(single)["dagster/partition"] == launched
    # The asset page's job, the one the sensors launch too (test_sensors, test_daemon).
    [ranged] = [run for run in runs if tags(run).get("dagster/backfill") == backfill_id]
    assert ranged["jobName"] == "__ASSET_JOB"
    backfill_runs = dict.fromkeys(backfilled, ranged["runId"])

    # The asset's partitions: each materialised by an event of its own, in the backfill's run.
    materialised = materialisations(deployment, "unused_work_types_report")
    assert materialised == backfill_runs

    # The Checks tab: report_complete ran with every materialisation, and passed.
    checks = check_statuses(deployment, "unused_fields_report", "report_complete")
    assert checks == {launched: (run_id, "SUCCEEDED")}
    checks = check_statuses(deployment, "unused_work_types_report", "report_complete")
    assert checks == {scope: (backfill_runs[scope], "SUCCEEDED") for scope in backfilled}

    # The reports a reader sees, equal to an independent SQL ground truth.
    store = ReportStore(create_engine_for(deployment.store_url, must_exist=True))
    try:
        with source_connection(deployment.source_url) as source:
            report = store.read("unused_fields", launched)
            assert report is not None, f"no unused_fields report for {launched}"
            header, rows = report
            assert header.run_id == run_id
            assert header.entity_count > 0 and header.row_count == len(rows) > 0
            truth = unused_fields_truth(source, launched, header.summary["params"])
            pd.testing.assert_frame_equal(comparable(rows), truth)
            for scope in backfilled:
                report = store.read("unused_work_types", scope)
                assert report is not None, f"no unused_work_types report for {scope}"
                header, rows = report
                assert header.run_id == backfill_runs[scope]
                truth = unused_work_types_truth(source, scope, header.summary["params"])
                assert header.row_count == len(rows) == len(truth) > 0, scope
                pd.testing.assert_frame_equal(comparable(rows), truth)
            assert [h.scope for h in store.headers("unused_fields")] == [launched]
            assert sorted(h.scope for h in store.headers("unused_work_types")) == sorted(backfilled)
    finally:
        store.engine.dispose()
