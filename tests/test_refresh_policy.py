"""The refresh policy as plain data: order, threshold, ages, budget, in-flight runs, run keys."""

from __future__ import annotations

from precompute_assets.core.refresh import (
    Reason,
    ScopeState,
    due_reason,
    plan_baseline,
    plan_refresh,
    priority_order,
    run_key,
)
from precompute_assets.core.report_store import ReportHeader
from precompute_assets.core.settings import DAY_S, RefreshSettings

NOW = 1_800_000_000.0
SETTINGS = RefreshSettings(threshold=0.7, max_age_days=7, low_max_age_days=30, budget=3)


def state(scope, utilisation, *, age_days=None, changed=False, generation=1) -> ScopeState:
    header = None
    if age_days is not None:
        header = ReportHeader(
            tool="t",
            scope=scope,
            generation=generation,
            computed_at=NOW - age_days * DAY_S,
            watermark="old" if changed else "w",
            entity_count=1,
            row_count=1,
            unused_count=0,
            batch_count=1,
            shard_count=1,
            duration_s=0.1,
        )
    return ScopeState(scope, utilisation, "w", header)


def test_high_scopes_first_by_utilisation_then_oldest_report():
    states = [
        state("low-old", 0.1, age_days=90),
        state("high-80-new", 0.8, age_days=1),
        state("high-95", 0.95, age_days=2),
        state("high-80-old", 0.8, age_days=5),
        state("high-80-missing", 0.8),
    ]
    order = [s.scope for s in priority_order(states, SETTINGS)]
    assert order == ["high-95", "high-80-missing", "high-80-old", "high-80-new", "low-old"]


def test_reasons_depend_on_the_threshold():
    assert due_reason(state("a", 0.9), SETTINGS, NOW) is Reason.MISSING
    assert due_reason(state("a", 0.1), SETTINGS, NOW) is Reason.MISSING
    assert due_reason(state("a", 0.9, age_days=1, changed=True), SETTINGS, NOW) is Reason.CHANGED
    assert due_reason(state("a", 0.9, age_days=8), SETTINGS, NOW) is Reason.AGED
    assert due_reason(state("a", 0.9, age_days=6), SETTINGS, NOW) is None
    # Below the threshold a changed source is not enough; only the long maximum age is.
    assert due_reason(state("a", 0.69, age_days=1, changed=True), SETTINGS, NOW) is None
    assert due_reason(state("a", 0.69, age_days=29), SETTINGS, NOW) is None
    assert due_reason(state("a", 0.69, age_days=31), SETTINGS, NOW) is Reason.AGED
    # Exactly at the threshold counts as high.
    assert due_reason(state("a", 0.7, age_days=1, changed=True), SETTINGS, NOW) is Reason.CHANGED


def test_budget_caps_requests_and_keeps_priority():
    states = [state(f"s{i}", 0.75 + i / 100) for i in range(10)]
    requests = plan_refresh(states, SETTINGS, now=NOW)
    assert [r.scope for r in requests] == ["s9", "s8", "s7"]


def test_in_flight_scopes_are_skipped_and_the_next_ones_taken():
    states = [state(f"s{i}", 0.75 + i / 100) for i in range(10)]
    requests = plan_refresh(states, SETTINGS, in_flight={"s9", "s7"}, now=NOW)
    assert [r.scope for r in requests] == ["s8", "s6", "s5"]


def test_run_keys_repeat_for_the_same_source_and_report_and_change_otherwise():
    assert run_key(state("a", 0.9, age_days=1)) == run_key(state("a", 0.9, age_days=3))
    moved = ScopeState("a", 0.9, "w2", state("a", 0.9, age_days=1).header)
    assert run_key(moved) != run_key(state("a", 0.9, age_days=1))
    assert run_key(state("a", 0.9, age_days=1, generation=2)) != run_key(
        state("a", 0.9, age_days=1)
    )


def test_priority_tag_follows_utilisation():
    [request] = plan_refresh([state("a", 0.93)], SETTINGS, now=NOW)
    assert request.priority == 93
    assert request.reason is Reason.MISSING


def test_baseline_sweeps_aged_scopes_of_any_utilisation_within_its_budget():
    states = [
        state("high-fresh", 0.9, age_days=1, changed=True),
        state("high-aged", 0.9, age_days=40),
        state("low-aged", 0.1, age_days=40),
        state("low-fresh", 0.1, age_days=2),
        state("low-missing", 0.1),
    ]
    settings = RefreshSettings(baseline_budget=2)
    requests = plan_baseline(states, settings, now=NOW)
    assert [(r.scope, r.reason) for r in requests] == [
        ("high-aged", Reason.AGED),
        ("low-missing", Reason.MISSING),
    ]
