"""A fleet refresh as the UI launches it: a partition backfill of many small scopes, through the
real webserver and daemon on the project's ``dagster.yaml`` (queued runs, 2 at a time).

Run twice in one benchmark run, each on a fresh instance and store over the same source:

- ``batched``: the report asset's backfill policy as shipped (``PRECOMPUTE_SCOPES_PER_RUN``
  scopes per run);
- ``baseline``: one scope per run (``PRECOMPUTE_SCOPES_PER_RUN=1``), what every backfill did
  before runs were shared, over fewer scopes (its cost per scope does not depend on how many).

Figures per mode: runs, wall time from the first run's creation to the last run's end (the
backfill daemon's tick interval before the first run is a fixed delay, reported apart),
scopes per minute, and the compute share: the reports' own compute time (``compute_s`` in
each report's summary: its initialise, scans and finalise) over the wall time times the runs
allowed at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "deploy"))

from processes import daemon_command, server_group, webserver_command  # noqa: E402

from precompute_assets.core.db import create_engine_for, sqlite_url  # noqa: E402
from precompute_assets.core.report_store import ReportStore  # noqa: E402
from precompute_assets.demo.source import DemoScale, generate_source  # noqa: E402

TOOL = "unused_fields"
ASSET = f"{TOOL}_report"
CONCURRENT_RUNS = 2  # dagster.yaml's max_concurrent_runs
ITEMS_PER_SCOPE = 1_000
TIMEOUT_S = 1_800

LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  }
}
"""
BACKFILL_RUNS = """
query ($backfillId: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $backfillId}]}) {
    ... on Runs { results { runId status creationTime startTime endTime } }
  }
}
"""
LOCATIONS = """
query { workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }
"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def measure(scopes: int, baseline_scopes: int, scopes_per_run: int, folder: Path) -> dict[str, Any]:
    """Both modes over one demo source of ``scopes`` small spaces; the JSON figures."""
    folder.mkdir(parents=True, exist_ok=True)
    source_url = sqlite_url(folder / "fleet-source.db")
    generate_source(
        source_url,
        DemoScale(tenants=10, spaces=scopes, work_items=scopes * ITEMS_PER_SCOPE, seed=3),
    )
    keys = _scope_keys(source_url)
    batched = _backfill(keys, scopes_per_run, source_url, folder / "batched")
    baseline = _backfill(keys[:baseline_scopes], 1, source_url, folder / "baseline")
    return {
        "event_ms": _event_ms(folder / "batched"),
        # Whether a PostgreSQL instance (deploy/dagster.yaml) stores an event for less.
        "event_ms_postgres_instance": _event_ms_postgres(folder / "events-postgres"),
        "asset_events_per_scope": _asset_events_per_scope(folder / "batched", len(keys)),
        "scopes": scopes,
        "items_per_scope": ITEMS_PER_SCOPE,
        "concurrent_runs": CONCURRENT_RUNS,
        "batched": batched,
        "baseline": baseline,
        "scopes_per_min": batched["scopes_per_min"],
        "compute_share": batched["compute_share"],
        "scopes_per_min_over_baseline": round(
            batched["scopes_per_min"] / baseline["scopes_per_min"], 2
        ),
    }


def _event_ms(home: Path, events: int = 50, env: dict[str, str] | None = None) -> float:
    """What storing one asset event costs on the instance at ``home``: a scope costs three (its
    materialisation planned when the run is created, the materialisation, the check evaluation).
    """
    measure = (
        "import time; from dagster import AssetKey, AssetMaterialization, DagsterInstance\n"
        "with DagsterInstance.get() as instance:\n"
        "    event = AssetMaterialization(AssetKey('event_cost'))\n"
        "    instance.report_runless_asset_event(event)\n"
        "    started = time.perf_counter()\n"
        f"    for _ in range({events}):\n"
        "        instance.report_runless_asset_event(event)\n"
        f"    print((time.perf_counter() - started) / {events} * 1000)\n"
    )
    env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", measure], env=env, capture_output=True, text=True, check=True
    ).stdout
    return round(float(out.strip().splitlines()[-1]), 1)


def _event_ms_postgres(home: Path) -> float | None:
    """The same on a fresh PostgreSQL instance (the production ``deploy/dagster.yaml``) on the
    local server, or None when it is not running."""
    import sqlalchemy as sa

    database = "precompute_bench_events"
    admin = sa.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            connection.exec_driver_sql(f"CREATE DATABASE {database}")
    except sa.exc.OperationalError:
        return None
    finally:
        admin.dispose()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    connection = {
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": database,
    }
    return _event_ms(home, env=connection)


def _asset_events_per_scope(home: Path, scopes: int) -> float:
    """Asset events the backfill's runs stored per scope, planned ones included."""
    count = (
        "from dagster import DagsterEventType as Kind, DagsterInstance\n"
        "kinds = {Kind.ASSET_MATERIALIZATION_PLANNED, Kind.ASSET_MATERIALIZATION,\n"
        "         Kind.ASSET_CHECK_EVALUATION_PLANNED, Kind.ASSET_CHECK_EVALUATION}\n"
        "with DagsterInstance.get() as instance:\n"
        "    print(sum(\n"
        "        1 for record in instance.get_run_records()\n"
        "        for entry in instance.all_logs(record.dagster_run.run_id)\n"
        "        if entry.dagster_event and entry.dagster_event.event_type in kinds\n"
        "    ))\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", count], env=env, capture_output=True, text=True, check=True
    ).stdout
    return round(int(out.strip().splitlines()[-1]) / scopes, 2)


