"""Render the benchmark's JSON into README.md, so the published figures are never typed by hand.

    python bench/readme_table.py bench/results.json [bench/results-postgresql.json]

Each file is one ``bench/run.py`` document; each becomes a column (its backend). The section
between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is replaced; without the markers it
is inserted right before ``## Development``. Nothing else in the README is touched.
"""

from __future__ import annotations

import argparse
import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"
BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

Figures = dict[str, Any]


def _scale(doc: Figures, which: int) -> Figures:
    """The larger (0) or smaller (1) scale's figures."""
    sizes = sorted(doc["scales"], key=int, reverse=True)
    return doc["scales"][sizes[which]]


def _framework(executor: str, which: int = 0) -> Callable[[Figures], str]:
    return lambda doc: _seconds(_scale(doc, which)["framework"][executor])


def _seconds(timed: Figures) -> str:
    return f"{timed['best_s']:.2f} s (+{timed['spread'] * 100:.0f}%)"


def _direct(doc: Figures) -> str:
    chosen = doc["direct"]["formulation"]
    return f"{_seconds(_scale(doc, 0)['direct'][chosen])}, `{chosen}`"


def _plain(doc: Figures) -> str:
    plain = _scale(doc, 0)["framework_without_dagster"]
    phases = ", ".join(f"{name} {s:.2f}" for name, s in plain["phases_of_best_s"].items())
    return f"{_seconds(plain)}: {phases}"


def _naive(doc: Figures) -> str:
    naive = doc["naive"]
    steps = " and ".join(str(s) for s in naive["naive_extrapolated_from_steps"])
    return (
        f"{naive['extrapolated_s']:.0f} s (extrapolated from {steps} of {naive['batches']} steps)"
    )


def _rss(doc: Figures) -> str:
    peaks = [max(_scale(doc, which)["framework"]["in_process"]["peak_rss_mb"]) for which in (0, 1)]
    return f"{peaks[0]:.0f} MB / {peaks[1]:.0f} MB"


def _latency(kind: str) -> Callable[[Figures], str]:
    def render(doc: Figures) -> str:
        read = doc["reads"][kind]
        rounds = read.get("p99_ms_by_round")
        by_round = f" (p99 by round: {', '.join(f'{p:.2f}' for p in rounds)})" if rounds else ""
        return f"{read['p50_ms']:.2f} / {read['p99_ms']:.2f} ms{by_round}"

    return render


def _commands(doc: Figures) -> str:
    commands = doc.get("commands")
    if commands is None:
        return "n/a"
    return f"{commands['report_s']:.2f} s / {commands['status_s']:.2f} s"


def _service(kind: str, workers: int) -> Callable[[Figures], str]:
    def render(doc: Figures) -> str:
        service = doc.get("service")
        if service is None:
            return "n/a"
        timed = service[f"workers_{workers}"][kind]
        return (
            f"{timed['reads_per_s']:,}/s, p50 {timed['p50_ms']:.1f} / p99 {timed['p99_ms']:.1f} ms"
        )

    return render


def _partitions(query: str) -> Callable[[Figures], str]:
    """One of the Partitions tab's queries at each number of partitions (the largest with the
    size of its response)."""

    def render(doc: Figures) -> str:
        found = doc.get("partitions_ui")
        if found is None:
            return "n/a"
        sizes = sorted((k for k in found if k.startswith("partitions_")), key=lambda k: int(k[11:]))
        cells = [f"{int(size[11:]):,}: {found[size][query]['best_s']:.2f} s" for size in sizes]
        largest = found[sizes[-1]][query]["response_bytes"]
        return f"{', '.join(cells)} ({largest / 1e6:.2g} MB)" if largest > 1e5 else ", ".join(cells)

    return render


