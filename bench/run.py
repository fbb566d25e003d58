"""The benchmark: the framework against the direct query and the naive design, in one run.

    python bench/run.py                       # SQLite files under $TMPDIR/pc-bench
    python bench/run.py --url postgresql+psycopg2://postgres@127.0.0.1:5432/bench

On one source with one space of N work items (``single_space_scale``; built once, reused while
its ``source_meta`` matches), it measures the unused_fields report of that space computed

- by the direct query (``direct_query.py``): the physical-limit proxy;
- by the framework through Dagster, in-process and with the multiprocess executor (forkserver),
  each run in a fresh process (``materialise.py``), which also gives its peak memory;
- by the naive one-step-per-batch job (``naive.py``), capped and extrapolated;

then the latency of reading the stored report, the refresh sensor's tick over 1,000, 10,000 and
100,000 scopes with 1% of them changed (``sensor_tick.py``), the same questions about one scope
in a fleet of 1,000 and of 100,000 (``one_scope.py``), a partition backfill of 200 small scopes
through the webserver and daemon, many to a run, against one run per scope (``fleet.py``),
finalise of a scope of 20,000 batches against 200 on a simulated ledger (``finalise.py``), the
queries of the report asset's Partitions tab at as many
partitions through a real webserver (``partitions_ui.py``), and the refresh policy over a
synthetic fleet of 10,000,000 scopes against refreshing every scope daily (``fleet_sim.py``).
Ratios are taken between figures of this one run; repeated timings are interleaved (framework,
then every direct formulation, round after round) so that a burst of load on the machine hits all
of them alike, and the best of each is kept.

It prints one JSON document and writes it to ``--out``; ``readme_table.py`` renders it into the
README. With ``--url``, source and store share that PostgreSQL database, one schema per scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import direct_query
import finalise
import fleet
import fleet_sim
import one_scope
import partitions_ui
import sensor_tick
import sqlalchemy as sa
from read_latency import measure_reads
from sqlalchemy.engine import make_url

from precompute_assets.core import schema as store_schema
from precompute_assets.core.db import create_databases, create_engine_for, sqlite_url
from precompute_assets.core.reader import ReportReader
from precompute_assets.core.registry import load_tools
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import ExecutorSettings, Settings
from precompute_assets.demo.source import DemoScale, generate_source, single_space_scale
from precompute_assets.demo.source.generate import GENERATOR_VERSION

BENCH_DIR = Path(__file__).resolve().parent
TOOL = "unused_fields"
SCOPE = "t1-s001"  # the one space of a single-space source
# The service is read at the size its targets are set for: the report of a space near the limit of
# 700 fields (about 660 rows, 120 KB), from a small source of its own (one space in four is near
# the limit; the work items' number does not change the report's size).
SERVICE_SCALE = DemoScale(tenants=1, spaces=4, work_items=40_000)
CHILD_TIMEOUT_S = 900
EXECUTORS = ("in_process", "multiprocess")
CONTIGUOUS = "contiguous_ids (assumes contiguous ids: not general, never chosen)"


METHOD = {
    "framework": (
        "each materialisation in a fresh Python process, as Dagster's run launcher gives each "
        "run; clock around execute_in_process / execute_job once imports and definitions are "
        "loaded, so it covers initialise, shards, finalise with the report's commit and the "
        "asset checks; Dagster instance on SQLite in a temporary directory"
    ),
    "multiprocess": (
        "execute_job with a reconstructable job, forkserver start method with preloaded "
        "modules; the forkserver starts inside each run, as in a fresh run worker"
    ),
    "framework_without_dagster": (
        "the same three phases as plain functions (precompute_assets/job.py): what the "
        "framework's own work costs, the rest of a run being Dagster's"
    ),
    "direct": (
        "one SQL statement per formulation, every row fetched; its rows checked equal to the "
        "framework's stored report for the same reference time"
    ),
    "interleaving": "rounds of: each executor, without Dagster, every direct formulation",
    "naive": "two capped runs, time extrapolated along the line through them to every batch",
    "peak_rss": "VmHWM of the in-process run's process, imports included",
    "sensor": "bench/sensor_tick.py measure() on SQLite sources, whatever --url says",
    "service": (
        "bench/service_load.py: precompute serve's app (bench/service_app.py adds the ceiling "
        "route) with 1 then 2 workers, wrk -t2 -c64 on the same 2 CPUs, a tenant's key; full "
        "reads of the report of the space with the most fields of a small source (SERVICE_SCALE: "
        "about 660 rows, 120 KB, as at the limit of 700 fields), If-None-Match reads (304), "
        "and the ceiling: the same bytes from the same server with no key and no database; the "
        "three in turn, twice, the best run of each kept"
    ),
    "partitions_ui": "bench/partitions_ui.py measure(): a real dagster-webserver on an instance "
    "of dagster.yaml (SQLite) or, with --url, of deploy/dagster.yaml in a database of that server",
    "fleet_sim": "bench/fleet_sim.py in this process: a simulation, the same whatever --url says",
    "one_scope": "bench/one_scope.py compare(): the same one-scope calls at two fleet sizes, "
    "SQLite sources of the same work items, median of many calls",
    "fleet": "bench/fleet.py measure(): a partition backfill launched through a real webserver "
    "and daemon on dagster.yaml (SQLite, 2 runs at once), batched and one scope per run",
    "finalise": (
        "SIMULATED LEDGER: scanning 100M entities would take hours, so bench/finalise.py writes "
        "the batches' entries (up to 700 keys each) directly, as a job's shards would have "
        "checkpointed them, then run_shard reads each shard's back and lifts it (one shard left "
        "unlifted for the crash case); finalise_job is timed in a fresh process, its peak RSS "
        "is VmHWM reset right before it (pandas and the rest imported already); the store on "
        "--url's backend, the small source on SQLite"
    ),
}


@dataclass(frozen=True)
class Databases:
    """Where one scale's source and report store live."""

    items: int
    source_url: str
    store_url: str