def _scope_keys(source_url: str) -> list[str]:
    engine = create_engine_for(source_url, must_exist=True)
    try:
        with engine.connect() as source:
            return list(source.exec_driver_sql("SELECT key FROM spaces ORDER BY key").scalars())
    finally:
        engine.dispose()


def _backfill(keys: list[str], scopes_per_run: int, source_url: str, home: Path) -> dict[str, Any]:
    """One backfill of ``keys`` on a fresh instance and store; its figures."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    store_url = sqlite_url(home / "reports.db")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PRECOMPUTE_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "PRECOMPUTE_HOME": str(home / "precompute"),
        "PRECOMPUTE_SOURCE_URL": source_url,
        "PRECOMPUTE_STORE_URL": store_url,
        "PRECOMPUTE_SCOPES_PER_RUN": str(scopes_per_run),
    }
    _register(env, keys)
    port = _free_port()
    with ExitStack() as servers:
        servers.enter_context(
            server_group("webserver", webserver_command(port), env, home / "logs", PROJECT)
        )
        graphql = _GraphQL(port)
        graphql.wait_loaded()
        servers.enter_context(server_group("daemon", daemon_command(), env, home / "logs", PROJECT))
        launched = time.time()
        backfill_id = graphql.launch_backfill(keys)
        runs = graphql.wait_for_runs(backfill_id, len(keys), scopes_per_run)
    return _figures(keys, runs, launched, store_url, scopes_per_run)


def _figures(
    keys: list[str], runs: list[dict[str, Any]], launched: float, store_url: str, per_run: int
) -> dict[str, Any]:
    failed = [run["runId"] for run in runs if run["status"] != "SUCCESS"]
    if failed:
        raise RuntimeError(f"backfill runs failed: {failed}")
    first = min(run["creationTime"] for run in runs)
    wall = max(run["endTime"] for run in runs) - first
    store = ReportStore(create_engine_for(store_url, must_exist=True))
    try:
        headers = store.headers(TOOL, keys)
    finally:
        store.engine.dispose()
    if len(headers) != len(keys):
        raise RuntimeError(f"{len(headers)} reports for {len(keys)} scopes")
    compute = sum(header.summary["compute_s"] for header in headers)
    return {
        "scopes": len(keys),
        "scopes_per_run": per_run,
        "runs": len(runs),
        "entities": sum(header.entity_count for header in headers),
        "wall_s": round(wall, 1),
        "before_first_run_s": round(first - launched, 1),
        "compute_s": round(compute, 2),
        "scopes_per_min": round(len(keys) / wall * 60, 1),
        "compute_share": round(compute / (wall * CONCURRENT_RUNS), 3),
        "run_s": sorted(round(run["endTime"] - run["startTime"], 1) for run in runs),
        # In the runs, besides the reports' compute: Dagster's steps and events, the checks.
        "in_runs_besides_compute_per_scope_ms": round(
            (sum(run["endTime"] - run["startTime"] for run in runs) - compute) / len(keys) * 1000
        ),
        "compute_per_scope_ms": round(compute / len(keys) * 1000),
    }


def _register(env: dict[str, str], keys: list[str]) -> None:
    register = (
        "import sys; from dagster import DagsterInstance\n"
        "with DagsterInstance.get() as instance:\n"
        f"    instance.add_dynamic_partitions('{TOOL}_scopes', sys.argv[1:])\n"
    )
    subprocess.run(
        [sys.executable, "-c", register, *keys], env=env, check=True, timeout=120, cwd=PROJECT
    )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _GraphQL:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            self.url, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def wait_loaded(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                entries = self.query(LOCATIONS)["workspaceOrError"]["locationEntries"]
                if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the webserver did not load the code location in {timeout_s}s")

    def launch_backfill(self, keys: list[str]) -> str:
        params = {
            "assetSelection": [{"path": [ASSET]}],
            "partitionNames": keys,
            "fromFailure": False,
        }
        result = self.query(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"launchPartitionBackfill answered {result}")
        return result["backfillId"]

    def wait_for_runs(self, backfill_id: str, scopes: int, per_run: int) -> list[dict[str, Any]]:
        """Every run of the backfill, once all have ended."""
        expected = -(-scopes // per_run)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            runs = self.query(BACKFILL_RUNS, backfillId=backfill_id)["runsOrError"]["results"]
            if len(runs) >= expected and all(run["status"] in TERMINAL for run in runs):
                return runs
            time.sleep(1.0)
        raise TimeoutError(f"backfill {backfill_id} not done in {TIMEOUT_S}s")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", type=int, default=200)
    parser.add_argument("--baseline-scopes", type=int, default=40)
    parser.add_argument("--scopes-per-run", type=int, default=50)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/pc-bench/fleet"))
    arguments = parser.parse_args()
    figures = measure(
        arguments.scopes, arguments.baseline_scopes, arguments.scopes_per_run, arguments.folder
    )
    print(json.dumps(figures, indent=2))