def _ticks(doc: Figures) -> str:
    sensor = doc.get("sensor", {})
    if "tick_with_changes_s" not in sensor.get("scopes_100000", {}):
        return "n/a"
    sizes = sorted((k for k in sensor if k.startswith("scopes_")), key=lambda k: int(k[7:]))
    cells = [
        f"{int(size[7:]):,}: {sensor[size]['tick_with_changes_s']:.2f} s "
        f"({sensor[size]['sql_statements_per_tick']} statements; "
        f"{sensor[size]['first_listing_s']:.1f} s)"
        for size in sizes
    ]
    return ", ".join(cells)


def _one_scope(doc: Figures) -> str:
    found = doc.get("one_scope")
    if found is None:
        return "n/a"
    sizes = sorted((k for k in found if k.startswith("scopes_")), key=lambda k: int(k[7:]))
    small, large = (found[size]["best_ms"] for size in (sizes[0], sizes[-1]))
    return ", ".join(f"{name} {small[name]:.2f} / {large[name]:.2f}" for name in small)


def _fleet_backfill(mode: str) -> Callable[[Figures], str]:
    def render(doc: Figures) -> str:
        found = doc.get("fleet", {}).get(mode)
        if found is None:
            return "n/a"
        return (
            f"{found['scopes']} scopes in {found['runs']} runs, {found['wall_s']:.0f} s: "
            f"{found['scopes_per_min']:,.0f} scopes/min, compute {found['compute_s']:.1f} s, "
            f"share {found['compute_share']:.0%}"
        )

    return render


def _finalise(state: str) -> Callable[[Figures], str]:
    """Finalise's time and peak memory at each batch count measured in ``state``."""

    def render(doc: Figures) -> str:
        found = doc.get("finalise")
        if found is None:
            return "n/a"
        cells = []
        for count in sorted(found["batches"], reverse=True):
            timed = found.get(f"{state}_{count}")
            if timed is not None:
                cells.append(
                    f"{count:,}: {timed['finalise_s']:.2f} s, {timed['peak_rss_mb']:.0f} MB "
                    f"(+{timed['growth_mb']:.0f})"
                )
        return "; ".join(cells)

    return render


def _materialised(doc: Figures) -> str:
    found = doc.get("partitions_ui", {})
    counts = {v["materialised"] for k, v in found.items() if k.startswith("partitions_")}
    return f"{max(counts):,}" if counts else "n/a"


def _fleet(render: Callable[[Figures], str]) -> Callable[[Figures], str]:
    """A figure of the fleet simulation, or n/a in a document made before it existed."""
    return lambda doc: render(doc["fleet_sim"]) if "fleet_sim" in doc else "n/a"


def _fleet_runs(sim: Figures) -> str:
    policy, daily = sim["policy"]["runs_per_day"], sim["daily"]["runs_per_day"]
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in policy.items() if reason != "total")
    return f"{policy['total']:,} / {daily['total']:,} ({reasons})"


def _fleet_slots(sim: Figures) -> str:
    def hours(kind: str) -> str:
        slots = sim[kind]["slot_hours_per_day"]
        return f"{slots['one_run_per_scope']:,.0f} / {slots['many_scopes_per_run']:,.0f}"

    return f"policy {hours('policy')}; daily {hours('daily')}"


def _duration(hours: float) -> str:
    """A span in the unit that reads best."""
    if hours * 3600 < 60:
        return f"{hours * 3600:.2g} s"
    if hours < 1:
        return f"{hours * 60:.2g} min"
    return f"{hours:.3g} h" if hours < 48 else f"{hours / 24:.3g} days"


def _fleet_lag(sim: Figures) -> str:
    def lags(kind: str) -> str:
        fresh = sim[kind]["freshness"]
        return f"{_duration(fresh['high']['mean_lag_h'])} / {_duration(fresh['low']['mean_lag_h'])}"

    return f"policy {lags('policy')}; daily {lags('daily')}"


