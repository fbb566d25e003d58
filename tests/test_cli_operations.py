"""`precompute status`, `refresh` and `touch` as an operator uses them, on a project instance
(refreshes that reach the run queue: ``test_on_demand.py``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SMALL_SCALE
from dagster import DagsterInstance

from precompute_assets.cli.main import main
from precompute_assets.core.db import sqlite_url
from precompute_assets.core.registry import load_tools
from precompute_assets.demo.source import generate_source
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.runs import materialise_scope, register_scopes

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

    # One scope, or a few, by name: the same rows.
    wanted = [rows[-1]["scope"], rows[0]["scope"]]
    assert main(["status", "unused_fields", *wanted, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [rows[0], rows[-1]]


def _compute(scope: str) -> None:
    """The scope's report, computed in this process on the project's instance."""
    tool = load_tools()["unused_fields"]
    with DagsterInstance.get() as instance:
        register_scopes(instance, tool, [scope])
        assert materialise_scope(
            build_definitions({tool.name: tool}), tool, scope, instance
        ).success


def test_refresh_without_the_webserver_names_what_to_start(project, capsys, monkeypatch):
    monkeypatch.setenv("PRECOMPUTE_DAGSTER_URL", "http://127.0.0.1:1")
    assert main(["refresh", "unused_fields", "t1-s001", "--no-wait"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("precompute: error: no Dagster webserver answers at http://127.0.0.1:1")
    assert "`make ui`" in line and "dagster-daemon run" in line


def test_touch_moves_a_scope_source_and_status_shows_it(project, capsys):
    scope = _status(capsys)[0]["scope"]
    _compute(scope)
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
        _compute("t1-s001")  # a report to read
    monkeypatch.setenv(database, "postgresql+psycopg2://reporter:pw-9@127.0.0.1:1/reports")
    assert main(argv) == 1
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(
        "precompute: error: cannot reach database "
        "postgresql+psycopg2://reporter:***@127.0.0.1:1/reports: connection to server"
    )
    assert "pw-9" not in captured.out + captured.err
