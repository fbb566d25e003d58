"""IO managers: the report asset's value is its report in the store; what steps pass each other
(a job plan, shard tasks, shard summaries) is JSON in the store database too.

``ReportIOManager`` loads a partition's report from the report store, as ``dagster-duckdb``
loads a partition's slice of a table: ``finalise`` has committed it there, so storing it needs
nothing more.

Dagster's default IO manager pickles every op output into files under ``DAGSTER_HOME``; steps on
other machines (celery workers, Kubernetes pods) cannot read them. The outputs here are small (a
job plan, shard tasks, shard summaries), so one table in the store database, which every step
already reaches, carries them between steps on any executor.

They are stored as JSON of the plan's fields, never pickled: a row of the store is data, and
whoever can write the store cannot make a step run code. A row that is not JSON of one of the
known types is refused with an error naming it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import cache
from typing import Any

import sqlalchemy as sa
from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import Field
from sqlalchemy import Engine

from precompute_assets.contract import Extent
from precompute_assets.core.db import create_engine_for, safe_url, write_transaction
from precompute_assets.core.phases import ShardResult
from precompute_assets.core.plan import JobPlan, Shard, ShardTask
from precompute_assets.core.run_work import RunPlan, RunShard, ScopeFailure, ShardOutcome
from precompute_assets.core.schema import create_store_schema, step_outputs
from precompute_assets.core.settings import DAY_S, Settings

# Long enough to re-execute a failed run from failure, short enough that a fleet's daily runs do
# not pile up: a few kilobytes per run.
RETENTION_DAYS = 7
# The dataclasses a step may pass to another, by the name their JSON carries.
STEP_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        JobPlan,
        Extent,
        Shard,
        ShardTask,
        ShardResult,
        RunPlan,
        RunShard,
        ShardOutcome,
        ScopeFailure,
    )
}
TYPE_KEY = "__type__"


class StepOutputNotFoundError(LookupError):
    """An input whose upstream output was never stored (or was stored elsewhere)."""


class StepOutputRefusedError(ValueError):
    """A stored step output that is not JSON of a known type; it is not loaded."""


class ReportNotStoredError(LookupError):
    """A downstream asset asked for a report the store does not hold."""


class ReportIOManager(ConfigurableIOManager):
    """The report assets' storage: the report store, one report per (tool, scope) partition.

    Loading gives the report's rows (``REPORT_COLUMNS``) with its header in ``attrs["header"]``;
    for several partitions at once, their rows with a ``scope`` column.

    Example::

        @asset(partitions_def=scopes_partitions(tool))
        def unused_field_names(unused_fields_report: pd.DataFrame) -> list[str]: ...
    """

    store_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the report store; default from settings."
    )

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        # finalise committed the report, header and rows in one transaction: nothing to write.
        return

    def load_input(self, context: InputContext) -> Any:
        import pandas as pd

        from precompute_assets.core.report_store import ReportStore

        tool = context.asset_key.path[-1].removesuffix("_report")
        store = ReportStore(_engine(self.store_url or Settings.from_env().store_url))
        scopes = context.asset_partition_keys if context.has_asset_partitions else []
        frames = []
        for scope in scopes:
            stored = store.read(tool, scope)
            if stored is None:
                raise ReportNotStoredError(
                    f"no {tool} report for scope {scope!r} in the store: materialise partition "
                    f"{scope!r} of {context.asset_key.to_user_string()} first"
                )
            header, rows = stored
            rows.attrs["header"] = dataclasses.asdict(header)
            frames.append(rows)
        if len(frames) == 1:
            return frames[0]
        return pd.concat(
            [rows.assign(scope=scope) for scope, rows in zip(scopes, frames, strict=True)],
            ignore_index=True,
        )


class StepOutputIOManager(ConfigurableIOManager):
    """Stores op outputs as JSON in ``precompute_step_outputs`` in the store database.

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
        payload = encode_step_value(obj)
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
        where = (
            f"output {key['output_name']!r} of step {key['step_key']!r}"
            f"{' [' + key['mapping_key'] + ']' if key['mapping_key'] else ''} of run "
            f"{key['run_id']} in {safe_url(self._url())}"
        )
        if payload is None:
            raise StepOutputNotFoundError(f"no stored {where}")
        try:
            return decode_step_value(payload)
        except StepOutputRefusedError as error:
            raise StepOutputRefusedError(f"refusing stored {where}: {error}") from None

    def _url(self) -> str:
        return self.store_url or Settings.from_env().store_url

    def _engine(self) -> Engine:
        return _engine(self._url())


def encode_step_value(value: Any) -> str:
    """JSON of ``value``: plain JSON values, and the known dataclasses field by field."""
    return json.dumps(_to_json(value), sort_keys=True, allow_nan=False)


def decode_step_value(payload: str | bytes) -> Any:
    """The value ``encode_step_value`` stored; StepOutputRefusedError for anything else."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise StepOutputRefusedError("it is not a JSON document") from None
    return _from_json(document)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if STEP_TYPES.get(name) is not type(value):
            raise TypeError(f"a step output of type {name} cannot be stored as JSON")
        fields = {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {TYPE_KEY: name, **fields}
    if isinstance(value, dict):
        return {str(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    fields = {key: _from_json(item) for key, item in value.items() if key != TYPE_KEY}
    if TYPE_KEY not in value:
        return fields
    name = value[TYPE_KEY]
    cls = STEP_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise StepOutputRefusedError(f"{name!r} is not a type steps pass to each other")
    try:
        return cls(**fields)
    except TypeError as error:
        raise StepOutputRefusedError(f"its {name} fields do not fit: {error}") from None


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
    create_store_schema(engine)
    return engine