@dataclass(frozen=True)
class Options:
    """How the framework is run and timed."""

    batch_size: int
    max_shards: int
    max_concurrent: int
    repeats: int
    tmp_dir: str


# ------------------------------------------------------------------------------ databases


def databases_for(url: str | None, folder: Path, items: int, name: str = "") -> Databases:
    """SQLite: two files per scale. PostgreSQL: one schema per scale in the given database
    (created if missing), reached through ``search_path`` in the URL, so that every process
    (Dagster's step processes too) finds the tables from the URL alone. ``name`` tells apart
    sources of other shapes (default: the number of items)."""
    name = name or str(items)
    if url is None:
        return Databases(
            items,
            sqlite_url(folder / f"source-{name}.db"),
            sqlite_url(folder / f"reports-{name}.db"),
        )
    create_databases(make_url(url), [make_url(url).database])
    schema = f"pc_bench_{name}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    finally:
        engine.dispose()
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    scoped_url = scoped.render_as_string(hide_password=False)
    return Databases(items, scoped_url, scoped_url)


def ensure_source(databases: Databases) -> dict[str, Any]:
    """Reuse the source if its ``source_meta`` says it was made at this scale, else build it."""
    scale = single_space_scale(databases.items)
    engine = create_engine_for(databases.source_url)
    try:
        expected, found = _expected_meta(scale), _source_meta(engine)
        reused = {key: found.get(key) for key in expected} == expected
    finally:
        engine.dispose()
    if reused:
        return {"work_items": databases.items, "reused": True}
    summary = generate_source(databases.source_url, scale)
    return {
        "work_items": summary.work_items,
        "field_values": summary.field_values,
        "reused": False,
        "generated_s": summary.seconds,
    }


def _source_meta(engine: sa.Engine) -> dict[str, str]:
    if "source_meta" not in sa.inspect(engine).get_table_names():
        return {}
    with engine.connect() as connection:
        return dict(connection.execute(sa.text("SELECT key, value FROM source_meta")).all())


