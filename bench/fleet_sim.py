"""The refresh policy over a synthetic fleet of scopes, against refreshing every scope daily.

    python bench/fleet_sim.py                                  # 10,000,000 scopes, 14 days
    python bench/fleet_sim.py --scopes 100000 --days 3 --grid-scopes 20000

Every scope gets a utilisation, a rate of source changes and an entity count, drawn from the
assumptions of ``Fleet`` (each a flag; ``assumptions`` in the output says where each comes from);
its changes arrive as a Poisson process at its rate. Two ways of keeping the reports are
simulated over the same fleet, each scope on its own (scopes interact only through the sensor's
budget, which is checked apart, from the requests per cell and tick):

- **policy**: ``core/refresh.py`` with its default settings. A scope at or above the threshold
  is requested at the first sensor tick after its source changed or its report passed the
  maximum age, a scope below it when its report passed the long maximum age, a new scope at once;
  no scope with a run in flight is requested again. A run snapshots the source ``launch_s``
  after its request (initialise reads the watermark) and commits its report its scan time later.
- **daily**: every scope refreshed once a day, each at a time of day of its own.

Freshness is how far a visible report is behind its source: zero while it reflects every change,
else the time since the first change it misses (its *lag*). A policy keeps the high scopes *as
fresh as daily* when their mean lag is no longer than under daily refreshes and the 99th
percentile of their worst lag in the window is no longer either. The ratio of runs (daily over
policy, from the counts) is judged against 20 only under that condition.

A *run* here is one scope's refresh: one report, one materialisation. Compute is what those
refreshes occupy in run slots, from a cost model per refresh: a fixed cost (process, code
location, events) plus a cost per entity scanned, both measured (``Costs``).

The output is one JSON document; ``--out`` writes it to a file too. Everything follows from
``--seed``: the same arguments print the same figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from precompute_assets.core.refresh import Reason
from precompute_assets.core.settings import RefreshSettings

DAY_S = 86_400.0
HOUR_S = 3_600.0
CHUNK = 1_000_000  # scopes simulated at once: bounds memory at 10M scopes
TARGET_RATIO = 20.0
# The demo source's utilisation of unused_fields: associated fields over the limit of 700, near
# the limit for one space in eight (600-700 fields), else 20-150 (demo/source/generate.py).
FIELD_LIMIT = 700
NEAR_LIMIT_FIELDS = (600, 700)
FAR_FIELDS = (20, 150)
# Reasons of the runs, as the refresh sensor tags them (precompute/reason), split by class.
CHANGED, AGED_HIGH, AGED_LOW, MISSING = (
    Reason.CHANGED.value,
    f"{Reason.AGED.value} (high)",
    f"{Reason.AGED.value} (low)",
    Reason.MISSING.value,
)
DAILY = "daily"
REASONS = (CHANGED, AGED_HIGH, AGED_LOW, DAILY)  # runs carry an index into this
CHANGED_CODE = 0


@dataclass(frozen=True)
class Fleet:
    """What the synthetic fleet looks like. Every field is an assumption; see ``ASSUMPTIONS``."""

    scopes: int
    near_limit_share: float = 0.125
    change_median_per_day: float = 0.2
    change_sigma: float = 1.5
    entities_median: float = 1_000.0
    entities_sigma: float = 2.0
    entities_max: int = 1_000_000
    new_share_per_day: float = 0.0005
    cell_size: int = 100_000


ASSUMPTIONS = {
    "near_limit_share": "share of scopes near their limits (600-700 of 700 fields), the rest at "
    "20-150: the demo generator's skew (demo/source/generate.py, one space in eight)",
    "change_median_per_day, change_sigma": "changes per day of a scope's source: lognormal, so "
    "most scopes change less than weekly and a few many times an hour (an estimate: nothing "
    "here measures a real fleet's activity; the grid shows how the verdict moves with it)",
    "entities_median, entities_sigma, entities_max": "work items per scope: lognormal, capped at "
    "the seeds' million per scope (an estimate)",
    "new_share_per_day": "scopes created per day, as a share of the fleet; each gets a `missing` "
    "run under the policy (counted against it only)",
    "cell_size": "scopes per cell: one sensor, one budget per tick (docs/scale.md)",
    "independence": "utilisation, change rate and size drawn independently, as the demo "
    "generator picks its near-limit spaces regardless of their size",
    "launch_s": "from a tick's request to the run's snapshot of the source (queue, process "
    "start, initialise): 10 s, an estimate below the 7.5 s fixed cost of a run plus a wait",
}


@dataclass(frozen=True)
class Policy:
    """The refresh policy's settings (``RefreshSettings`` defaults) and a run's start latency."""

    threshold: float
    max_age_s: float
    low_max_age_s: float
    budget: int
    tick_s: float
    launch_s: float = 10.0
    # Not in core/refresh.py: the least age at which a change makes a high scope due again.
    min_interval_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: RefreshSettings, **changes: float) -> Policy:
        policy = cls(
            settings.threshold,
            settings.max_age_s,
            settings.low_max_age_s,
            settings.budget,
            float(settings.sensor_interval_s),
        )
        return replace(policy, **changes)


@dataclass(frozen=True)
class Costs:
    """What one scope's refresh occupies in a run slot: a fixed cost and a cost per entity.

    ``one_run_fixed_s``: a backfill of 40 small scopes took 150 s with 2 runs at a time
    (DESIGN.md section 10), 7.5 slot-seconds a scope. ``batched_fixed_s``: an estimate for
    many scopes to a run, the fleet target of 10x the scopes per minute. ``per_entity_s``: the
    in-process framework on 1M work items, 2.43 s (bench/results.json, SQLite).
    """

    one_run_fixed_s: float = 7.5
    batched_fixed_s: float = 0.75
    per_entity_s: float = 2.43e-6


@dataclass
class Scopes:
    """One chunk of the fleet, as arrays."""

    high: np.ndarray  # 1 where utilisation is at or above the threshold, else 0
    rate_per_s: np.ndarray  # changes per second
    entities: np.ndarray
    duration_s: np.ndarray  # from snapshot to commit: the scan and finalise
    cell: np.ndarray

    def __len__(self) -> int:
        return len(self.high)


@dataclass
class Tally:
    """What each class of scopes got over the window, summed over its scopes: index 0 is the
    low scopes, 1 the high ones."""

    scopes: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    runs: np.ndarray = field(default_factory=lambda: np.zeros((2, len(REASONS)), np.int64))
    run_entities: np.ndarray = field(default_factory=lambda: np.zeros(2))  # scanned by the runs
    lag_integral_s2: np.ndarray = field(default_factory=lambda: np.zeros(2))  # lag over time
    behind_s: np.ndarray = field(default_factory=lambda: np.zeros(2))  # behind a change at all
    over_tick_s: np.ndarray = field(default_factory=lambda: np.zeros(2))  # by over one interval
    worst_lag_s: tuple[list[np.ndarray], list[np.ndarray]] = field(
        default_factory=lambda: ([], [])
    )  # per scope, the longest lag in the window


# ------------------------------------------------------------------------------ the fleet


def draw_scopes(
    fleet: Fleet, policy: Policy, costs: Costs, first: int, count: int, seed: int
) -> Scopes:
    """``count`` scopes from index ``first``, from their own random stream."""
    rng = np.random.default_rng([seed, first])
    near = rng.random(count) < fleet.near_limit_share
    fields = np.where(
        near,
        rng.integers(NEAR_LIMIT_FIELDS[0], NEAR_LIMIT_FIELDS[1] + 1, count),
        rng.integers(FAR_FIELDS[0], FAR_FIELDS[1] + 1, count),
    )
    per_day = fleet.change_median_per_day * np.exp(fleet.change_sigma * rng.standard_normal(count))
    entities = np.minimum(
        np.round(fleet.entities_median * np.exp(fleet.entities_sigma * rng.standard_normal(count))),
        fleet.entities_max,
    )
    return Scopes(
        high=(fields / FIELD_LIMIT >= policy.threshold).astype(np.intp),
        rate_per_s=per_day / DAY_S,
        entities=entities,
        duration_s=entities * costs.per_entity_s,
        cell=(first + np.arange(count)) // fleet.cell_size,
    )


# ------------------------------------------------------------------------------ simulation


def next_tick(t: np.ndarray, tick_s: float) -> np.ndarray:
    return np.ceil(t / tick_s) * tick_s


class Window:
    """The measured interval [0, length) and what happens in it, added up in a ``Tally``."""

    def __init__(self, length_s: float, tick_s: float) -> None:
        self.length_s = length_s
        self.tick_s = tick_s
        self.tally = Tally()

    def add_visible(
        self,
        high: np.ndarray,
        shown_from: np.ndarray,
        shown_until: np.ndarray,
        first_miss: np.ndarray,
        worst: np.ndarray,
    ) -> None:
        """A report visible over [shown_from, shown_until) that misses every change from
        ``first_miss`` on: its lag is ``t - first_miss`` from then, clipped to the window."""
        shown_from = np.maximum(shown_from, 0.0)
        shown_until = np.minimum(shown_until, self.length_s)
        behind_from = np.maximum(shown_from, first_miss)
        behind = np.maximum(shown_until - behind_from, 0.0)
        # The lag grows linearly while behind: its integral is a trapezoid.
        lag_integral = behind * (shown_until + behind_from - 2 * first_miss) / 2
        late_from = np.maximum(shown_from, first_miss + self.tick_s)
        over_tick = np.maximum(shown_until - late_from, 0.0)
        np.maximum(worst, np.where(behind > 0, shown_until - first_miss, 0.0), out=worst)
        tally = self.tally
        tally.lag_integral_s2 += np.bincount(high, weights=lag_integral, minlength=2)
        tally.behind_s += np.bincount(high, weights=behind, minlength=2)
        tally.over_tick_s += np.bincount(high, weights=over_tick, minlength=2)

    def add_runs(
        self, high: np.ndarray, requested: np.ndarray, entities: np.ndarray, reasons: np.ndarray
    ) -> np.ndarray:
        """Count the runs requested in the window by class and reason; return which were."""
        inside = (requested >= 0) & (requested < self.length_s)
        kinds = high[inside] * len(REASONS) + reasons[inside]
        self.tally.runs += np.bincount(kinds, minlength=2 * len(REASONS)).reshape(2, -1)
        self.tally.run_entities += np.bincount(high[inside], entities[inside], minlength=2)
        return inside

    def add_scopes(self, high: np.ndarray, worst: np.ndarray) -> None:
        for cls in (0, 1):
            self.tally.worst_lag_s[cls].append(worst[high == cls].astype(np.float32))
        self.tally.scopes += np.bincount(high, minlength=2)


def simulate_policy(
    scopes: Scopes, policy: Policy, window: Window, rng: np.random.Generator
) -> np.ndarray:
    """Each scope's refreshes under the policy, from a warm-up before the window to its end;
    returns each run's request as ``cell * ticks + tick`` (cells numbered from the chunk's).

    Reports start at a uniformly random point of their maximum age before the warm-up, which
    is the steady state of the low scopes' fixed cycle; the warm-up (longer than the high
    scopes' maximum age) lets the high scopes' cycles settle.
    """
    count = len(scopes)
    max_age = np.where(scopes.high == 1, policy.max_age_s, policy.low_max_age_s)
    warm_up = policy.max_age_s + DAY_S
    snapshot = -warm_up - rng.random(count) * max_age
    commit = snapshot + scopes.duration_s
    first_change = snapshot + rng.exponential(1.0 / scopes.rate_per_s)
    active = np.arange(count)
    worst = np.zeros(count)
    ticks = math.ceil(window.length_s / window.tick_s)
    requests = []
    while active.size:
        high = scopes.high[active]
        # A change makes a high scope due once its run is done (and its report old enough).
        changed_due = np.maximum(first_change, commit + policy.min_interval_s)
        by_change = np.where(high == 1, next_tick(changed_due, window.tick_s), np.inf)
        by_age = next_tick(commit + max_age[active], window.tick_s)
        requested = np.minimum(by_change, by_age)
        reasons = np.where(by_change <= by_age, CHANGED_CODE, np.where(high == 1, 1, 2))
        next_snapshot = requested + policy.launch_s
        next_commit = next_snapshot + scopes.duration_s[active]
        slot_worst = worst[active]
        window.add_visible(high, commit, next_commit, first_change, slot_worst)
        worst[active] = slot_worst
        inside = window.add_runs(high, requested, scopes.entities[active], reasons)
        tick = (requested[inside] // window.tick_s).astype(np.int64)
        requests.append((scopes.cell[active[inside]] - scopes.cell[0]) * ticks + tick)
        first_change = next_snapshot + rng.exponential(1.0 / scopes.rate_per_s[active])
        commit = next_commit
        keep = commit < window.length_s
        active, commit, first_change = active[keep], commit[keep], first_change[keep]
    window.add_scopes(scopes.high, worst)
    return np.concatenate(requests)


def simulate_daily(scopes: Scopes, policy: Policy, window: Window, rng: np.random.Generator):
    """Each scope refreshed once a day at its own time of day, from before the window to its
    end."""
    count = len(scopes)
    snapshot = rng.random(count) * DAY_S - 2 * DAY_S
    commit = snapshot + scopes.duration_s
    first_change = snapshot + rng.exponential(1.0 / scopes.rate_per_s)
    worst = np.zeros(count)
    reasons = np.full(count, REASONS.index(DAILY))
    while (commit < window.length_s).any():
        next_snapshot = snapshot + DAY_S
        next_commit = next_snapshot + scopes.duration_s
        window.add_visible(scopes.high, commit, next_commit, first_change, worst)
        window.add_runs(scopes.high, next_snapshot - policy.launch_s, scopes.entities, reasons)
        snapshot, commit = next_snapshot, next_commit
        first_change = snapshot + rng.exponential(1.0 / scopes.rate_per_s)
    window.add_scopes(scopes.high, worst)


# ------------------------------------------------------------------------------ figures


def freshness(tally: Tally, cls: int, window: Window) -> dict[str, Any]:
    scope_time = max(int(tally.scopes[cls]), 1) * window.length_s
    worst = np.concatenate(tally.worst_lag_s[cls] or [np.zeros(1)])
    return {
        "scopes": int(tally.scopes[cls]),
        "mean_lag_h": significant(float(tally.lag_integral_s2[cls]) / scope_time / HOUR_S),
        "behind_share": round(float(tally.behind_s[cls]) / scope_time, 4),
        "behind_over_one_tick_share": round(float(tally.over_tick_s[cls]) / scope_time, 4),
        "worst_lag_h": {
            "p50": round(float(np.percentile(worst, 50)) / HOUR_S, 3),
            "p99": round(float(np.percentile(worst, 99)) / HOUR_S, 3),
            "max": round(float(worst.max()) / HOUR_S, 3),
        },
    }


def significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def summarise(window: Window, days: float, costs: Costs, new_per_day: float) -> dict[str, Any]:
    """Runs per day by reason, the compute they occupy, and each class's freshness."""
    tally = window.tally
    by_reason = tally.runs.sum(axis=0)
    per_day = {REASONS[i]: round(int(n) / days) for i, n in enumerate(by_reason) if n}
    if new_per_day:
        per_day[MISSING] = round(new_per_day)
    total = int(by_reason.sum()) / days + new_per_day
    entities = float(tally.run_entities.sum()) / days
    scan_s = entities * costs.per_entity_s

    def slot_hours(fixed_s: float) -> float:
        return round((total * fixed_s + scan_s) / HOUR_S, 1)

    return {
        "runs_per_day": {**per_day, "total": round(total)},
        "entities_scanned_per_day": round(entities),
        "slot_hours_per_day": {
            "one_run_per_scope": slot_hours(costs.one_run_fixed_s),
            "many_scopes_per_run": slot_hours(costs.batched_fixed_s),
            "scanning_alone": round(scan_s / HOUR_S, 1),
        },
        "freshness": {"high": freshness(tally, 1, window), "low": freshness(tally, 0, window)},
    }


