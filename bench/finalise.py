"""Finalise of a scope of 100M entities: 20,000 batches against 200, time and peak memory.

    python bench/finalise.py '{"store_url": ..., "source_url": ..., "scope": ..., ...}'

Scanning 100M real entities would take hours here, so the ledger's content is simulated:
``prepare`` (called by ``run.py``) writes the batches' entries directly, as the shards of a job
over that many entities would have checkpointed them (up to 700 keys each: the usage of every
field of the space's field pool, 678 fields), then runs each shard through ``run_shard``, which
finds every batch recorded, reads them back and lifts them into its partial. What a crash
leaves is simulated too: the last shard killed before it lifted, its batches left as entries.

This script, run once per measurement in a fresh process, then times ``finalise_job`` (the fold,
the tool's finalise, the report's commit) and reads its peak resident memory: VmHWM, reset just
before finalise starts (``/proc/self/clear_refs``), so it is finalise's own peak over what the
process held already (imports included, pandas too). Prints one JSON line.
"""

from __future__ import annotations

import json
import random
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from precompute_assets.contract import Extent
from precompute_assets.core.db import create_engine_for, write_transaction
from precompute_assets.core.ledger import Ledger, encode
from precompute_assets.core.phases import finalise_job, run_shard
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.schema import batches
from precompute_assets.core.window import reference_params
from precompute_assets.demo.source import DemoScale, generate_source
from tool_plugins.unused_fields import UnusedFields

# Five spaces, one of which holds 678 fields: up to 700 keys per contribution, as at the limit.
SOURCE_SCALE = DemoScale(tenants=1, spaces=5, work_items=2_000, seed=7)
ENTITIES_PER_BATCH = 5_000  # 20,000 batches: 100M entities
DISTINCT_CONTRIBUTIONS = 64  # batches share these, drawn once: drawing 20,000 costs minutes
INSERT_ROWS = 1_000
STATES = {
    "lifted": "every shard lifted its batches into a partial",
    "last_shard_unlifted": "the last shard was killed before lifting: its batches are entries",
}


def prepare_source(url: str) -> str:
    """The small demo source, and its space with the most fields."""
    generate_source(url, SOURCE_SCALE)
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql(
                "SELECT s.key FROM spaces s JOIN space_fields a ON a.space_id = s.id"
                " GROUP BY s.key ORDER BY COUNT(*) DESC LIMIT 1"
            ).scalar()
    finally:
        engine.dispose()


def prepare(
    source_url: str, store_url: str, scope: str, batch_count: int, max_shards: int, state: str
) -> dict[str, Any]:
    """Leave the ledger as the shards of a job of ``batch_count`` batches would, in ``state``;
    the spec of the measurement, and what lifting cost the shards."""
    tool = UnusedFields()
    source, store = create_engine_for(source_url, must_exist=True), create_engine_for(store_url)
    try:
        with source.connect() as connection:
            found = tool.catalogue.initialise(connection, scope)
            fields = [
                str(field)
                for field in connection.execute(
                    sa.text("SELECT field_id FROM space_fields WHERE space_id = :space"),
                    {"space": found.params["space_id"]},
                ).scalars()
            ]
        entities = batch_count * ENTITIES_PER_BATCH
        extent = replace(found, first_key=1, last_key=entities, entity_count=entities)
        ledger = Ledger(store)
        reference = reference_params(tool, time.time())
        plan = ledger.open_job(tool.name, scope, extent, ENTITIES_PER_BATCH, reference)
        pool = _contributions(fields, plan.extent.params["as_of"])
        shards = plan.shards(max_shards)
        lifted = shards if state == "lifted" else shards[:-1]
        lift_s = []
        for shard in shards:
            _write_entries(store, plan, shard.batch_indices, pool)
            if shard in lifted:
                lift_s.append(run_shard(tool, plan, shard, source, ledger).seconds)
    finally:
        source.dispose()
        store.dispose()
    return {
        "source_url": source_url,
        "store_url": store_url,
        "scope": scope,
        "extent": _extent_json(extent),
        "batch_size": ENTITIES_PER_BATCH,
        "reference": reference,
        "shards": len(shards),
        "prepared": {
            "batches": plan.batch_count,
            "entities": entities,
            "keys_per_contribution": [min(map(len, pool)), max(map(len, pool))],
            "state": STATES[state],
            "shard_lift_s": lift_s,
        },
    }


def _contributions(fields: list[str], as_of: int) -> list[dict[str, list[int]]]:
    """Usage of between half and all of the space's fields, as a batch of a big space has."""
    rng = random.Random(13)
    pool = []
    for _ in range(DISTINCT_CONTRIBUTIONS):
        keys = rng.sample(fields, rng.randint(len(fields) // 2, len(fields)))
        pool.append(
            {key: [rng.randint(1, 40), as_of - rng.randint(0, 10**8), 0, 0] for key in keys}
        )
    return pool


def _write_entries(store: sa.Engine, plan, indices: range, pool: list[dict]) -> None:
    encoded = [encode(contribution) for contribution in pool]
    key = {"tool": plan.tool, "scope": plan.scope, "generation": plan.generation}
    for start in range(indices.start, indices.stop, INSERT_ROWS):
        chunk = range(start, min(start + INSERT_ROWS, indices.stop))
        rows = [
            {**key, "batch": i, "contribution": encoded[i % len(encoded)], "scanned_at": 0.0}
            for i in chunk
        ]
        with write_transaction(store) as connection:
            connection.execute(batches.insert(), rows)


def _extent_json(extent: Extent) -> dict[str, Any]:
    return {
        "first_key": extent.first_key,
        "last_key": extent.last_key,
        "entity_count": extent.entity_count,
        "watermark": extent.watermark,
        "params": dict(extent.params),
        "tenant": extent.tenant,
    }


# ------------------------------------------------------------------------------ measurement


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import pandas  # noqa: F401  (loaded before the clock: a run's process has it already)

    tool = UnusedFields()
    source = create_engine_for(spec["source_url"], must_exist=True)
    store = create_engine_for(spec["store_url"])
    ledger = Ledger(store)
    extent = Extent(**spec["extent"])
    plan = ledger.open_job(tool.name, spec["scope"], extent, spec["batch_size"], spec["reference"])
    if not plan.resumed:
        raise RuntimeError("the prepared job was not found in the ledger")
    rss_before = memory_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    started = time.perf_counter()
    report = finalise_job(
        tool, plan, source, ledger, ReportStore(store), shard_count=spec["shards"]
    )
    seconds = time.perf_counter() - started
    peak = memory_kb("VmHWM")
    summary = report.header.summary
    return {
        "success": True,
        "finalise_s": round(seconds, 3),
        "peak_rss_mb": round(peak / 1024, 1),
        "rss_before_mb": round(rss_before / 1024, 1),
        "growth_mb": round((peak - rss_before) / 1024, 1),
        "partials_folded": summary["partials_folded"],
        "batches_folded_unlifted": summary["batches_folded_unlifted"],
        "batches_rescanned": summary["batches_rescanned_at_finalise"],
        "rows": report.header.row_count,
    }


def main() -> None:
    warnings.simplefilter("ignore")
    print(json.dumps(measure(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