def _expected_meta(scale: DemoScale) -> dict[str, str]:
    # The settings part of source_meta (the rest names the edge cases).
    settings = {
        "generator_version": GENERATOR_VERSION,
        "seed": scale.seed,
        "reference_time": scale.reference_time,
        "tenants": scale.tenants,
        "spaces": scale.spaces,
        "work_items": scale.work_items,
        "values_per_item": scale.values_per_item,
    }
    return {key: str(value) for key, value in settings.items()}


def fresh_store(databases: Databases) -> None:
    """Start from an empty store, its schema version too: every run of the bench does the same
    work, whichever release made the store before."""
    engine = create_engine_for(databases.store_url)
    try:
        with engine.begin() as connection:
            for table in [*reversed(store_schema.metadata.sorted_tables), "alembic_version"]:
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ children


def run_child(script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run a bench script in a fresh Python process; return the JSON line it prints last."""
    command = [sys.executable, str(BENCH_DIR / script), json.dumps(spec)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=BENCH_DIR.parent
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if not result.get("success"):
        raise RuntimeError(f"{script}: the run failed:\n{done.stderr[-3000:]}")
    return result


def materialise(
    databases: Databases, executor: str, options: Options, scope: str = SCOPE
) -> dict[str, Any]:
    return run_child(
        "materialise.py",
        {
            "executor": executor,
            "source_url": databases.source_url,
            "store_url": databases.store_url,
            "scope": scope,
            "batch_size": options.batch_size,
            "max_shards": options.max_shards,
            "max_concurrent": options.max_concurrent,
            "tmp_dir": options.tmp_dir,
        },
    )


# ------------------------------------------------------------------------------ measurements


def stored_report(databases: Databases) -> tuple[direct_query.ReportParams, Any]:
    """The parameters (space, reference times) of the stored report, and its rows in compared
    shape."""
    store = ReportStore(create_engine_for(databases.store_url))
    try:
        stored = store.read(TOOL, SCOPE)
    finally:
        store.engine.dispose()
    if stored is None:
        raise LookupError(f"no {TOOL} report stored for {SCOPE}")
    header, rows = stored
    return direct_query.report_params(header.summary), direct_query.framework_rows(rows)


def time_direct(databases: Databases, usages: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each formulation once, checked against the framework's latest stored report."""
    params, expected = stored_report(databases)
    engine = create_engine_for(databases.source_url, must_exist=True)
    results = {}
    try:
        with engine.connect() as source:
            for name, usage in usages.items():
                timed = direct_query.run_report(source, usage, params)
                results[name] = {
                    "seconds": timed.seconds,
                    "rows": len(timed.rows),
                    "same_rows_as_framework": direct_query.same_rows(timed.rows, expected),
                }
    finally:
        engine.dispose()
    return results


def compare_at_scale(
    databases: Databases,
    options: Options,
    usages: dict[str, str],
    executors: tuple[str, ...] = EXECUTORS,
) -> dict[str, Any]:
    """Interleaved rounds: the framework with each executor and without Dagster, then every
    direct formulation."""
    runs: dict[str, list[dict[str, Any]]] = {executor: [] for executor in executors}
    plain: list[dict[str, Any]] = []
    direct: dict[str, list[dict[str, Any]]] = {name: [] for name in usages}
    for _ in range(options.repeats):
        for executor, executor_runs in runs.items():
            executor_runs.append(materialise(databases, executor, options))
        plain.append(materialise(databases, "without_dagster", options))
        for name, result in time_direct(databases, usages).items():
            direct[name].append(result)
    return {
        "items": databases.items,
        "framework": {executor: summarise_runs(done) for executor, done in runs.items()},
        "framework_without_dagster": summarise_plain(plain),
        "direct": {name: summarise_direct(done) for name, done in direct.items()},
    }


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [run["seconds"] for run in runs]
    return {
        **spread(seconds),
        "peak_rss_mb": [round(run["peak_rss_kb"] / 1024, 1) for run in runs],
        "dagster_events": runs[0]["dagster_events"],
        "rss_before_run_mb": [round(run["rss_before_run_kb"] / 1024, 1) for run in runs],
    }


def summarise_plain(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The phases of the fastest run without Dagster."""
    fastest = min(runs, key=lambda run: run["seconds"])
    return {**spread([run["seconds"] for run in runs]), "phases_of_best_s": fastest["phases_s"]}


def summarise_direct(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **spread([run["seconds"] for run in runs]),
        "rows": runs[0]["rows"],
        "same_rows_as_framework": all(run["same_rows_as_framework"] for run in runs),
    }


def spread(seconds: list[float]) -> dict[str, Any]:
    """The runs, the best, and the noise: how far the worst run is above the best."""
    best = min(seconds)
    return {
        "runs_s": [round(s, 3) for s in seconds],
        "best_s": round(best, 3),
        "spread": round(max(seconds) / best - 1, 3),
    }


def time_naive(databases: Databases, options: Options, caps: list[int]) -> dict[str, Any]:
    """The naive job at each cap of mapped steps, extrapolated along the line through them."""
    params, _ = stored_report(databases)
    plan = {
        "source_url": databases.source_url,
        "scope": SCOPE,
        **params,
        "first_key": 1,
        "last_key": databases.items,
        "batch_size": options.batch_size,
        "tmp_dir": options.tmp_dir,
    }
    _check_single_space_range(databases, params["space_id"])
    runs = [run_child("naive.py", {**plan, "max_steps": cap}) for cap in caps]
    (low, high), batches = (runs[0], runs[-1]), runs[-1]["batches"]
    per_step = (high["seconds"] - low["seconds"]) / (high["mapped_steps"] - low["mapped_steps"])
    fixed = low["seconds"] - per_step * low["mapped_steps"]
    return {
        "executor": "multiprocess, Dagster's default (spawn, max_concurrent = CPUs)",
        "naive_extrapolated_from_steps": [run["mapped_steps"] for run in runs],
        "runs_s": [round(run["seconds"], 3) for run in runs],
        "batches": batches,
        "fit": {"fixed_s": round(fixed, 3), "per_step_s": round(per_step, 3)},
        "extrapolated_s": round(fixed + per_step * batches, 1),
    }


def _check_single_space_range(databases: Databases, space_id: int) -> None:
    # The naive job cuts ids 1..N; it must be the space's range in a single-space source.
    engine = create_engine_for(databases.source_url, must_exist=True)
    try:
        with engine.connect() as source:
            bounds = source.execute(
                sa.text("SELECT MIN(id), MAX(id) FROM work_items WHERE space_id = :space"),
                {"space": space_id},
            ).one()
    finally:
        engine.dispose()
    if tuple(bounds) != (1, databases.items):
        raise RuntimeError(f"expected work items 1..{databases.items}, found {tuple(bounds)}")


def time_reads(databases: Databases, count: int, rounds: int) -> dict[str, Any]:
    store = ReportStore(create_engine_for(databases.store_url))
    source = create_engine_for(databases.source_url, must_exist=True)
    try:
        return measure_reads(
            ReportReader(load_tools(autoload=False), store, source), TOOL, SCOPE, count, rounds
        )
    finally:
        store.engine.dispose()
        source.dispose()


def time_commands(databases: Databases, rounds: int) -> dict[str, Any]:
    """Wall time of ``precompute report`` and ``precompute status`` in a fresh process each, the
    best of ``rounds`` + 2: mostly what a command imports before it reads."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PRECOMPUTE_")},
        "PRECOMPUTE_SOURCE_URL": databases.source_url,
        "PRECOMPUTE_STORE_URL": databases.store_url,
    }
    commands = {
        "report": ["report", TOOL, SCOPE, "--unused-only"],
        "status": ["status", TOOL],
    }
    timed = {}
    for name, argv in commands.items():
        seconds = []
        for _ in range(rounds + 2):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "precompute_assets.cli", *argv],
                env=env,
                check=True,
                capture_output=True,
            )
            seconds.append(time.perf_counter() - started)
        timed[f"{name}_s"] = round(min(seconds), 3)
    return timed


