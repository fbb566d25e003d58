"""Apply and undo of unused fields of one space (50 by default), measured two ways:

- ``plain``: the framework's remediation as plain functions (plan, then every batch verified,
  applied and checkpointed, the action finished), best of ``--rounds``;
- ``queued``: end to end as an admin's click goes, through the run queue: from the plan's
  submission (the run launched through the webserver's GraphQL) to the action done in the store,
  and to its run's end (which asks for the report's refresh), with a real ``dagster-webserver``
  and ``dagster-daemon``; one round each.

    python bench/remediation.py [--fields 50] [--out bench/results-remediation.json]

The source is the demo's at a small scale (its fullest space has hundreds of fields), on SQLite
files in a temporary folder. It prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from processes import daemon_command, start_server, stop_server, webserver_command

from precompute_assets.core.actions import DONE, ActionLog
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.phases import finalise_job, open_job, run_shard
from precompute_assets.core.registry import load_tools
from precompute_assets.core.remediation import make_plan, run_action
from precompute_assets.core.report_store import ReportStore
from precompute_assets.demo.source import DemoScale, generate_source

PROJECT = Path(__file__).resolve().parents[1]
TOOL = load_tools(autoload=False)["unused_fields"]
SCALE = DemoScale(tenants=1, spaces=4, work_items=40_000, seed=7)
TIMEOUT_S = 300


class Bench:
    """A source, a store, the scope with the most unused fields, and its fresh report."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.source_url = sqlite_url(folder / "source.db")
        self.store_url = sqlite_url(folder / "reports.db")
        self.source = create_engine_for(self.source_url)
        self.store_engine = create_engine_for(self.store_url)
        self.store, self.log = ReportStore(self.store_engine), ActionLog(self.store_engine)
        with sqlite3.connect(folder / "source.db") as connection:
            self.scopes = [key for (key,) in connection.execute("SELECT key FROM spaces")]
        for scope in self.scopes:
            self.compute(scope)
        self.scope = max(self.scopes, key=lambda scope: len(self.unused(scope)))

    def compute(self, scope: str) -> int:
        reader = create_engine_for(self.source_url, read_only=True)
        ledger = Ledger(self.store_engine)
        plan = open_job(TOOL, scope, reader, ledger, 5_000)
        for shard in plan.shards(2):
            run_shard(TOOL, plan, shard, reader, ledger)
        generation = finalise_job(TOOL, plan, reader, ledger, self.store, shard_count=2)
        reader.dispose()
        return generation.header.generation

    def unused(self, scope: str) -> list[str]:
        _, records = self.store.read_records(TOOL.name, scope)
        return [record["entity_id"] for record in records if record["unused"]]

    def plan(self, fields: int) -> str:
        header, records = self.store.read_records(TOOL.name, self.scope)
        with self.source.connect() as connection:
            live = TOOL.catalogue.watermark(connection, [self.scope])[self.scope]
        chosen = self.unused(self.scope)[:fields]
        if len(chosen) < fields:
            raise SystemExit(f"{self.scope} has {len(chosen)} unused fields, fewer than {fields}")
        return make_plan(self.log, TOOL, header, records, chosen, live, "bench").action_id

    def run(self, action_id: str) -> float:
        started = time.perf_counter()
        self.log.submit(action_id)
        run_action(TOOL, action_id, self.source, self.log, self.store)
        return time.perf_counter() - started


def plain(bench: Bench, fields: int, rounds: int) -> dict[str, Any]:
    applies, undos = [], []
    for _ in range(rounds):
        action = bench.plan(fields)
        applies.append(bench.run(action))
        undo, _ = bench.log.plan_undo(bench.log.get(action), "bench")
        undos.append(bench.run(undo.action_id))
        bench.compute(bench.scope)  # fresh again for the next round's plan
    return {"apply_s": round(min(applies), 4), "undo_s": round(min(undos), 4), "rounds": rounds}


def queued(bench: Bench, fields: int) -> dict[str, Any]:
    from precompute_assets.orchestration.remediation import launch_action
    from precompute_assets.orchestration.webserver import DagsterWebserver

    shutil.copy(PROJECT / "dagster.yaml", bench.folder / "dagster.yaml")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PRECOMPUTE_", "DAGSTER_"))},
        "DAGSTER_HOME": str(bench.folder),
        "PRECOMPUTE_SOURCE_URL": bench.source_url,
        "PRECOMPUTE_STORE_URL": bench.store_url,
        "PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PRECOMPUTE_DAGSTER_URL": f"http://127.0.0.1:{port}",
    }
    logs = bench.folder / "logs"
    servers = [
        start_server("webserver", webserver_command(port), env, logs, PROJECT),
        start_server("daemon", daemon_command(), env, logs, PROJECT),
    ]
    webserver = DagsterWebserver(env["PRECOMPUTE_DAGSTER_URL"])
    try:
        _until(lambda: _answers(port) and _daemon_ready(webserver), "webserver and daemon")
        bench.compute(bench.scope)
        generation = bench.store.header(TOOL.name, bench.scope).generation
        apply = _timed_action(bench, webserver, launch_action, bench.plan(fields))
        # The run's end asked for the report's refresh: let it land before the undo.
        _until(
            lambda: bench.store.header(TOOL.name, bench.scope).generation > generation,
            "the refresh after the apply",
        )
        undo, _ = bench.log.plan_undo(bench.log.get(apply.pop("action_id")), "bench")
        undone = _timed_action(bench, webserver, launch_action, undo.action_id)
        undone.pop("action_id")
        return {"apply": apply, "undo": undone}
    finally:
        for server in servers:
            stop_server(server)


def _timed_action(bench: Bench, webserver: Any, launch: Any, action_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    bench.log.submit(action_id)
    run_id = launch(webserver, TOOL, bench.log.get(action_id))
    bench.log.launched(action_id, run_id)
    _until(lambda: bench.log.get(action_id).status == DONE, f"action {action_id}", every=0.05)
    done = time.perf_counter() - started
    _until(lambda: webserver.run(run_id).status == "SUCCESS", f"run {run_id}", every=0.05)
    return {
        "action_id": action_id,
        "to_done_s": round(done, 2),
        "to_run_end_s": round(time.perf_counter() - started, 2),
        "entities": len(bench.log.get(action_id).entities),
    }


def _until(condition: Any, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not _safely(condition):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not done in {TIMEOUT_S}s")
        time.sleep(every)


def _safely(condition: Any) -> bool:
    try:
        return bool(condition())
    except Exception:
        return False


def _answers(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
        return True


def _daemon_ready(webserver: Any) -> bool:
    webserver.check_daemon()
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fields", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pc-remediation-") as folder:
        started = time.perf_counter()
        generate_source(sqlite_url(Path(folder) / "source.db"), SCALE)
        bench = Bench(Path(folder))
        figures = {
            "scale": {"work_items": SCALE.work_items, "spaces": SCALE.spaces},
            "scope": bench.scope,
            "fields": args.fields,
            "batch_size": TOOL.remediation.batch_size,
            "plain": plain(bench, args.fields, args.rounds),
            "queued": queued(bench, args.fields),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average_at_start": load,
            "seconds": round(time.perf_counter() - started, 1),
        }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
