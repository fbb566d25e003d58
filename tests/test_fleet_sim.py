"""``bench/fleet_sim.py``: the simulated fleet keeps the policy's rules, and its figures mean what
the README and docs/scale.md say they mean.

Small fleets (a few thousand scopes, a few days): the whole file takes a few seconds.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
DAY_S = 86_400.0


def load_bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


sim = load_bench_module("fleet_sim")
SMALL = ["--scopes", "20000", "--days", "3", "--grid-scopes", "2000"]


def simulated(argv: list[str]) -> dict:
    figures = sim.run(sim.parse_args(argv), argv)
    figures.pop("wall_s")
    return figures


def default_policy(**changes: float):
    return sim.Policy.from_settings(sim.RefreshSettings.from_env({}), **changes)


def requests_by_scope(fleet, policy, days: float, seed: int = 3):
    """Each scope's refresh requests (tick numbers, in order), decoded from the simulation's
    requests with one scope per cell; and the scopes and the window's tally."""
    scopes = sim.draw_scopes(fleet, policy, sim.Costs(), 0, fleet.scopes, seed)
    window = sim.Window(days * DAY_S, policy.tick_s)
    requests = sim.simulate_policy(scopes, policy, window, np.random.default_rng(seed))
    ticks = math.ceil(days * DAY_S / policy.tick_s)
    by_scope = [[] for _ in range(fleet.scopes)]
    for request in np.sort(requests):
        by_scope[request // ticks].append(request % ticks)
    return scopes, by_scope, window.tally


def test_the_document_is_strict_json_with_every_figure_and_the_same_for_the_same_seed():
    first, again = simulated(SMALL), simulated(SMALL)
    assert first == again
    assert simulated([*SMALL, "--seed", "8"])["policy"] != first["policy"]
    json.dumps(first, allow_nan=False)
    for kind in ("policy", "daily"):
        assert set(first[kind]["freshness"]) == {"high", "low"}
        assert set(first[kind]["slot_hours_per_day"]) == {
            "one_run_per_scope",
            "many_scopes_per_run",
            "scanning_alone",
        }
    assert set(first["policy"]["runs_per_day"]) == {
        "changed",
        "aged (high)",
        "aged (low)",
        "missing",
        "total",
    }
    assert first["daily"]["runs_per_day"] == {"daily": 20_000, "total": 20_000}
    assert len(first["sensitivity"]["rows"]) == 9


def test_the_ratio_is_daily_runs_over_policy_runs_and_counts_every_reason():
    figures = simulated(SMALL)
    runs = figures["policy"]["runs_per_day"]
    assert runs["total"] == pytest.approx(sum(n for r, n in runs.items() if r != "total"), abs=2)
    verdict = figures["verdict"]
    assert verdict["runs_daily_over_policy"] == round(20_000 / runs["total"], 2)
    # The demo's skew: one scope in eight high; each ages out in 7 days, a low one in 30.
    high = figures["policy"]["freshness"]["high"]["scopes"]
    floor = high / 7 + (20_000 - high) / 30 + 10
    assert figures["policy"]["runs_per_day_if_no_source_changed"] == round(floor)
    assert verdict["met"] == (
        verdict["high_as_fresh_as_daily"] and verdict["runs_daily_over_policy"] >= 20
    )


def test_low_scopes_wait_for_their_long_maximum_age_and_high_ones_never_pass_theirs():
    policy = default_policy()
    fleet = sim.Fleet(scopes=2_000, cell_size=1, change_median_per_day=2.0)
    scopes, by_scope, tally = requests_by_scope(fleet, policy, days=70)
    tick, low_age, high_age = policy.tick_s, policy.low_max_age_s, policy.max_age_s
    lows = [ticks for ticks, high in zip(by_scope, scopes.high, strict=True) if not high]
    highs = [ticks for ticks, high in zip(by_scope, scopes.high, strict=True) if high]
    assert lows and highs
    # Every low scope is refreshed in 70 days, never twice within its long maximum age, and
    # whatever its source did: its only reason is age.
    assert all(ticks for ticks in lows)
    assert min(b - a for ticks in lows for a, b in itertools.pairwise(ticks)) * tick >= low_age
    assert tally.runs[0, sim.CHANGED_CODE] == 0 and tally.runs[0, sim.REASONS.index("daily")] == 0
    # A high scope is refreshed at changes, never twice in a tick (its run is in flight), and
    # at the latest a tick after its maximum age.
    gaps = [b - a for ticks in highs for a, b in itertools.pairwise(ticks)]
    assert min(gaps) >= 1
    longest = max(gaps) * tick
    assert longest <= high_age + tick + policy.launch_s + scopes.duration_s.max() + tick
    assert tally.runs[1, sim.CHANGED_CODE] > tally.runs[1, sim.REASONS.index("aged (high)")]


def test_high_scopes_lag_at_most_a_tick_and_a_run_or_the_proposals_interval():
    fleet = sim.Fleet(scopes=5_000, change_median_per_day=5.0)
    costs = sim.Costs()
    for interval_h in (0.0, 6.0):
        policy = default_policy(min_interval_s=interval_h * 3_600)
        figures = sim.simulate(fleet, policy, costs, days=4, seed=5, daily=False)
        worst_h = figures["policy"]["freshness"]["high"]["worst_lag_h"]["max"]
        bound_s = interval_h * 3_600 + policy.tick_s + policy.launch_s + 1e6 * costs.per_entity_s
        assert 0 < worst_h * 3_600 <= bound_s + 1


def test_the_mean_lag_under_daily_refreshes_is_the_closed_form():
    """Changes at a constant rate r, a refresh every day D: the lag t after a refresh is
    E[max(0, t - X)], X ~ Exp(r); its mean over the day is D/2 - 1/r + (1 - e^(-rD))/(r^2 D)."""
    rate = 2.0  # per day
    fleet = sim.Fleet(scopes=20_000, change_median_per_day=rate, change_sigma=0.0)
    figures = sim.simulate(fleet, default_policy(), sim.Costs(), days=4, seed=11)
    expected_days = 0.5 - 1 / rate + (1 - math.exp(-rate)) / rate**2
    for kind in ("high", "low"):
        lag_h = figures["daily"]["freshness"][kind]["mean_lag_h"]
        assert lag_h == pytest.approx(expected_days * 24, rel=0.03)


def test_the_budget_check_queues_what_is_over_budget_tick_by_tick():
    demand = np.random.default_rng(2).poisson(4.0, size=(3, 500))
    demand[1, 100:110] = 60  # a burst in one cell
    policy = replace(default_policy(), budget=5)
    backlog, worst = np.zeros(3, dtype=np.int64), 0
    for tick in range(demand.shape[1]):
        backlog = np.maximum(backlog + demand[:, tick] - policy.budget, 0)
        worst = max(worst, int(backlog.max()))
    checked = sim.budget_check(demand, policy, days=1.0)
    assert checked["worst_backlog_runs"] == worst > 500
    assert checked["worst_wait_ticks"] == math.ceil(worst / 5)
    assert checked["requests_per_tick"]["max"] == 60