def budget_check(demand: np.ndarray, policy: Policy, days: float) -> dict[str, Any]:
    """Would one sensor per cell, with its budget per tick, have kept up with the requests
    (``demand``: cells x ticks)? The requests over budget queue up, cell by cell; the worst
    queue says how many ticks the last of them waited."""
    # Lindley's recursion, backlog = max(0, backlog + demand - budget), as prefix sums.
    surplus = np.cumsum(demand - policy.budget, axis=1, dtype=np.int64)
    backlog = surplus - np.minimum(np.minimum.accumulate(surplus, axis=1), 0)
    worst_backlog = int(backlog.max())
    per_cell_day = demand.sum(axis=1) / days
    return {
        "cells": demand.shape[0],
        "budget_per_tick": policy.budget,
        "tick_s": policy.tick_s,
        "runs_per_cell_per_day": {
            "mean": round(float(per_cell_day.mean())),
            "max": round(float(per_cell_day.max())),
            "budget_allows": round(policy.budget * DAY_S / policy.tick_s),
        },
        "requests_per_tick": {
            "mean": round(float(demand.mean()), 3),
            "p999": int(np.percentile(demand, 99.9)),
            "max": int(demand.max()),
        },
        "ticks_over_budget_share": round(float((demand > policy.budget).mean()), 6),
        "worst_backlog_runs": worst_backlog,
        "worst_wait_ticks": math.ceil(worst_backlog / policy.budget),
    }