def time_finalise(
    url: str | None, folder: Path, counts: list[int], max_shards: int
) -> dict[str, Any]:
    """Finalise of a lifted job at each batch count, and at the most batches with its last shard
    left unlifted by a crash, each on a ledger of its own."""
    source_url = sqlite_url(folder / "finalise-source.db")
    scope = finalise.prepare_source(source_url)
    cases = [(count, "lifted") for count in counts] + [(max(counts), "last_shard_unlifted")]
    results: dict[str, Any] = {"scope": scope, "max_shards": max_shards}
    for count, state in cases:
        store_url = _empty_store(url, folder, f"finalise_{state}_{count}")
        spec = finalise.prepare(source_url, store_url, scope, count, max_shards, state)
        results[f"{state}_{count}"] = {**spec["prepared"], **run_child("finalise.py", spec)}
    fewest, most = results[f"lifted_{min(counts)}"], results[f"lifted_{max(counts)}"]
    results["batches"] = [min(counts), max(counts)]
    results["peak_rss_ratio"] = round(most["peak_rss_mb"] / fewest["peak_rss_mb"], 3)
    return results


def _empty_store(url: str | None, folder: Path, name: str) -> str:
    """A store of its own: a new SQLite file, or a new schema of the PostgreSQL database."""
    if url is None:
        path = folder / f"{name}.db"
        for leftover in folder.glob(f"{name}.db*"):
            leftover.unlink()
        return sqlite_url(path)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS pc_bench_{name} CASCADE")
            connection.exec_driver_sql(f"CREATE SCHEMA pc_bench_{name}")
    finally:
        engine.dispose()
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path=pc_bench_{name}"})
    return scoped.render_as_string(hide_password=False)


