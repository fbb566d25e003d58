"""No secret in any output, log or run record: a planted password is looked for everywhere.

The store is a PostgreSQL database reached with a password in ``PRECOMPUTE_STORE_URL`` (the
server trusts loopback, so any password connects), the cache tier a Redis URL with a password
that cannot be reached, the celery broker a URL with one. The demo and refreshes run as a user
runs them, in processes of their own on a project folder (a refresh that passes its checks goes
to the run queue, which needs the webserver and daemon: ``test_on_demand.py``); then every byte
the Dagster instance wrote (runs, event logs, compute logs, schedules) and every line the
commands printed is searched for the password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_postgres_database

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
SECRET = "planted-s3cret"


@pytest.fixture
def project(tmp_path) -> tuple[Path, dict[str, str]]:
    shutil.copy(PROJECT / "dagster.yaml", tmp_path / "dagster.yaml")
    with fresh_postgres_database() as store_url:
        url = store_url.replace("postgres@", f"postgres:{SECRET}@")
        env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("PRECOMPUTE_", "DAGSTER_"))
            },
            "DAGSTER_HOME": str(tmp_path),
            "PRECOMPUTE_HOME": str(tmp_path / ".precompute"),
            "PRECOMPUTE_STORE_URL": url,
            "PRECOMPUTE_CELERY_BROKER": f"pyamqp://guest:{SECRET}@127.0.0.1:5672//",
            "PRECOMPUTE_LARGE_SCOPE_EXECUTOR": "celery",
        }
        yield tmp_path, env


def _precompute(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "precompute_assets.cli", *args]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_planted_password_appears_in_no_output_record_or_log(project):
    folder, env = project
    demo_args = ("demo", "--tenants", "1", "--spaces", "3", "--work-items", "900")
    outputs = [_precompute(folder, env, *demo_args)]
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    scope = "t1-s001"

    # A cache tier that cannot be reached: refreshes refuse to start, naming it masked.
    down = {**env, "PRECOMPUTE_CACHE_URL": f"redis://:{SECRET}@127.0.0.1:1/11"}
    for wait in ((), ("--no-wait",)):
        outputs.append(_precompute(folder, down, "refresh", "unused_fields", scope, *wait))
        assert outputs[-1].returncode == 1
        assert outputs[-1].stderr.strip().splitlines() == [
            "precompute: error: cannot reach cache redis://:***@127.0.0.1:1/11: "
            "Error 111 connecting to 127.0.0.1:1. Connection refused."
        ]
    # The demo's runs meet it inside Dagster: the failed run's events name it, masked.
    outputs.append(_precompute(folder, down, *demo_args))
    assert outputs[-1].returncode == 1
    assert "cannot reach cache redis://:***@127.0.0.1:1/11" in outputs[-1].stderr

    for output in outputs:
        assert SECRET not in output.stdout + output.stderr, output.args
    written = [path for path in folder.rglob("*") if path.is_file()]
    assert any(b"redis://:***@127.0.0.1:1/11" in path.read_bytes() for path in written), (
        "the failed run's error is in the instance's event log"
    )
    assert [str(path) for path in written if SECRET.encode() in path.read_bytes()] == []
