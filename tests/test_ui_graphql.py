"""What the UI does, for real: launches and backfills through the webserver's GraphQL API.

The test starts ``dagster-webserver`` and ``dagster-daemon`` (each in its own process group) on
one on-disk instance: a temporary DAGSTER_HOME with the project's ``dagster.yaml``, so runs go
through the queued run coordinator (at most 2 at once) and only start because the daemon runs.
The source is a demo of 2 tenants, 4 spaces and 4,000 work items; each job has one shard
(``PRECOMPUTE_MAX_SHARDS=1``). Through GraphQL only, as the UI's buttons do, it launches:

- one run of ``unused_fields_job`` for the space with the most work items
  (``launchPipelineExecution``, via ``DagsterGraphQLClient.submit_job_execution``), and
- a partition backfill of ``unused_work_types_report`` over the 3 other spaces, the one with no
  work items included (``launchPartitionBackfill``).

Both are launched before the daemon starts, which shows that nothing runs without it (the run
stays QUEUED, the backfill has no runs) and lets the daemon's first backfill tick come at once
instead of up to 30 s later. The test then proves that the daemon ran exactly 4 runs (1 + 3), all
successful, that the backfill completed, that the ``report_complete`` check passed for each
partition in the run that materialised it, and that the report store holds a report for every
launched scope equal to an independent SQL ground truth (``ground_truth.py``).

Wall time: 80-150 s on 2 CPUs, most of it the runs (7 step processes each under the multiprocess
executor, 2 runs at a time) and the backfill daemon's 30-second ticks; startup is ~10 s.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import source_connection
from dagster_graphql import DagsterGraphQLClient
from ground_truth import comparable, unused_fields_truth, unused_work_types_truth

from precompute_assets.db import create_engine_for, sqlite_url
from precompute_assets.demo_source import DemoScale, generate_source
from precompute_assets.report_store import ReportStore

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCALE = DemoScale(tenants=2, spaces=4, work_items=4_000, seed=3)

STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 240
BACKFILL_TIMEOUT_S = 240
STOP_GRACE_S = 15

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
RUN_TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS"}
BACKFILL_FAILED = {"FAILED", "COMPLETED_FAILED", "CANCELED"}

LOCATIONS_QUERY = """
query { workspaceOrError {
  __typename
  ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
  } }
  ... on PythonError { message }
} }
"""
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
RUN_ERRORS_QUERY = """
query ($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events {
      ... on MessageEvent { level stepKey message }
      ... on ErrorEvent { error { message causes { message } } }
    } }
  }
}
"""


@dataclass
class Server:
    """One started server: its process (the leader of its own group) and its log file."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, chars: int = 4_000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        text = ANSI_ESCAPE.sub("", text)
        return f"--- last {chars} characters of {self.name} ({self.log}) ---\n{text[-chars:]}"