def time_sensor(scopes: list[int], folder: Path, ticks: int, items: int) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"backend": "sqlite (bench/sensor_tick.py)", "ticks": ticks}
    for count in scopes:
        results[f"scopes_{count}"] = sensor_tick.measure(count, folder, ticks, items)
    return results


# ------------------------------------------------------------------------------ verdict


def ratios(figures: dict[str, Any], large: int, small: int) -> dict[str, Any]:
    big, little = figures["scales"][str(large)], figures["scales"][str(small)]
    direct_best = figures["direct"]["best_s"]
    framework = best_executor(big)
    per_entity = {
        executor: round(
            (big["framework"][executor]["best_s"] / large)
            / (little["framework"][executor]["best_s"] / small),
            3,
        )
        for executor in big["framework"]
    }
    rss = [max(scale["framework"]["in_process"]["peak_rss_mb"]) for scale in (big, little)]
    return {
        "framework_over_direct": round(framework["best_s"] / direct_best, 3),
        "framework_over_direct_in_process": round(
            big["framework"]["in_process"]["best_s"] / direct_best, 3
        ),
        "framework_over_direct_multiprocess": round(
            big["framework"]["multiprocess"]["best_s"] / direct_best, 3
        ),
        # Against the formulation that won at the large scale, timed at the small one.
        "framework_over_direct_small": round(
            best_executor(little)["best_s"] / min(d["best_s"] for d in little["direct"].values()),
            3,
        ),
        "naive_over_framework": round(figures["naive"]["extrapolated_s"] / framework["best_s"], 1),
        "per_entity_1m_over_100k": round(
            (framework["best_s"] / large) / (best_executor(little)["best_s"] / small), 3
        ),
        "per_entity_1m_over_100k_by_executor": per_entity,
        "rss_1m_over_100k": round(rss[0] / rss[1], 3),
    }


def best_executor(scale: dict[str, Any]) -> dict[str, Any]:
    name = min(scale["framework"], key=lambda executor: scale["framework"][executor]["best_s"])
    return {"executor": name, "best_s": scale["framework"][name]["best_s"]}


