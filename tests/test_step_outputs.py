"""Step outputs through the store database, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import pickle
import time

import pytest
import sqlalchemy as sa
from dagster import build_input_context, build_output_context

from precompute_assets.contract import Extent
from precompute_assets.core.db import sqlite_url
from precompute_assets.core.plan import JobPlan, Shard, ShardTask
from precompute_assets.orchestration.io_managers import (
    StepOutputIOManager,
    StepOutputNotFoundError,
    StepOutputRefusedError,
    step_outputs,
)

STEP = "unused_fields_report.unused_fields_plan_shards"


def _output(run_id: str, mapping_key: str | None = None):
    return build_output_context(
        step_key=STEP, name="result", run_id=run_id, mapping_key=mapping_key
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "outputs.db")
    return request.getfixturevalue("postgres_url")


def test_outputs_are_read_back_per_run_and_mapping_key_and_replaced_on_retry(store_url):
    io = StepOutputIOManager(store_url=store_url)
    io.handle_output(_output("run-a", "shard_0"), {"shard": 0})
    io.handle_output(_output("run-a", "shard_1"), {"shard": 1})
    io.handle_output(_output("run-b", "shard_0"), {"shard": "b0"})
    io.handle_output(_output("run-a", "shard_1"), {"shard": "1, retried"})

    def load(run_id: str, mapping_key: str):
        return io.load_input(build_input_context(upstream_output=_output(run_id, mapping_key)))

    assert load("run-a", "shard_0") == {"shard": 0}
    assert load("run-a", "shard_1") == {"shard": "1, retried"}
    assert load("run-b", "shard_0") == {"shard": "b0"}
    with sa.create_engine(store_url).connect() as connection:
        rows = connection.execute(
            sa.select(sa.func.count()).where(step_outputs.c.run_id == "run-a")
        ).scalar()
    assert rows == 2


def test_a_missing_output_names_the_step_and_the_run(tmp_path):
    io = StepOutputIOManager(store_url=sqlite_url(tmp_path / "outputs.db"))
    with pytest.raises(StepOutputNotFoundError, match=r"plan_shards.*\[shard_3\].*run-gone"):
        io.load_input(build_input_context(upstream_output=_output("run-gone", "shard_3")))


def test_a_report_output_forgets_outputs_past_retention(tmp_path):
    io = StepOutputIOManager(store_url=sqlite_url(tmp_path / "outputs.db"), retention_days=7)
    io.handle_output(_output("run-old", "shard_0"), "old")
    io.handle_output(_output("run-recent", "shard_0"), "recent")
    engine = sa.create_engine(sqlite_url(tmp_path / "outputs.db"))
    with engine.begin() as connection:
        connection.execute(
            step_outputs.update()
            .where(step_outputs.c.run_id == "run-old")
            .values(created_at=time.time() - 8 * 86_400)
        )
    io.handle_output(_output("run-recent", "shard_1"), "not an asset: prunes nothing")
    assert _run_ids(engine) == {"run-old", "run-recent"}

    report = build_output_context(
        step_key="unused_fields_report.unused_fields_finalise",
        name="result",
        run_id="run-recent",
        asset_key="unused_fields_report",
    )
    io.handle_output(report, {"rows": 3})
    assert _run_ids(engine) == {"run-recent"}


def _run_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.select(step_outputs.c.run_id)).scalars())


class _Shell:
    """What a planted pickle would be: unpickling it runs a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(store_url: str, run_id: str, payload: str) -> None:
    with sa.create_engine(store_url).begin() as connection:
        connection.execute(
            step_outputs.update().where(step_outputs.c.run_id == run_id).values(payload=payload)
        )


def test_plans_and_shard_tasks_travel_as_json_and_come_back_equal(store_url):
    io = StepOutputIOManager(store_url=store_url)
    extent = Extent(1, 900, 800, "17", {"space_id": 3, "as_of": 1_793_491_200})
    plan = JobPlan("unused_fields", "t1-s001", 2, extent, 100, False, 1.5, "a" * 32, (1, 40, 700))
    task = ShardTask(plan, Shard(1, 3, 5), None)
    io.handle_output(_output("run-j", "shard_1"), task)
    with sa.create_engine(store_url).connect() as connection:
        stored = connection.execute(
            sa.select(step_outputs.c.payload).where(step_outputs.c.run_id == "run-j")
        ).scalar()
    assert json.loads(stored)["plan"]["extent"]["watermark"] == "17"
    loaded = io.load_input(build_input_context(upstream_output=_output("run-j", "shard_1")))
    assert loaded == task and loaded.plan.batch(2).first_key == 700


def test_a_forged_row_is_refused_with_a_clear_error_and_runs_nothing(store_url, tmp_path):
    io = StepOutputIOManager(store_url=store_url)
    io.handle_output(_output("run-f", "shard_0"), {"shard": 0})
    marker = tmp_path / "planted-code-ran"
    _plant(store_url, "run-f", pickle.dumps(_Shell(str(marker)), protocol=0).decode("latin-1"))

    load = build_input_context(upstream_output=_output("run-f", "shard_0"))
    with pytest.raises(StepOutputRefusedError, match=r"refusing stored output.*run-f.*not a JSON"):
        io.load_input(load)
    assert not marker.exists()

    _plant(store_url, "run-f", json.dumps({"__type__": "Popen", "args": ["touch", str(marker)]}))
    with pytest.raises(StepOutputRefusedError, match="'Popen' is not a type steps pass"):
        io.load_input(load)
    assert not marker.exists()