FIGURES: list[tuple[str, Callable[[Figures], str]]] = [
    ("direct query, fastest correct formulation", _direct),
    ("framework, in-process executor", _framework("in_process")),
    ("framework, multiprocess executor (forkserver, 2 at once)", _framework("multiprocess")),
    ("the framework's phases as plain functions, without Dagster", _plain),
    ("naive job: one mapped step per batch (spawn)", _naive),
    ("framework at the small scale, in-process", _framework("in_process", 1)),
    ("framework at the small scale, multiprocess", _framework("multiprocess", 1)),
    ("peak RSS of a materialisation, large / small scale", _rss),
    ("read a stored report (`ReportStore.read`), p50 / p99", _latency("store_read")),
    (
        "read with staleness (`ReportReader.read`), p50 / p99",
        _latency("reader_read_with_staleness"),
    ),
    ("`precompute report` / `precompute status`, start to end", _commands),
    *(
        (f"service, {label}, {workers} worker(s) (wrk, 64 connections)", _service(kind, workers))
        for workers in (1, 2)
        for kind, label in (
            ("full", "full report"),
            ("conditional", "If-None-Match (304)"),
            ("ceiling", "ceiling: same bytes, no key, no database"),
        )
    ),
    (
        "asset's Partitions tab (`PartitionHealthQuery`) by partitions, through the webserver",
        _partitions("partition_health"),
    ),
    ("asset's partition counts (`partitionStats`) by partitions", _partitions("partition_stats")),
    (
        "simulated fleet: refresh runs per day, policy / every scope daily (policy's by reason)",
        _fleet(_fleet_runs),
    ),
    (
        "simulated fleet: run-slot hours per day, one run per scope / many scopes per run",
        _fleet(_fleet_slots),
    ),
    ("simulated fleet: mean lag behind the source, high / low scopes", _fleet(_fleet_lag)),
    ("refresh tick by scopes, 1% changed (first listing of a new store)", _ticks),
    ("one-scope calls at 1,000 / 100,000 scopes, best (ms)", _one_scope),
    (
        "fleet backfill of small scopes through the daemon, many to a run",
        _fleet_backfill("batched"),
    ),
    ("the same, one run per scope (fewer scopes)", _fleet_backfill("baseline")),
    ("finalise by batches, every shard lifted: time, peak RSS (+ its own)", _finalise("lifted")),
    (
        "finalise, the last shard left unlifted by a crash (its batches streamed)",
        _finalise("last_shard_unlifted"),
    ),
]

TARGETS: list[tuple[str, tuple[str, ...]]] = [
    (
        "framework / direct (SQLite: in-process; PostgreSQL: best executor)",
        (
            "framework_over_direct_sqlite_in_process",
            "framework_over_direct_postgresql_best_executor",
        ),
    ),
    (
        "framework / direct at the small scale (PostgreSQL: best executor)",
        ("framework_over_direct_postgresql_small",),
    ),
    ("naive / framework", ("naive_over_framework",)),
    ("time per entity, 1M over 100k", ("per_entity_1m_over_100k",)),
    ("peak RSS, 1M over 100k", ("rss_1m_over_100k",)),
    ("stored report read p99 (ms)", ("read_p99_ms",)),
    ("sensor tick at 10,000 scopes (s)", ("sensor_tick_10k_s",)),
    ("refresh tick at 100,000 scopes, 1% changed (s)", ("sensor_tick_largest_1pct_changed_s",)),
    ("one-scope calls, 100,000 over 1,000 scopes (worst)", ("one_scope_large_over_small",)),
    (
        "fleet backfill: scopes/min, many to a run over one run per scope",
        ("fleet_scopes_per_min_over_one_run_per_scope",),
    ),
    ("fleet backfill: compute share", ("fleet_compute_share",)),
    ("`precompute report` (s)", ("report_command_s",)),
    ("`precompute status` (s)", ("status_command_s",)),
    ("service full reads/s, 2 workers", ("service_reads_per_s_2_workers",)),
    ("service 304 reads/s, 2 workers", ("service_conditional_per_s_2_workers",)),
    ("service p99 (ms), 2 workers", ("service_p99_ms_2_workers",)),
    ("service / ceiling, 2 workers", ("service_over_ceiling_2_workers",)),
    (
        "simulated fleet: runs, daily / policy, high scopes as fresh as daily",
        ("fleet_runs_daily_over_policy",),
    ),
    ("finalise peak RSS, 20,000 over 200 batches", ("finalise_peak_rss_ratio",)),
    ("finalise at 20,000 batches, lifted (s)", ("finalise_most_batches_s",)),
]