@contextmanager
def server_group(name: str, args: list[str], env: dict[str, str], logs: Path) -> Iterator[Server]:
    """Start ``args`` in a new session; on exit stop its whole process group.

    The group holds what the server spawns (code servers, run workers, step processes), so
    killing the group leaves nothing behind. Output goes to a file: a pipe could fill and block.
    """
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield Server(name, process, log)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the group, give it a grace period, then SIGKILL whatever is left of it."""
    group = process.pid
    _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and _group_alive(group):
        process.poll()  # reap the leader so that it does not count as alive
        time.sleep(0.2)
    _signal_group(group, signal.SIGKILL)
    process.wait(timeout=STOP_GRACE_S)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    condition: Callable[[], Any], timeout_s: float, describe: Callable[[], str], every_s=1.0
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``describe()`` if never."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {timeout_s}s: {describe()}")
        time.sleep(every_s)


@dataclass
class Deployment:
    """The webserver (the daemon once started), and what the test needs to talk to them."""

    client: DagsterGraphQLClient
    webserver: Server
    source_url: str
    store_url: str
    env: dict[str, str]
    logs_dir: Path
    servers: ExitStack
    daemon: Server | None = None

    def start_daemon(self) -> Server:
        """``dagster-daemon run``: from now on queued runs start and backfills advance."""
        args = [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT / "workspace.yaml")]
        self.daemon = self.servers.enter_context(
            server_group("daemon", args, self.env, self.logs_dir)
        )
        return self.daemon

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        return self.client._execute(query, variables or None)

    def logs(self) -> str:
        return "\n".join(server.tail() for server in (self.webserver, self.daemon) if server)

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n{self.logs()}")


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


def wait_for_webserver(deployment: Deployment, port: int) -> None:
    """The webserver answers, and it loaded the project's code location without an error."""

    def answers() -> bool:
        if deployment.webserver.process.poll() is not None:
            deployment.fail(f"the webserver exited with {deployment.webserver.process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return True
        except OSError:
            return False

    wait_until(answers, STARTUP_TIMEOUT_S, deployment.logs, every_s=0.5)

    def loaded() -> list[dict[str, Any]] | None:
        workspace = deployment.query(LOCATIONS_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            deployment.fail(f"the workspace did not load: {workspace}")
        entries = workspace["locationEntries"]
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            return entries
        return None

    for entry in wait_until(loaded, STARTUP_TIMEOUT_S, deployment.logs, every_s=0.5):
        error = entry["locationOrLoadError"]
        if error["__typename"] == "PythonError":
            deployment.fail(f"code location {entry['name']} failed to load: {error['message']}")


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
    webserver_args = [str(BIN / "dagster-webserver"), "-w", str(PROJECT / "workspace.yaml")]
    with ExitStack() as servers:
        webserver = servers.enter_context(
            server_group(
                "webserver", [*webserver_args, "-h", "127.0.0.1", "-p", str(port)], env, home
            )
        )
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        deployed = Deployment(client, webserver, source_url, store_url, env, home, servers)
        wait_for_webserver(deployed, port)
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


def wait_for_run(deployment: Deployment, run_id: str) -> str:
    status = wait_until(
        lambda: _terminal(deployment.client.get_run_status(run_id).value),
        RUN_TIMEOUT_S,
        lambda: (
            f"run {run_id} is {deployment.client.get_run_status(run_id).value}\n{deployment.logs()}"
        ),
    )
    if status != "SUCCESS":
        deployment.fail(f"run {run_id} ended {status}:\n{run_errors(deployment, run_id)}")
    return status


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


def run_errors(deployment: Deployment, run_id: str) -> str:
    """The run's error-level events with their errors' causes, as the run page shows them."""
    events = deployment.query(RUN_ERRORS_QUERY, runId=run_id)["logsForRun"].get("events", [])
    lines = []
    for event in events:
        if event.get("level") != "ERROR":
            continue
        lines.append(f"[{event.get('stepKey') or 'run'}] {event['message']}")
        error = event.get("error") or {}
        for cause in (error, *error.get("causes", [])):
            if cause.get("message"):
                lines.append(f"    {cause['message'].strip()}")
    return "\n".join(lines)


def check_statuses(deployment: Deployment, asset: str, check: str) -> dict[str, tuple[str, str]]:
    """Per partition: the run and status of the check's execution, as the Checks tab lists them."""
    executions = deployment.query(
        CHECK_EXECUTIONS_QUERY, assetKey={"path": [asset]}, checkName=check
    )["assetCheckExecutions"]
    return {
        execution["partition"]: (execution["runId"], execution["status"])
        for execution in executions
    }


def _terminal(status: str) -> str | None:
    return status if status in RUN_TERMINAL else None


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
    assert sorted(tags(run)["dagster/partition"] for run in backfill["runs"]) == sorted(backfilled)
    assert {run["status"] for run in backfill["runs"]} == {"SUCCESS"}

    # The Runs page: exactly one run per launched partition, every one a success.
    runs = deployment.query(RUNS_QUERY)["runsOrError"]["results"]
    assert len(runs) == 1 + len(backfilled), runs
    assert {run["status"] for run in runs} == {"SUCCESS"}, runs
    [single] = [run for run in runs if run["runId"] == run_id]
    assert single["jobName"] == "unused_fields_job"
    assert tags(single)["dagster/partition"] == launched
    backfill_runs = {
        tags(run)["dagster/partition"]: run["runId"]
        for run in runs
        if tags(run).get("dagster/backfill") == backfill_id
    }
    assert sorted(backfill_runs) == sorted(backfilled)

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
            as_of = header.summary["params"]["as_of"]
            truth = unused_fields_truth(source, launched, as_of)
            pd.testing.assert_frame_equal(comparable(rows), truth)
            for scope in backfilled:
                report = store.read("unused_work_types", scope)
                assert report is not None, f"no unused_work_types report for {scope}"
                header, rows = report
                assert header.run_id == backfill_runs[scope]
                truth = unused_work_types_truth(source, scope)
                assert header.row_count == len(rows) == len(truth) > 0, scope
                pd.testing.assert_frame_equal(comparable(rows), truth)
            assert [h.scope for h in store.headers("unused_fields")] == [launched]
            assert sorted(h.scope for h in store.headers("unused_work_types")) == sorted(backfilled)
    finally:
        store.engine.dispose()
