"""Step outputs in the store database, so that steps share no process and no disk.

Dagster's default IO manager pickles every op output into files under ``DAGSTER_HOME``; steps on
other machines (celery workers, Kubernetes pods) cannot read them. The outputs here are small (a
job plan, shard tasks, shard summaries), so one table in the store database, which every step
already reaches, carries them between steps on any executor.
"""

from __future__ import annotations

import pickle
import time
from functools import cache
from typing import Any

import sqlalchemy as sa
from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import Field
from sqlalchemy import Engine

from precompute_assets.db import create_engine_for, ensure_tables, safe_url, write_transaction
from precompute_assets.settings import DAY_S, Settings

metadata = sa.MetaData()

step_outputs = sa.Table(
    "precompute_step_outputs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step_key", sa.String(255), primary_key=True),
    sa.Column("output_name", sa.String(255), primary_key=True),
    # '' for an output that is not one of a dynamic output's mapped copies.
    sa.Column("mapping_key", sa.String(255), primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)
# Long enough to re-execute a failed run from failure, short enough that a fleet's daily runs do
# not pile up: a few kilobytes per run.
RETENTION_DAYS = 7


class StepOutputNotFoundError(LookupError):
    """An input whose upstream output was never stored (or was stored elsewhere)."""


class StepOutputIOManager(ConfigurableIOManager):
    """Pickles op outputs into ``precompute_step_outputs`` in the store database.

    Rows are keyed by the run that produced the output, so a re-execution from failure reads its
    parent run's outputs exactly as Dagster's filesystem IO manager does.
    """

    store_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the store database; default from settings."
    )
    retention_days: float = Field(
        default=RETENTION_DAYS, description="Days a run's outputs are kept for re-execution."
    )

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        key = _key(context)
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        # A retried step writes its output again: replace, never duplicate.
        now = time.time()
        with write_transaction(self._engine()) as connection:
            connection.execute(step_outputs.delete().where(_matches(key)))
            connection.execute(step_outputs.insert().values(**key, payload=payload, created_at=now))
            # Once per run, at the report asset's own output: forget outputs past retention.
            if context.has_asset_key:
                expired = step_outputs.c.created_at < now - self.retention_days * DAY_S
                connection.execute(step_outputs.delete().where(expired))

    def load_input(self, context: InputContext) -> Any:
        key = _key(context.upstream_output)
        with self._engine().connect() as connection:
            payload = connection.execute(
                sa.select(step_outputs.c.payload).where(_matches(key))
            ).scalar()
        if payload is None:
            raise StepOutputNotFoundError(
                f"no stored output {key['output_name']!r} of step {key['step_key']!r}"
                f"{' [' + key['mapping_key'] + ']' if key['mapping_key'] else ''} of run "
                f"{key['run_id']} in {safe_url(self._url())}"
            )
        return pickle.loads(payload)

    def _url(self) -> str:
        return self.store_url or Settings.from_env().store_url

    def _engine(self) -> Engine:
        return _engine(self._url())


def _key(context: OutputContext | None) -> dict[str, str]:
    if context is None:
        raise StepOutputNotFoundError("an input with no upstream output to load")
    return {
        "run_id": context.run_id,
        "step_key": context.step_key,
        "output_name": context.name,
        "mapping_key": context.mapping_key or "",
    }


def _matches(key: dict[str, str]) -> sa.ColumnElement[bool]:
    return sa.and_(*(step_outputs.c[column] == value for column, value in key.items()))


@cache
def _engine(url: str) -> Engine:
    engine = create_engine_for(url)
    ensure_tables(engine, metadata)
    return engine
