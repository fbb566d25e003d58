"""The same run on PostgreSQL: source, ledger and reports by URL alone."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SMALL_SCALE, run_partition, source_connection
from ground_truth import comparable, unused_fields_truth, unused_work_types_truth

from precompute_assets.core.reader import ReportReader
from precompute_assets.demo.source import generate_source
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

pytestmark = pytest.mark.slow


def test_reports_on_postgresql_equal_ground_truth(postgres_url, tools, instance):
    generate_source(postgres_url, SMALL_SCALE)
    precompute = PrecomputeResource(
        source_url=postgres_url, store_url=postgres_url, batch_size=1_000, max_shards=3
    )
    defs = build_definitions(tools, precompute)
    with source_connection(postgres_url) as source:
        scopes = list(source.exec_driver_sql("SELECT key FROM spaces ORDER BY key").scalars())
        for scope in scopes[:4]:
            assert run_partition(defs, "unused_fields", scope, instance).success
            assert run_partition(defs, "unused_work_types", scope, instance).success
            header, rows = precompute.store().read("unused_fields", scope)
            truth = unused_fields_truth(source, scope, header.summary["params"])
            pd.testing.assert_frame_equal(comparable(rows), truth)
            header, rows = precompute.store().read("unused_work_types", scope)
            truth = unused_work_types_truth(source, scope, header.summary["params"])
            pd.testing.assert_frame_equal(comparable(rows), truth)

    report = ReportReader.from_settings(precompute.settings(), tools).read(
        "unused_fields", scopes[0]
    )
    assert report.staleness.source_changed is False
