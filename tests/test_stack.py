"""``make stack`` for real: ``deploy/stack.py`` up, reports through its webserver, Ctrl-C.

The script runs as ``make stack`` runs it, in the foreground of a process group of its own, on
two fresh PostgreSQL databases (the Dagster instance; the source, ledger and reports) and Redis.
The test waits for the address it prints, launches a run of ``unused_fields_job`` through the
webserver's GraphQL as the UI's *Materialize* does, and waits until the daemon has dequeued it and
the run succeeded. The report must equal the SQL ground truth and the run must be in the
instance's PostgreSQL database. A second run, with the celery executor in its run config as the
sensors give a large scope, must run its steps on the stack's celery workers. Then the test sends
SIGINT to the script's group, as a terminal's Ctrl-C does: the script must exit 0 and leave no
process behind (none with its DAGSTER_HOME).

Wall time: about 60 s on 2 CPUs (startup ~15 s, the run ~30 s, stopping ~5 s).
"""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database, require_service, source_connection
from dagster_graphql import DagsterGraphQLClient
from ground_truth import comparable, unused_fields_truth
from live_dagster import LiveDagster, free_port, wait_for_run, wait_for_webserver, wait_until
from processes import ANSI_ESCAPE, Server, start_server, stop_server

from precompute_assets.core.cache import cache_from_url
from precompute_assets.core.settings import ExecutorSettings
from precompute_assets.orchestration.executors import execution_run_config
from precompute_assets.orchestration.resources import PrecomputeResource

# Celery workers of both modules take steps from the one broker queue: never at once.
pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.xdist_group("celery_broker")]

PROJECT = Path(__file__).resolve().parents[1]
CACHE_URL = "redis://127.0.0.1:6379/14"
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 45


@dataclass
class Stack(LiveDagster):
    script: Server
    home: Path
    instance_url: str
    data_url: str
    service_port: int

    def servers(self) -> list[Server]:
        return [self.script]

    def logs(self) -> str:
        """The script's output, then each server's log (the script owns their processes)."""
        tails = [self.script.tail()]
        for log in sorted((self.home / "server-logs").glob("*.log")):
            text = ANSI_ESCAPE.sub("", log.read_text(errors="replace"))
            tails.append(f"--- last 4000 characters of {log} ---\n{text[-4_000:]}")
        return "\n".join(tails)


def flushed_redis(*urls: str) -> None:
    for url in urls:
        try:
            cache_from_url(url).client.flushdb()
        except Exception:
            require_service("Redis at 127.0.0.1:6379", "start redis-server on port 6379")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    flushed_redis(CACHE_URL)
    home = tmp_path / "home"
    port, service_port = free_port(), free_port()
    with fresh_postgres_database() as instance_url, fresh_postgres_database() as data_url:
        args = [
            sys.executable, str(PROJECT / "deploy" / "stack.py"),
            "--home", str(home), "--port", str(port), "--scale", "small",
            "--service-port", str(service_port),
            "--instance-db", sa.make_url(instance_url).database or "",
            "--data-db", sa.make_url(data_url).database or "",
            "--cache", CACHE_URL,
        ]  # fmt: skip
        script = start_server("stack", args, os.environ, tmp_path, PROJECT)
        try:
            client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
            yield Stack(client, port, script, home, instance_url, data_url, service_port)
        finally:
            stop_server(script)  # a no-op when the test stopped it; else do not leak it
    flushed_redis(CACHE_URL)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def processes_of(home: Path) -> list[int]:
    """Every process that inherited this stack's DAGSTER_HOME, wherever it was spawned."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def test_the_stack_computes_a_report_launched_from_its_webserver_and_stops_cleanly(stack: Stack):
    wait_until(
        lambda: stack.check_running() or "Dagster UI: http://127.0.0.1:" in stack.script.tail(),
        READY_TIMEOUT_S,
        stack.logs,
        every_s=0.5,
    )
    assert f"Dagster UI: http://127.0.0.1:{stack.port}" in stack.script.tail()
    wait_for_webserver(stack)
    # The report service runs beside them, on the stack's store.
    ready = f"http://127.0.0.1:{stack.service_port}/readyz"
    wait_until(lambda: _answers(ready), READY_TIMEOUT_S, stack.logs, every_s=0.5)

    with source_connection(stack.data_url) as source:
        scope = source.exec_driver_sql("SELECT key FROM spaces ORDER BY key LIMIT 1").scalar()
    run_id = stack.client.submit_job_execution(
        "unused_fields_job", tags={"dagster/partition": scope}
    )
    assert wait_for_run(stack, run_id) == "SUCCESS"

    store = PrecomputeResource(store_url=stack.data_url).store()
    report = store.read("unused_fields", scope)
    assert report is not None, f"no unused_fields report for {scope}"
    header, rows = report
    assert header.run_id == run_id
    with source_connection(stack.data_url) as source:
        truth = unused_fields_truth(source, scope, header.summary["params"])
    pd.testing.assert_frame_equal(comparable(rows), truth)
    instance_db = sa.create_engine(stack.instance_url)
    with instance_db.connect() as connection:
        query = sa.text("SELECT status FROM runs WHERE run_id = :id")
        assert connection.execute(query, {"id": run_id}).scalar() == "SUCCESS"
    instance_db.dispose()

    # A large scope's run as the refresh sensor sets it up: its steps on the celery workers.
    with source_connection(stack.data_url) as source:
        other = source.exec_driver_sql("SELECT key FROM spaces ORDER BY key DESC LIMIT 1").scalar()
    celery_run = stack.client.submit_job_execution(
        "unused_fields_job",
        run_config=execution_run_config("celery", ExecutorSettings()),
        tags={"dagster/partition": other},
    )
    assert wait_for_run(stack, celery_run) == "SUCCESS", stack.logs()
    header, rows = store.read("unused_fields", other)
    assert header.run_id == celery_run
    with source_connection(stack.data_url) as source:
        truth = unused_fields_truth(source, other, header.summary["params"])
    pd.testing.assert_frame_equal(comparable(rows), truth)
    worker_logs = "".join(
        log.read_text() for log in (stack.home / "server-logs").glob("celery-*.log")
    )
    # initialise, the scan shards and finalise: each a task a worker ran.
    assert worker_logs.count("succeeded in") >= 2 + header.shard_count, stack.logs()

    assert processes_of(stack.home), "the servers should carry the stack's DAGSTER_HOME"
    os.killpg(stack.script.process.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
    assert stack.script.process.wait(timeout=STOP_TIMEOUT_S) == 0, stack.logs()
    assert "stack stopped" in stack.script.tail()
    assert processes_of(stack.home) == [], "processes left behind"
