"""`precompute demo` at a tiny scale, as a user runs it: a subprocess in a project folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.report_store import ReportStore
from precompute_assets.service.store import ServiceStore

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]


def test_demo_computes_every_report_and_prints_the_summary(tmp_path, monkeypatch):
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PRECOMPUTE_", "DAGSTER_"))
    }
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "precompute_assets.cli",
            "demo",
            "--tenants",
            "2",
            "--spaces",
            "4",
            "--work-items",
            "3000",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    assert any("[  8/8]" in line for line in lines), "progress for 4 scopes x 2 tools"
    header = next(line for line in lines if line.startswith("scope"))
    assert "unused_fields unused" in header and "unused_work_types unused" in header
    assert "make ui" in demo.stdout
    # A key for the first tenant's admin, to sign in to the pages with.
    assert "Admin pages: make serve" in demo.stdout
    key = lines[-1]
    found = ServiceStore(sqlite_url(tmp_path / ".precompute" / "reports.db")).caller(key)
    assert found is not None and (found.tenant, found.name) == ("t1", "demo admin")

    store = ReportStore(create_engine_for(sqlite_url(tmp_path / ".precompute" / "reports.db")))
    scopes = {h.scope for h in store.headers("unused_fields")}
    assert len(scopes) == 4
    assert scopes == {h.scope for h in store.headers("unused_work_types")}

    # The runs live in the project's Dagster instance, where `dagster dev` shows them.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        assert len(runs) == 8
        assert set(instance.get_dynamic_partitions("unused_fields_scopes")) == scopes
