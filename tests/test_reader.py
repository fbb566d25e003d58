"""Reading stored reports: staleness, the CLI, and clear errors for every bad request."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import run_partition

from precompute_assets.cli.main import main
from precompute_assets.core.db import DatabaseUnavailableError, sqlite_url
from precompute_assets.core.reader import NoReportError, ReportReader, UnknownScopeError
from precompute_assets.core.registry import UnknownToolError
from precompute_assets.core.settings import Settings
from precompute_assets.demo.source import touch_space

PRECOMPUTE = Path(sys.executable).parent / "precompute"


@pytest.fixture
def settings(precompute, tmp_path) -> Settings:
    return Settings(home=tmp_path, source_url=precompute.source_url, store_url=precompute.store_url)


@pytest.fixture
def cli_env(monkeypatch, settings):
    monkeypatch.setenv("PRECOMPUTE_SOURCE_URL", settings.source_url)
    monkeypatch.setenv("PRECOMPUTE_STORE_URL", settings.store_url)
    monkeypatch.setenv("PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_a_stored_report_is_read_with_its_staleness(defs, settings, tools, instance, tmp_path):
    assert run_partition(defs, "unused_fields", "t1-s001", instance).success
    reader = ReportReader.from_settings(settings, tools)

    report = reader.read("unused_fields", "t1-s001")
    assert report.header.row_count == len(report.rows) > 0
    assert report.staleness.source_changed is False
    assert 0 <= report.staleness.age_s < 60
    unused = reader.read("unused_fields", "t1-s001", unused_only=True)
    assert len(unused.rows) == report.header.unused_count
    assert unused.rows["unused"].all()


def test_the_reader_sees_the_source_move_on(defs, tools, instance, tmp_path):
    # A source of its own: this test edits it.
    from conftest import SMALL_SCALE

    from precompute_assets.demo.source import generate_source
    from precompute_assets.orchestration.definitions import build_definitions
    from precompute_assets.orchestration.resources import PrecomputeResource

    source_url = sqlite_url(tmp_path / "own_source.db")
    generate_source(source_url, SMALL_SCALE)
    precompute = PrecomputeResource(source_url=source_url, store_url=sqlite_url(tmp_path / "r.db"))
    own_defs = build_definitions(tools, precompute)
    assert run_partition(own_defs, "unused_fields", "t1-s001", instance).success
    reader = ReportReader.from_settings(precompute.settings(), tools)
    assert reader.read("unused_fields", "t1-s001").staleness.source_changed is False

    touch_space(source_url, "t1-s001", items=3)

    staleness = reader.read("unused_fields", "t1-s001").staleness
    assert staleness.source_changed is True
    assert staleness.source_watermark != reader.read("unused_fields", "t1-s001").header.watermark


@pytest.fixture
def stored(defs, instance) -> None:
    """A store holding one report: of unused_fields for t1-s001."""
    assert run_partition(defs, "unused_fields", "t1-s001", instance).success


def test_reader_errors_name_the_problem(stored, settings, tools):
    reader = ReportReader.from_settings(settings, tools)
    with pytest.raises(UnknownToolError, match=r"unknown tool 'nope'; known tools: unused_fields"):
        reader.read("nope", "t1-s001")
    with pytest.raises(UnknownScopeError, match=r"unknown scope 'zz-s999'"):
        reader.read("unused_fields", "zz-s999")
    with pytest.raises(NoReportError, match=r"no unused_fields report for scope 't1-s002' yet.*"):
        reader.read("unused_fields", "t1-s002")


def test_an_unreachable_database_is_named_without_its_password(stored, settings, tools, tmp_path):
    down = "postgresql+psycopg2://reporter:s3cret@127.0.0.1:1/reports"
    with pytest.raises(DatabaseUnavailableError) as raised:
        ReportReader.from_settings(settings.model_copy(update={"store_url": down}), tools)
    assert "postgresql+psycopg2://reporter:***@127.0.0.1:1/reports" in str(raised.value)
    assert "s3cret" not in str(raised.value)

    missing = sqlite_url(tmp_path / "no_such_source.db")
    with pytest.raises(DatabaseUnavailableError, match=r"no_such_source\.db: no such file"):
        ReportReader.from_settings(settings.model_copy(update={"source_url": missing}), tools)


def test_cli_report_prints_json_and_text(defs, instance, cli_env, capsys):
    assert run_partition(defs, "unused_fields", "t1-s001", instance).success

    assert main(["report", "unused_fields", "t1-s001", "--json", "--unused-only"]) == 0
    # Strict JSON, as JavaScript's JSON.parse reads it: no NaN, a missing time is null.
    document = json.loads(capsys.readouterr().out, parse_constant=_refuse_constant)
    assert any(row["last_used"] is None for row in document["rows"])
    assert document["scope"] == "t1-s001"
    assert document["staleness"]["source_changed"] is False
    assert len(document["rows"]) == document["header"]["unused_count"]
    assert all(row["unused"] for row in document["rows"])

    assert main(["report", "unused_fields", "t1-s001"]) == 0
    text = capsys.readouterr().out
    assert "unused_fields report for t1-s001" in text and "source unchanged" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "nope", "t1-s001"], "unknown tool 'nope'"),
        (["report", "unused_fields", "zz-s999"], "unknown scope 'zz-s999'"),
        (["report", "unused_work_types", "t1-s001"], "no unused_work_types report"),
    ],
)
def test_cli_errors_exit_non_zero_with_a_message(stored, cli_env, capsys, argv, message):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_cli_names_an_unreachable_database(cli_env, monkeypatch, capsys):
    monkeypatch.setenv("PRECOMPUTE_STORE_URL", "postgresql+psycopg2://u:pw@127.0.0.1:1/db")
    assert main(["report", "unused_fields", "t1-s001"]) == 1
    error = capsys.readouterr().err
    assert "cannot reach database postgresql+psycopg2://u:***@127.0.0.1:1/db" in error


def _report_command(
    settings: Settings, scope: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PRECOMPUTE_")},
        "PRECOMPUTE_SOURCE_URL": settings.source_url,
        "PRECOMPUTE_STORE_URL": settings.store_url,
        "PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    command = [*prefix, str(PRECOMPUTE), "report", "unused_fields", scope, "--json"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_a_reader_does_not_wait_for_a_writer_holding_the_lock(stored, settings):
    holder = sqlite3.connect(settings.store_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE precompute_report_headers SET status = status")
    try:
        started = time.monotonic()
        done = _report_command(settings, "t1-s001")
        waited = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scope"] == "t1-s001"
    # The busy timeout is 30 s; a reader taking the write lock would have waited for it.
    assert waited < 15, f"the reader waited {waited:.1f}s"


def test_a_read_only_store_and_source_still_read_and_are_left_untouched(stored, settings):
    """As a user who may only read them: files of another owner, mode 0444."""
    folder = Path(tempfile.mkdtemp(prefix="precompute-read-only-"))
    try:
        folder.chmod(0o1777)  # like /tmp: the reader may create SQLite's shared-memory file
        copies = {}
        for name, url in (("store", settings.store_url), ("source", settings.source_url)):
            with sqlite3.connect(url.removeprefix("sqlite:///")) as original:
                original.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            copies[name] = folder / f"{name}.db"
            shutil.copy(url.removeprefix("sqlite:///"), copies[name])
            copies[name].chmod(0o444)
        before = {
            name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in copies.items()
        }
        read_only = settings.model_copy(
            update={
                "store_url": sqlite_url(copies["store"]),
                "source_url": sqlite_url(copies["source"]),
            }
        )
        done = _report_command(read_only, "t1-s001", _without_root_overrides())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["header"]["row_count"] > 0
        after = {
            name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in copies.items()
        }
        assert after == before
    finally:
        shutil.rmtree(folder)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _without_root_overrides() -> tuple[str, ...]:
    """A command prefix under which a 0444 file cannot be written, even by root."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}")


def _refuse_constant(name: str) -> None:
    pytest.fail(f"{name} is not JSON")


def test_a_huge_scope_name_is_cut_in_the_error(stored, cli_env, capsys):
    assert main(["report", "unused_fields", "s" * 100_000]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "unknown scope 'sss" in line and len(line) < 200
