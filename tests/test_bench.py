"""``bench/run.py`` end to end at a small scale, so that the benchmark keeps working as the tools
change: it must finish, find a direct query returning the framework's very report, and print
every figure the README's table is generated from (``bench/readme_table.render``). Its timings
are not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
SMALL = [
    "--items", "20000", "--small-items", "5000", "--repeats", "1", "--naive-steps", "2", "4",
    "--reads", "50", "--sensor-scopes", "50", "--sensor-ticks", "1", "--service-seconds", "1",
    "--ui-partitions", "100", "300", "--ui-materialised", "20",
    "--fleet-scopes", "20000", "--fleet-grid-scopes", "2000", "--fleet-days", "2",
    "--one-scope-sizes", "20", "200", "--fleet-items", "4000", "--fleet-backfill-scopes", "6",
    "--fleet-baseline-scopes", "2", "--scopes-per-run", "3",
    "--finalise-batches", "20", "200",
]  # fmt: skip


def test_the_benchmark_runs_and_checks_the_direct_query_against_the_framework(
    tmp_path, monkeypatch
):
    out = tmp_path / "results.json"
    command = [sys.executable, "bench/run.py", *SMALL, "--folder", str(tmp_path), "--out", str(out)]
    finished = subprocess.run(
        command, cwd=PROJECT, capture_output=True, text=True, timeout=900, check=False
    )
    assert finished.returncode == 0, finished.stderr[-5000:]
    figures = json.loads(out.read_text())
    assert figures["direct"]["same_rows_as_framework"] is True
    assert figures["commands"]["report_s"] > 0 and figures["commands"]["status_s"] > 0
    # The service under wrk (installed by .ci/run): every kind of read, one and two workers, of
    # a report near the limit of 700 fields.
    assert figures["service"]["rows"] >= 600
    for workers in ("workers_1", "workers_2"):
        for kind in ("full", "conditional", "ceiling"):
            assert figures["service"][workers][kind]["reads_per_s"] > 0
    assert set(figures["ratios"]) >= {
        "framework_over_direct",
        "naive_over_framework",
        "per_entity_1m_over_100k",
        "rss_1m_over_100k",
    }
    lifted = figures["finalise"]["lifted_200"]
    assert (lifted["partials_folded"], lifted["batches_folded_unlifted"]) == (4, 0)
    crashed = figures["finalise"]["last_shard_unlifted_200"]
    assert (crashed["partials_folded"], crashed["batches_folded_unlifted"]) == (3, 50)
    monkeypatch.syspath_prepend(str(PROJECT / "bench"))
    from readme_table import render

    health = figures["partitions_ui"]["partitions_300"]["partition_health"]
    assert (
        health["response_bytes"]
        > figures["partitions_ui"]["partitions_100"]["partition_health"]["response_bytes"]
    )
    # Every scope of the backfill reported, in fewer runs than scopes.
    assert figures["fleet"]["batched"]["runs"] == 2 and figures["fleet"]["baseline"]["runs"] == 2
    assert set(figures["one_scope"]["large_over_small"]) >= {"utilisation", "reader_staleness"}
    fleet = figures["fleet_sim"]
    assert figures["targets"]["fleet_runs_daily_over_policy"]["met"] == fleet["verdict"]["met"]

    table = render([figures])
    assert "20,000 work items" in table
    assert f"{figures['reads']['store_read']['p99_ms']:.2f} ms" in table
    assert f"300: {health['best_s']:.2f} s" in table
    assert f"{fleet['policy']['runs_per_day']['total']:,} / 20,000" in table
    assert f"200: {lifted['finalise_s']:.2f} s" in table
