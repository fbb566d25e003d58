"""`precompute status`, `refresh` and `touch` as an operator uses them, on a project instance."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import pytest
from conftest import SMALL_SCALE
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from precompute_assets.cli.main import main
from precompute_assets.core.db import sqlite_url
from precompute_assets.core.registry import load_tools
from precompute_assets.demo.source import generate_source
from precompute_assets.orchestration.runs import add_scope_partition

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder of its own: dagster.yaml, a source it may edit, an empty store."""
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    source_url = sqlite_url(tmp_path / "source.db")
    generate_source(source_url, SMALL_SCALE)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("PRECOMPUTE_HOME", str(tmp_path / ".precompute"))
    monkeypatch.setenv("PRECOMPUTE_SOURCE_URL", source_url)
    monkeypatch.setenv("PRECOMPUTE_STORE_URL", sqlite_url(tmp_path / "reports.db"))
    monkeypatch.setenv("PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD", "1")
    return tmp_path


def _status(capsys) -> list[dict]:
    assert main(["status", "unused_fields", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_lists_scopes_in_refresh_priority_order(project, capsys):
    rows = _status(capsys)
    assert len(rows) == SMALL_SCALE.spaces
    high = [row for row in rows if row["high"]]
    assert high and rows[: len(high)] == high, "high scopes first"
    assert [r["utilisation"] for r in high] == sorted(
        (r["utilisation"] for r in high), reverse=True
    )
    assert all(r["stale"] and r["due"] == "missing" and r["report_age_s"] is None for r in rows)

    assert main(["status", "unused_fields"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["scope", "utilisation", "report"]
    assert "no report" in text and "STALE" in text


def test_refresh_runs_one_scope_on_the_project_instance_and_tags_it(project, capsys):
    scope = _status(capsys)[0]["scope"]
    assert main(["refresh", "unused_fields", scope]) == 0
    out = capsys.readouterr().out
    assert f"refreshed unused_fields/{scope}" in out

    with DagsterInstance.get() as instance:
        [run] = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert run.tags["dagster/partition"] == scope
    assert run.tags["precompute/reason"] == "on demand"
    assert run.tags["dagster/priority"] == "1000"
    row = next(r for r in _status(capsys) if r["scope"] == scope)
    assert (row["stale"], row["due"]) == (False, None)


@pytest.mark.slow
def test_refresh_gives_a_large_scope_the_large_scope_executor(project, capsys, monkeypatch):
    monkeypatch.setenv("PRECOMPUTE_LARGE_SCOPE_ENTITIES", "2")
    monkeypatch.setenv("PRECOMPUTE_LARGE_SCOPE_EXECUTOR", "multiprocess")
    scope = _status(capsys)[0]["scope"]
    reports = []
    for _ in range(2):
        assert main(["refresh", "unused_fields", scope]) == 0
        capsys.readouterr()
        assert main(["report", "unused_fields", scope, "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out)["rows"])

    with DagsterInstance.get() as instance:
        first, second = reversed(instance.get_runs(RunsFilter(tags={"dagster/partition": scope})))
        executors = [next(iter(run.run_config["execution"]["config"])) for run in (first, second)]
        # No plan before the first run; its plan counted more entities than the threshold.
        assert executors == ["in_process", "multiprocess"]
        starts = instance.all_logs(second.run_id, of_type=DagsterEventType.STEP_START)
    assert len({event.dagster_event.pid for event in starts}) == len(starts) > 1
    assert reports[0] == reports[1] and reports[0]


def _register_scopes(barrier, scopes: list[str]) -> list[str]:
    """In a process of its own: register each scope the moment the other processes do."""
    instance = DagsterInstance.get()
    tool = load_tools()["unused_fields"]
    errors = []
    for scope in scopes:
        barrier.wait(timeout=60)
        try:
            add_scope_partition(instance, tool, scope)
        except Exception as error:
            errors.append(f"{scope}: {error!r}"[:200])
    return errors


@pytest.mark.slow
def test_processes_registering_one_new_scope_at_once_all_succeed(project):
    """Two on-demand refreshes of a new scope both register its partition on the instance."""
    processes = 4
    scopes = [f"new-{n}" for n in range(30)]
    DagsterInstance.get()  # Dagster's SQLite storage is not safe to create from two processes
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(processes) as pool:
        barrier = manager.Barrier(processes)
        results = pool.starmap(_register_scopes, [(barrier, scopes)] * processes)
    assert [error for errors in results for error in errors] == []
    with DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("unused_fields_scopes") == scopes


@pytest.mark.slow
def test_refresh_without_waiting_returns_a_run_id_that_completes(project, capsys):
    scope = _status(capsys)[-1]["scope"]
    assert main(["refresh", "unused_work_types", scope, "--no-wait"]) == 0
    run_id = capsys.readouterr().out.split()[2]

    deadline = time.monotonic() + 120
    with DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                break
            time.sleep(0.5)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS, (
            project / ".precompute" / "logs" / f"refresh-{run_id}.log"
        ).read_text()
    assert main(["report", "unused_work_types", scope, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scope"] == scope


def test_touch_moves_a_scope_source_and_status_shows_it(project, capsys):
    scope = _status(capsys)[0]["scope"]
    assert main(["refresh", "unused_fields", scope]) == 0
    capsys.readouterr()
    assert main(["touch", scope, "--items", "2"]) == 0
    capsys.readouterr()
    row = next(r for r in _status(capsys) if r["scope"] == scope)
    assert (row["source_changed"], row["stale"], row["due"]) == (True, True, "changed")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["refresh", "unused_fields", "zz-s999"], "unknown scope 'zz-s999'"),
        (["refresh", "unused_fields", "zz-s999", "--no-wait"], "unknown scope 'zz-s999'"),
        (["refresh", "nope", "t1-s001"], "unknown tool 'nope'"),
        (["status", "nope"], "unknown tool 'nope'"),
        (["touch", "zz-s999"], "unknown scope 'zz-s999'"),
    ],
)
def test_operator_errors_exit_non_zero_naming_the_problem(project, capsys, argv, message):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


STORE, SOURCE = "PRECOMPUTE_STORE_URL", "PRECOMPUTE_SOURCE_URL"


@pytest.mark.parametrize(
    ("argv", "database"),
    [
        *[
            (argv, database)
            for argv in (
                ["status", "unused_fields"],
                ["refresh", "unused_fields", "t1-s001"],
                ["refresh", "unused_fields", "t1-s001", "--no-wait"],
                ["report", "unused_fields", "t1-s001"],
            )
            for database in (STORE, SOURCE)
        ],
        (["touch", "t1-s001"], SOURCE),
        (["demo", "--spaces", "3", "--work-items", "300"], SOURCE),
    ],
    ids=lambda value: " ".join(value[:1] + value[3:]) if isinstance(value, list) else value[11:],
)
def test_an_unreachable_database_is_one_line_naming_it_masked(
    project, capsys, monkeypatch, database, argv
):
    if argv[0] == "report":
        assert main(["refresh", "unused_fields", "t1-s001"]) == 0  # a report to read
        capsys.readouterr()
    monkeypatch.setenv(database, "postgresql+psycopg2://reporter:pw-9@127.0.0.1:1/reports")
    assert main(argv) == 1
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(
        "precompute: error: cannot reach database "
        "postgresql+psycopg2://reporter:***@127.0.0.1:1/reports: connection to server"
    )
    assert "pw-9" not in captured.out + captured.err