def simulate(
    fleet: Fleet, policy: Policy, costs: Costs, days: float, seed: int, *, daily: bool = True
) -> dict[str, Any]:
    """The policy and, unless told otherwise, daily refreshes over one fleet."""
    ticks = math.ceil(days * DAY_S / policy.tick_s)
    cells = math.ceil(fleet.scopes / fleet.cell_size)
    demand = np.zeros(cells * ticks, dtype=np.int64)
    windows = {"policy": Window(days * DAY_S, policy.tick_s)}
    if daily:
        windows["daily"] = Window(days * DAY_S, policy.tick_s)
    for first in range(0, fleet.scopes, CHUNK):
        scopes = draw_scopes(fleet, policy, costs, first, min(CHUNK, fleet.scopes - first), seed)
        rng = np.random.default_rng([seed, first, 1])
        requests = simulate_policy(scopes, policy, windows["policy"], rng)
        offset = int(scopes.cell[0]) * ticks
        demand[offset:] += np.bincount(requests, minlength=demand.size - offset)
        if daily:
            rng = np.random.default_rng([seed, first, 2])
            simulate_daily(scopes, policy, windows["daily"], rng)
    new_per_day = fleet.new_share_per_day * fleet.scopes
    result = {"policy": summarise(windows["policy"], days, costs, new_per_day)}
    # The least the policy can cost: no source ever changes, every report ages out.
    high, low = (int(n) for n in windows["policy"].tally.scopes[::-1])
    result["policy"]["runs_per_day_if_no_source_changed"] = round(
        high * DAY_S / policy.max_age_s + low * DAY_S / policy.low_max_age_s + new_per_day
    )
    result["policy"]["budget"] = budget_check(demand.reshape(cells, ticks), policy, days)
    if daily:
        result["daily"] = summarise(windows["daily"], days, costs, 0.0)
        result["verdict"] = verdict(result["policy"], result["daily"])
    return result


