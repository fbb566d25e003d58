"""The fleet's refresh state in the store: its SQL asks the refresh policy's questions, and the
catalogue's feed of changes misses no write, whoever writes and however writers interleave."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext

import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.fleet_state import FleetState
from precompute_assets.core.refresh import due_reason, is_stale, priority_order
from precompute_assets.core.schema import headers, scope_states
from precompute_assets.core.settings import RefreshSettings
from precompute_assets.demo import Spaces
from precompute_assets.demo.source import DemoScale, generate_source
from tool_plugins.unused_fields import UnusedFields

NOW = 1_800_000_000.0
DAY = 86_400
TOOL = UnusedFields()

scope_strategy = st.fixed_dictionaries(
    {
        "utilisation": st.sampled_from([0.1, 0.5, 0.69, 0.7, 0.71, 0.9, 1.2]),
        "report": st.booleans(),
        "changed": st.booleans(),
        "age_days": st.sampled_from([0, 1, 6.9, 7.1, 20, 29.9, 30.1, 90]),
        "recorded": st.sampled_from([None, True, False]),
    }
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> FleetState:
    engine = create_engine_for(sqlite_url(tmp_path_factory.mktemp("fleet") / "store.db"))
    return FleetState(engine)


def _store_fleet(fleet: FleetState, drawn: list[dict]) -> None:
    with fleet.engine.begin() as store:
        store.execute(scope_states.delete())
        store.execute(headers.delete())
        for index, scope in enumerate(drawn):
            name = f"s{index:03d}"
            store.execute(
                scope_states.insert().values(
                    tool=TOOL.name,
                    scope=name,
                    tenant="t1",
                    utilisation=scope["utilisation"],
                    watermark="w2" if scope["changed"] else "w1",
                    registered=True,
                    seen_at=NOW,
                    fresh_recorded=scope["recorded"],
                )
            )
            if scope["report"]:
                store.execute(
                    headers.insert().values(
                        tool=TOOL.name,
                        scope=name,
                        generation=1,
                        status="complete",
                        computed_at=NOW - scope["age_days"] * DAY,
                        watermark="w1",
                        entity_count=10,
                        row_count=1,
                        unused_count=0,
                        batch_count=1,
                        shard_count=1,
                        duration_s=0.1,
                        summary="{}",
                    )
                )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=st.lists(scope_strategy, min_size=1, max_size=25))
def test_the_stores_questions_are_the_refresh_policys(fleet, drawn):
    """Due, in the policy's order; past the long age; freshness unlike the recorded one: what
    the SQL finds is what ``refresh.py`` says of the same states, scope by scope."""
    _store_fleet(fleet, drawn)
    policy = RefreshSettings()
    everything = fleet.freshness_changed(TOOL, policy, NOW, 10_000) + fleet.due(
        TOOL, policy, NOW, 10_000
    )
    states = {state.scope: state for state in everything}

    due = fleet.due(TOOL, policy, NOW, limit=10_000)
    expected = [s for s in priority_order(states.values(), policy) if due_reason(s, policy, NOW)]
    assert [s.scope for s in due] == [s.scope for s in expected]
    assert [s.scope for s in fleet.due(TOOL, policy, NOW, limit=3)] == [
        s.scope for s in expected[:3]
    ]
    counts = fleet.counts(TOOL, policy, NOW)
    assert (counts.scopes, counts.due) == (len(drawn), len(expected))

    recorded = {f"s{index:03d}": scope["recorded"] for index, scope in enumerate(drawn)}
    changed = fleet.freshness_changed(TOOL, policy, NOW, 10_000)
    assert {s.scope for s in changed} == {
        scope
        for scope, state in states.items()
        if recorded[scope] != (not is_stale(state, policy, NOW))
    }
    aged = fleet.aged(TOOL, policy, NOW, 10_000)
    assert {s.scope for s in aged} == {
        scope for scope, state in states.items() if state.age_s(NOW) > policy.low_max_age_s
    }


def _follow(url: str, stop: threading.Event, seen: dict[str, str]) -> None:
    """Read the feed as a sensor does, from cursor to cursor, until told to stop."""
    catalogue = Spaces(counted="space_fields", limit=700)
    engine = create_engine_for(url, read_only=True)
    cursor = None
    with engine.connect() as source:
        while True:
            finished = stop.is_set()
            with source.begin():
                changes = catalogue.changes(source, cursor, limit=7)
            for change in changes.scopes:
                seen[change.scope] = change.watermark
            cursor = changes.cursor
            if finished and not changes.scopes:
                break
    engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_feed_of_changes_misses_no_write_of_concurrent_writers(backend, tmp_path):
    """Writers in transactions of their own, released together by a barrier, many rounds;
    a reader following the feed meanwhile ends up with every space's final version."""
    sqlite = nullcontext(sqlite_url(tmp_path / "source.db"))
    with fresh_postgres_database() if backend == "postgresql" else sqlite as url:
        writers, rounds = 3, 12
        spaces = writers * rounds
        generate_source(url, DemoScale(tenants=2, spaces=spaces, work_items=spaces * 20, seed=5))
        barrier = threading.Barrier(writers)
        stop, seen = threading.Event(), {}
        follower = threading.Thread(target=_follow, args=(url, stop, seen))
        follower.start()

        def write(writer: int) -> None:
            engine = create_engine_for(url)
            for round_ in range(rounds):
                barrier.wait()
                with engine.begin() as source:
                    # Each space written once: a change the reader missed stays missed.
                    space = writer * rounds + round_ + 1
                    source.execute(
                        sa.text(
                            "UPDATE work_items SET updated_at = updated_at + 1 WHERE id = ("
                            "SELECT MIN(id) FROM work_items WHERE space_id = :space)"
                        ),
                        {"space": space},
                    )
                    # Commit in another order than the writes began.
                    time.sleep(0.004 * (writers - writer))
            engine.dispose()

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        follower.join(timeout=60)
        engine = create_engine_for(url)
        with engine.connect() as source:
            final = {
                key: str(version)
                for key, version in source.execute(
                    sa.text("SELECT space_key, version FROM space_changes")
                )
            }
        engine.dispose()
        assert seen == final