def _target_cell(doc: Figures, keys: tuple[str, ...]) -> tuple[str, str]:
    found = next((doc["targets"][key] for key in keys if key in doc["targets"]), None)
    if found is None or found["value"] is None:
        return "", "n/a"
    verdict = {True: "met", False: "**missed**", None: "n/a"}[found["met"]]
    return found["target"], f"{found['value']:g} ({verdict})"


def render(docs: list[Figures]) -> str:
    names = [BACKEND_NAMES.get(doc["backend"], doc["backend"]) for doc in docs]
    first = docs[0]
    large, small = (int(size) for size in sorted(first["scales"], key=int, reverse=True))
    settings = first["settings"]
    lines = [
        START,
        "## Benchmark",
        "",
        "<!-- Generated by bench/readme_table.py from the JSON of bench/run.py: do not edit. -->",
        "",
        "```sh",
        "make bench                                   # SQLite: bench/results.json",
        "make bench BENCH_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/bench",
        "```",
        "",
        _wrap(
            f"The unused_fields report of one space of {large:,} work items (about 6 field values "
            f"each; the small scale is {small:,}), on {first['machine']['cpus']} CPUs: batches of "
            f"{settings['batch_size']:,}, at most {settings['max_shards']} shards, best of "
            f"{settings['repeats']} interleaved runs (+n%: how much slower the slowest was). Every "
            "materialisation runs in a fresh process and is timed end to end, the report's commit "
            "and its check included. The direct query is one SQL statement computing the same "
            "rows (checked equal); the naive job's time is extrapolated linearly from two capped "
            "runs. The refresh sensor's tick is measured on SQLite sources with many scopes, the "
            "report asset's Partitions tab through a real webserver with as many partitions (the "
            f"first {_materialised(first)} materialised); the fleet is simulated. "
            "Finalise is measured on a simulated ledger: the entries of 20,000 batches of up to "
            "700 keys (a scope of 100M entities; 200 batches for comparison) are written "
            "directly, each shard lifts its own into one partial, and finalise runs in a fresh "
            "process, its peak RSS taken from just before it starts."
        ),
        "",
        _table(["figure", *names], [[label, *(f(doc) for doc in docs)] for label, f in FIGURES]),
        "",
        _table(
            ["target", "goal", *names],
            [[label, *_goal_and_values(docs, keys)] for label, keys in TARGETS],
        ),
        "",
        *(_wrap(text) + "\n" for text in map(_direct_shortfall, names, docs) if text),
        *(_wrap(text) + "\n" for text in [_fleet_note(first)] if text),
        *(_wrap(text) + "\n" for text in [_backfill_note(first)] if text),
        *(_wrap(text) + "\n" for text in map(_service_shortfall, names, docs) if text),
        _wrap("Measured " + "; ".join(map(_provenance, names, docs)) + "."),
        END,
    ]
    return "\n".join(lines)


def _goal_and_values(docs: list[Figures], keys: tuple[str, ...]) -> list[str]:
    cells = [_target_cell(doc, keys) for doc in docs]
    goal = next((goal for goal, _ in cells if goal), "")
    return [goal, *(value for _, value in cells)]