def verdict(policy: dict[str, Any], daily: dict[str, Any]) -> dict[str, Any]:
    """The ratio of runs, from the counts, and whether high scopes stayed as fresh as daily."""
    ratio = daily["runs_per_day"]["total"] / max(policy["runs_per_day"]["total"], 1)
    ours, theirs = policy["freshness"]["high"], daily["freshness"]["high"]
    as_fresh = (
        ours["mean_lag_h"] <= theirs["mean_lag_h"]
        and ours["worst_lag_h"]["p99"] <= theirs["worst_lag_h"]["p99"]
    )
    floor = policy["runs_per_day_if_no_source_changed"]
    return {
        "runs_daily_over_policy": round(ratio, 2),
        "ratio_if_no_source_changed": round(daily["runs_per_day"]["total"] / max(floor, 1), 2),
        "target": f">= {TARGET_RATIO:g}",
        "high_as_fresh_as_daily": as_fresh,
        "met": as_fresh and ratio >= TARGET_RATIO,
    }


# ------------------------------------------------------------------------------ main


def sensitivity(
    fleet: Fleet, policy: Policy, proposal: Policy, costs: Costs, days: float, seed: int
) -> dict[str, Any]:
    """The verdicts as the two assumptions that decide them move, on a fleet of ``fleet.scopes``
    (scopes do not interact, so ratios and freshness do not depend on the fleet's size)."""
    rows = []
    for share in (0.01, 0.05, 0.125):
        for median in (0.05, 0.2, 1.0):
            variant = replace(fleet, near_limit_share=share, change_median_per_day=median)
            found = simulate(variant, policy, costs, days, seed)
            proposed = simulate(variant, proposal, costs, days, seed, daily=False)["policy"]
            rows.append(
                {
                    "near_limit_share": share,
                    "change_median_per_day": median,
                    "policy": found["verdict"],
                    "proposal": verdict(proposed, found["daily"]),
                }
            )
    return {"scopes": fleet.scopes, "rows": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Fleet(scopes=10_000_000)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", type=int, default=defaults.scopes)
    parser.add_argument("--days", type=float, default=14.0, help="the measured window")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--near-limit-share", type=float, default=defaults.near_limit_share)
    parser.add_argument("--change-median", type=float, default=defaults.change_median_per_day)
    parser.add_argument("--change-sigma", type=float, default=defaults.change_sigma)
    parser.add_argument("--cell-size", type=int, default=defaults.cell_size)
    parser.add_argument(
        "--proposal-min-interval-h",
        type=float,
        default=23.0,
        help="the proposal simulated beside the policy: the least report age (hours) at which a "
        "change makes a high scope due (not in core/refresh.py)",
    )
    parser.add_argument(
        "--grid-scopes", type=int, default=100_000, help="fleet size of the sensitivity grid"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.scopes < 1 or args.days <= 0 or args.cell_size < 1 or args.grid_scopes < 1:
        parser.error("--scopes, --days, --cell-size and --grid-scopes must be positive")
    return args


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    fleet = Fleet(
        scopes=args.scopes,
        near_limit_share=args.near_limit_share,
        change_median_per_day=args.change_median,
        change_sigma=args.change_sigma,
        cell_size=args.cell_size,
    )
    policy = Policy.from_settings(RefreshSettings.from_env({}))
    costs = Costs()
    figures = simulate(fleet, policy, costs, args.days, args.seed)
    proposal = replace(policy, min_interval_s=args.proposal_min_interval_h * HOUR_S)
    proposed = simulate(fleet, proposal, costs, args.days, args.seed, daily=False)["policy"]
    return {
        "command": " ".join(["python bench/fleet_sim.py", *argv]),
        "seed": args.seed,
        "days": args.days,
        "fleet": asdict(fleet),
        "assumptions": ASSUMPTIONS,
        "policy_settings": asdict(policy),
        "costs": asdict(costs),
        **figures,
        "proposal": {
            "min_interval_h": args.proposal_min_interval_h,
            "runs_per_day": proposed["runs_per_day"],
            "runs_per_day_if_no_source_changed": proposed["runs_per_day_if_no_source_changed"],
            "slot_hours_per_day": proposed["slot_hours_per_day"],
            "freshness": proposed["freshness"],
            "verdict": verdict(proposed, figures["daily"]),
        },
        "sensitivity": sensitivity(
            replace(fleet, scopes=args.grid_scopes), policy, proposal, costs, args.days, args.seed
        ),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    figures = run(args, argv)
    document = json.dumps(figures, indent=2)
    if args.out is not None:
        args.out.write_text(document + "\n")
    print(document)


if __name__ == "__main__":
    main()