def targets(figures: dict[str, Any], backend: str) -> dict[str, dict[str, Any]]:
    found = figures["ratios"]
    fleet = figures["fleet_sim"]["verdict"]
    if backend == "sqlite":
        name, value = "framework_over_direct_sqlite_in_process", "framework_over_direct_in_process"
    else:
        name, value = "framework_over_direct_postgresql_best_executor", "framework_over_direct"
    checks: list[tuple[str, float | None, str, float]] = [
        (name, found[value], "<=", 1.3),
        *_small_scale_target(found, backend),
        ("naive_over_framework", found["naive_over_framework"], ">=", 20),
        ("per_entity_1m_over_100k", found["per_entity_1m_over_100k"], "<=", 1.2),
        ("rss_1m_over_100k", found["rss_1m_over_100k"], "<=", 1.5),
        ("read_p99_ms", figures["read_p99_ms"], "<=", 5),
        ("sensor_tick_10k_s", figures.get("sensor_tick_10k_s"), "<=", 3),
        ("sensor_tick_largest_1pct_changed_s", figures.get("sensor_tick_largest_s"), "<=", 3),
        ("one_scope_large_over_small", _dig(figures, ("one_scope", "worst_ratio")), "<=", 1.5),
        (
            "fleet_scopes_per_min_over_one_run_per_scope",
            _dig(figures, ("fleet", "scopes_per_min_over_baseline")),
            ">=",
            10,
        ),
        ("fleet_compute_share", _dig(figures, ("fleet", "compute_share")), ">=", 0.5),
        ("fleet_runs_daily_over_policy", fleet["runs_daily_over_policy"], ">=", 20),
        ("report_command_s", figures["commands"]["report_s"], "<=", 0.4),
        ("status_command_s", figures["commands"]["status_s"], "<=", 1),
        *service_targets(figures.get("service")),
        ("finalise_peak_rss_ratio", figures["finalise"]["peak_rss_ratio"], "<=", 1.2),
        ("finalise_most_batches_s", figures["finalise_most_batches_s"], "<=", 2),
    ]
    compare: dict[str, Callable[[float, float], bool]] = {
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }
    results = {
        key: {
            "value": got,
            "target": f"{op} {limit}",
            "met": None if got is None else compare[op](got, limit),
        }
        for key, got, op, limit in checks
    }
    # Fewer runs count only at the same freshness of the high scopes.
    results["fleet_runs_daily_over_policy"]["met"] = fleet["met"]
    return results


def _small_scale_target(
    found: dict[str, Any], backend: str
) -> list[tuple[str, float | None, str, float]]:
    """PostgreSQL's framework / direct at the small scale, where Dagster's fixed cost weighs."""
    if backend == "sqlite":
        return []
    return [
        ("framework_over_direct_postgresql_small", found["framework_over_direct_small"], "<=", 2)
    ]


def service_targets(service: dict[str, Any] | None) -> list[tuple[str, float | None, str, float]]:
    two = (service or {}).get("workers_2", {})
    value = (lambda *path: _dig(two, path)) if two else (lambda *path: None)
    return [
        ("service_reads_per_s_2_workers", value("full", "reads_per_s"), ">=", 4_000),
        ("service_conditional_per_s_2_workers", value("conditional", "reads_per_s"), ">=", 6_000),
        ("service_p99_ms_2_workers", value("full", "p99_ms"), "<=", 50),
        ("service_over_ceiling_2_workers", value("full_over_ceiling"), ">=", 0.8),
    ]