def _backfill_note(doc: Figures) -> str | None:
    """Where a fleet backfill's time goes when its compute share is missed."""
    target = doc["targets"].get("fleet_compute_share", {})
    fleet = doc.get("fleet")
    if target.get("met") is not False or fleet is None:
        return None
    batched = fleet["batched"]
    runs_s = sum(batched["run_s"])
    idle_s = batched["wall_s"] * fleet["concurrent_runs"] - runs_s
    # Per scope, what is not its compute: in its run, and its share of the slots' idle time.
    besides_ms = batched["in_runs_besides_compute_per_scope_ms"] + idle_s * 1000 / batched["scopes"]
    even_items = fleet["items_per_scope"] * besides_ms / batched["compute_per_scope_ms"]
    postgres_ms = fleet.get("event_ms_postgres_instance")
    on_postgres = (
        f" ({postgres_ms} ms on a PostgreSQL instance: the cost is Dagster's, per event, not the "
        f"file system's)"
        if postgres_ms
        else ""
    )
    return (
        f"The fleet backfill's compute share is missed: a scope of {fleet['items_per_scope']:,} "
        f"work items computes its report in {batched['compute_per_scope_ms']} ms, while its run "
        f"spends {batched['in_runs_besides_compute_per_scope_ms']} ms more on it, most of it "
        f"Dagster storing the scope's {fleet.get('asset_events_per_scope', 2):g} asset events "
        f"(its materialisation planned when the run is created, the materialisation, the check "
        f"evaluation) at {fleet['event_ms']} ms an event on this instance{on_postgres}; the "
        f"{batched['runs']} runs took {runs_s:.0f} s from start to end, and {idle_s:.0f} s of the "
        f"run slots' time went to queueing and launching them (a process, the code location). "
        f"Many scopes to a run still make the fleet {fleet['scopes_per_min_over_baseline']:g}x "
        f"faster than one run per scope; a share of half needs scopes whose compute outweighs "
        f"their events and their part of the launch: about {round(even_items, -3):,.0f} work "
        f"items a scope at this rate."
    )


def _missed(doc: Figures, prefix: str) -> list[str]:
    """The targets named ``prefix...`` that this run missed."""
    return [
        key
        for key, target in doc["targets"].items()
        if key.startswith(prefix) and target["met"] is False
    ]


def _service_shortfall(name: str, doc: Figures) -> str | None:
    """Where a read's time goes when a service target is missed: against the ceiling's."""
    missed = _missed(doc, "service_")
    two = doc.get("service", {}).get("workers_2")
    if not missed or two is None:
        return None

    def worker_ms(kind: str) -> float:
        # Two workers' time per answer: what one read costs the processes serving it.
        return 2 * 1000 / two[kind]["reads_per_s"]

    return (
        f"On {name}, the service misses {len(missed)} of its targets: a full read takes "
        f"{worker_ms('full'):.2f} ms of a worker and a 304 {worker_ms('conditional'):.2f} ms, "
        f"against {worker_ms('ceiling'):.2f} ms for the same bytes with no key and no database. "
        f"The key is cached, so the difference is mostly the one query a read makes to the store: "
        f"the scope's generation (looked up on every read so that a replaced report is served at "
        f"once); on {name} it is a round trip to a server that shares the "
        f"{doc['machine']['cpus']} CPUs with the service's workers and the load generator. A "
        f"generation cached for a bounded time, as keys are, would remove it, at the price of "
        f"serving a replaced report for that long."
    )


def _direct_shortfall(name: str, doc: Figures) -> str | None:
    """Where the time goes when framework / direct misses: the figures that bound the ratio."""
    if not _missed(doc, "framework_over_direct"):
        return None
    scales = sorted(doc["scales"], key=int, reverse=True)
    return " ".join(
        [
            *(
                _where_time_goes(name if index == 0 else "", doc, s)
                for index, s in enumerate(scales)
            ),
            "The scan is bound by the database server's CPUs, not the client's (its Python used "
            "0.6 s of CPU in a 4.3 s scan of 1M work items): its batch queries aggregate about "
            "as fast per CPU as the direct query's workers, which share the same CPUs. More CPUs "
            "shorten the scan (`PRECOMPUTE_SCAN_THREADS` connections per step) while the direct "
            "query keeps its `max_parallel_workers_per_gather` workers (2 by default); Dagster's "
            "share is a fixed cost per run, events written to the instance, and stays.",
        ]
    )


