"""What `dagster dev` loads: workspace.yaml, and a materialisation under its default executor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import ExecutorSettings
from precompute_assets.orchestration.executors import execution_run_config
from precompute_assets.orchestration.resources import PrecomputeResource

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _dagster(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DAGSTER, *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )


def _env(tmp_path: Path, precompute: PrecomputeResource) -> dict[str, str]:
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "PRECOMPUTE_SOURCE_URL": precompute.source_url,
        "PRECOMPUTE_STORE_URL": precompute.store_url,
    }


def test_workspace_loads_every_tool(tmp_path, precompute):
    result = _dagster(
        ["definitions", "validate", "-w", "workspace.yaml"], _env(tmp_path, precompute)
    )
    assert result.returncode == 0, result.stderr


def test_a_partition_materialises_under_the_multiprocess_executor(tmp_path, precompute):
    """Steps in separate processes share nothing but the ledger and the store."""
    env = _env(tmp_path, precompute)
    register = (
        "from dagster import DagsterInstance;"
        "DagsterInstance.get().add_dynamic_partitions('unused_work_types_scopes', ['t1-s001'])"
    )
    subprocess.run([sys.executable, "-c", register], env=env, check=True)
    result = _dagster(
        [
            "asset",
            "materialize",
            "-m",
            "precompute_assets.orchestration.definitions",
            "--select",
            "unused_work_types_report",
            "--partition",
            "t1-s001",
            "--config-json",
            json.dumps(execution_run_config("multiprocess", ExecutorSettings())),
        ],
        env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Multiprocess executor" in result.stderr
    header = ReportStore(precompute.store().engine).header("unused_work_types", "t1-s001")
    assert header is not None and header.row_count > 0