def _dig(figures: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The figure at ``path``, or None where this run did not measure it."""
    for name in path:
        if not isinstance(figures, dict) or name not in figures:
            return None
        figures = figures[name]
    return figures


def time_service(databases: Databases, options: Options, seconds: int) -> dict[str, Any]:
    """The service under load, reading the report of ``SERVICE_SCALE``'s space with the most
    fields, computed here first."""
    generate_source(databases.source_url, SERVICE_SCALE)
    fresh_store(databases)
    scope = largest_space(databases.source_url)
    materialise(databases, "in_process", options, scope)
    return run_child(
        "service_load.py",
        {
            "store_url": databases.store_url,
            "source_url": databases.source_url,
            "tool": TOOL,
            "scope": scope,
            "seconds": seconds,
        },
    )


def largest_space(source_url: str) -> str:
    """The key of the space that associates the most fields."""
    engine = create_engine_for(source_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT s.key FROM spaces s JOIN space_fields f ON f.space_id = s.id "
                    "GROUP BY s.key ORDER BY count(*) DESC, s.key LIMIT 1"
                )
            ).scalar_one()
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    defaults = Settings.from_env({})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL URL; SQLite files when absent")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--small-items", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-shards", type=int, default=defaults.max_shards)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each figure")
    parser.add_argument("--naive-steps", type=int, nargs=2, default=[4, 16])
    parser.add_argument("--reads", type=int, default=1_000)
    parser.add_argument("--sensor-scopes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--sensor-ticks", type=int, default=5)
    parser.add_argument("--service-seconds", type=int, default=10, help="each wrk run's length")
    parser.add_argument(
        "--fleet-items", type=int, default=one_scope.WORK_ITEMS, help="work items of many scopes"
    )
    parser.add_argument("--one-scope-sizes", type=int, nargs=2, default=[1_000, 100_000])
    parser.add_argument("--fleet-backfill-scopes", type=int, default=200)
    parser.add_argument("--fleet-baseline-scopes", type=int, default=40)
    parser.add_argument("--scopes-per-run", type=int, default=ExecutorSettings().scopes_per_run)
    parser.add_argument("--ui-partitions", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--ui-materialised", type=int, default=1_000)
    parser.add_argument("--fleet-scopes", type=int, default=10_000_000)
    parser.add_argument("--fleet-grid-scopes", type=int, default=100_000)
    parser.add_argument("--fleet-days", type=float, default=14.0)
    parser.add_argument(
        "--finalise-batches", type=int, nargs=2, default=[200, 20_000], help="fewest, most"
    )
    parser.add_argument(
        "--folder", type=Path, default=Path(tempfile.gettempdir()) / "pc-bench", help="work files"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    return parser.parse_args()


def describe_run(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    import dagster

    argv = " ".join(sys.argv[1:])
    return {
        "command": f"python bench/run.py {argv}".strip(),
        "backend": backend,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "dagster": dagster.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "method": METHOD,
        "settings": {
            "batch_size": args.batch_size,
            "max_shards": args.max_shards,
            "max_concurrent": args.max_concurrent,
            "scan_threads": Settings.from_env().scan_threads,
            "repeats": args.repeats,
        },
    }


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = "sqlite" if args.url is None else make_url(args.url).get_backend_name()
    args.folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    figures = describe_run(args, backend)
    options = Options(
        args.batch_size, args.max_shards, args.max_concurrent, args.repeats, str(args.folder)
    )
    large = databases_for(args.url, args.folder, args.items)
    small = databases_for(args.url, args.folder, args.small_items)
    figures["sources"] = prepare_sources([large, small])
    figures.update(compare(large, small, options))
    progress(f"naive job, capped at {args.naive_steps} mapped steps")
    figures["naive"] = time_naive(large, options, args.naive_steps)
    progress(f"{args.reads:,} reads of each kind")
    figures["reads"] = {
        **time_reads(large, args.reads, args.repeats),
        "recompute_s": figures["direct"]["best_s"],
    }
    figures["read_p99_ms"] = figures["reads"]["store_read"]["p99_ms"]
    progress("start-up of precompute report and status")
    figures["commands"] = time_commands(large, args.repeats)
    if args.url is None:
        figures.update(measure_fleet(args))
    progress(f"service reads under wrk, {args.service_seconds} s a run")
    service = databases_for(args.url, args.folder, SERVICE_SCALE.work_items, "service")
    figures["service"] = time_service(service, options, args.service_seconds)
    progress(f"the Partitions tab's queries at {args.ui_partitions} partitions")
    figures["partitions_ui"] = partitions_ui.measure(
        args.ui_partitions, args.ui_materialised, args.repeats, args.url, partitions_ui.free_port()
    )
    progress(f"the refresh policy over a synthetic fleet of {args.fleet_scopes:,} scopes")
    figures["fleet_sim"] = simulate_fleet(args)
    progress(f"finalise of {args.finalise_batches} batches on a simulated ledger")
    figures["finalise"] = time_finalise(
        args.url, args.folder, args.finalise_batches, args.max_shards
    )
    most = max(args.finalise_batches)
    figures["finalise_most_batches_s"] = figures["finalise"][f"lifted_{most}"]["finalise_s"]
    figures["ratios"] = ratios(figures, args.items, args.small_items)
    figures["targets"] = targets(figures, backend)
    figures["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    return figures


def measure_fleet(args: argparse.Namespace) -> dict[str, Any]:
    """The fleet's figures, on SQLite sources and the embedded instance whatever ``--url`` says:
    measured once, in the SQLite run."""
    figures: dict[str, Any] = {}
    progress(f"sensor ticks over {args.sensor_scopes} scopes")
    figures["sensor"] = time_sensor(
        args.sensor_scopes, args.folder / "sensor", args.sensor_ticks, args.fleet_items
    )
    figures["sensor_tick_10k_s"] = figures["sensor"].get("scopes_10000", {}).get("tick_max_s")
    largest = figures["sensor"][f"scopes_{max(args.sensor_scopes)}"]
    figures["sensor_tick_largest_s"] = largest["tick_with_changes_s"]
    progress(f"questions about one scope at {args.one_scope_sizes} scopes")
    figures["one_scope"] = one_scope.compare(
        args.one_scope_sizes, args.folder / "sensor", max(1, args.reads // 20), args.fleet_items
    )
    progress(f"a backfill of {args.fleet_backfill_scopes} small scopes through the daemon")
    figures["fleet"] = fleet.measure(
        args.fleet_backfill_scopes,
        args.fleet_baseline_scopes,
        args.scopes_per_run,
        args.folder / "fleet",
    )
    return figures


def simulate_fleet(args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        *("--scopes", str(args.fleet_scopes), "--days", str(args.fleet_days)),
        *("--grid-scopes", str(args.fleet_grid_scopes)),
    ]
    return fleet_sim.run(fleet_sim.parse_args(argv), argv)


def prepare_sources(scales: list[Databases]) -> dict[str, Any]:
    """Build or reuse each scale's source; empty its store."""
    sources = {}
    for databases in scales:
        progress(f"source with {databases.items:,} work items")
        sources[str(databases.items)] = ensure_source(databases)
        fresh_store(databases)
    return sources


def compare(large: Databases, small: Databases, options: Options) -> dict[str, Any]:
    """The framework against every direct formulation at the large scale; at the small one,
    against the formulation that won at the large."""
    progress(f"framework and direct query at {large.items:,} items, {options.repeats} rounds")
    usages = {**direct_query.FORMULATIONS, CONTIGUOUS: direct_query.CONTIGUOUS_IDS}
    at_large = compare_at_scale(large, options, usages)
    direct = choose_direct(at_large["direct"])
    progress(f"framework and direct query at {small.items:,} items, {options.repeats} rounds")
    chosen = {direct["formulation"]: direct_query.FORMULATIONS[direct["formulation"]]}
    at_small = compare_at_scale(small, options, chosen)
    return {
        "direct": direct,
        "framework": {
            "best_executor": best_executor(at_large),
            **{executor: timed["best_s"] for executor, timed in at_large["framework"].items()},
        },
        "scales": {str(large.items): at_large, str(small.items): at_small},
    }


def choose_direct(direct: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fastest formulation that is correct in general and returned the framework's rows."""
    eligible = {
        name: result
        for name, result in direct.items()
        if name in direct_query.FORMULATIONS and result["same_rows_as_framework"]
    }
    if not eligible:
        raise RuntimeError("no direct formulation returned the framework's report")
    name = min(eligible, key=lambda n: eligible[n]["best_s"])
    return {"formulation": name, "best_s": eligible[name]["best_s"], "same_rows_as_framework": True}


def main() -> None:
    warnings.simplefilter("ignore")
    args = parse_args()
    figures = run(args)
    document = json.dumps(figures, indent=2)
    args.out.write_text(document + "\n")
    print(document)


if __name__ == "__main__":
    main()