def _where_time_goes(name: str, doc: Figures, scale: str) -> str:
    """One scale's framework against its direct query: the plain phases and Dagster's share."""
    figures = doc["scales"][scale]
    plain = figures["framework_without_dagster"]
    direct = figures["direct"][doc["direct"]["formulation"]]["best_s"]  # the chosen one
    executor = min(figures["framework"], key=lambda e: figures["framework"][e]["best_s"])
    framework = figures["framework"][executor]
    dagster = framework["best_s"] - plain["best_s"]
    threads = doc["settings"].get("scan_threads", 1)
    connections = "one connection" if threads == 1 else f"{threads} connections at once"
    events = framework.get("dagster_events")
    written = f", {events} events written to the instance" if events else ""
    opening = f"On {name}, framework / direct is missed. " if name else ""
    return (
        f"{opening}At {int(scale):,} work items the framework takes {framework['best_s']:.2f} s "
        f"({executor}) against the direct query's {direct:.2f} s: its phases as plain functions "
        f"take {plain['best_s']:.2f} s ({plain['best_s'] / direct:.1f}x), "
        f"{plain['phases_of_best_s']['scan']:.2f} s of it scanning on {connections}, while the "
        f"direct query is one statement on the server's parallel workers, on the same "
        f"{doc['machine']['cpus']} CPUs; Dagster's share of the run (framework minus "
        f"plain functions, {dagster:.2f} s{written}) is {dagster / direct:.2f}x the direct query "
        f"by itself."
    )


def _fleet_note(doc: Figures) -> str | None:
    """What the fleet simulation assumed, and why its target is missed when it is."""
    sim = doc.get("fleet_sim")
    if sim is None:
        return None
    fleet, verdict, proposal = sim["fleet"], sim["verdict"], sim["proposal"]
    text = (
        f"The fleet is simulated (`bench/fleet_sim.py`, every assumption in its output): "
        f"{fleet['scopes']:,} scopes over {sim['days']:g} days, {fleet['near_limit_share']:.1%} "
        f"near their limits as in the demo source, a median of {fleet['change_median_per_day']:g} "
        "source changes per scope a day; a run is one scope's refresh. "
    )
    if verdict["met"]:
        return text + "Its target is met."
    met_at = [
        f"{row['near_limit_share']:.0%} at {row['change_median_per_day']:g}"
        for row in sim["sensitivity"]["rows"]
        if row["policy"]["met"]
    ]
    return text + (
        f"Its target is missed: the policy refreshes a high scope at every change, so with "
        f"{fleet['near_limit_share']:.1%} of the scopes high, it cannot beat "
        f"{verdict['ratio_if_no_source_changed']:g}x even if no source ever changed (high "
        "reports age out in 7 days, low ones in 30). Refreshing a changed high scope no sooner "
        f"than {proposal['min_interval_h']:g} h after its last report (not in the policy) keeps "
        f"them as fresh as daily and gives {proposal['verdict']['runs_daily_over_policy']:g}x. "
        "The policy meets the target with near-limit shares and median changes a day of "
        f"{', '.join(met_at) or 'none of the simulated ones'} (docs/scale.md)."
    )


def _provenance(name: str, doc: Figures) -> str:
    load = doc["machine"]["load_average_at_start"][0]
    return (
        f"{name}: {doc['started_at']}, `{doc['command']}`, {doc['wall_s']:.0f} s, "
        f"load average {load} at start"
    )


def _wrap(text: str) -> str:
    """Prose wrapped as the rest of the README is."""
    return textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rewrite(readme: str, section: str) -> str:
    """Replace the marked section, or insert it before ``## Development``."""
    marked = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if marked.search(readme):
        return marked.sub(lambda _: section, readme, count=1)
    anchor = readme.find("\n## Development")
    if anchor < 0:
        raise ValueError("README.md has neither the bench markers nor a '## Development' section")
    return f"{readme[: anchor + 1]}{section}\n\n{readme[anchor + 1 :]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench/run.py JSON documents")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    docs = [json.loads(path.read_text()) for path in args.results]
    # Columns in a fixed order whatever the order of the files: the embedded default first.
    docs.sort(key=lambda doc: list(BACKEND_NAMES).index(doc["backend"]))
    args.readme.write_text(rewrite(args.readme.read_text(), render(docs)))


if __name__ == "__main__":
    main()
