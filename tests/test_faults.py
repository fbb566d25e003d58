"""Retries and reruns never count a batch twice, and rescan only what the ledger lacks."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import largest_scope, run_partition
from dagster import DagsterEventType, RetryPolicy

from precompute_assets.orchestration.definitions import build_definitions
from tool_plugins.unused_fields import UnusedFields


class RecordingFields(UnusedFields):
    """unused_fields that records every batch it scans and can be told to fail on some."""

    name = "recording_fields"

    def __init__(self) -> None:
        self.scanned: list[int] = []
        self.fail_once: set[int] = set()
        self.fail_always: set[int] = set()

    def scan(self, source, batch):
        self.scanned.append(batch.index)
        if batch.index in self.fail_once:
            self.fail_once.discard(batch.index)
            raise ConnectionError("source dropped the connection")
        if batch.index in self.fail_always:
            raise ValueError("a bug in the tool")
        return super().scan(source, batch)


def _rows(precompute, tool_name, scope) -> pd.DataFrame:
    return precompute.store().read(tool_name, scope)[1].drop(columns=["entity_type"])


def test_a_shard_retried_by_its_policy_does_not_double_count(precompute, instance, defs):
    tool = RecordingFields()
    flaky_defs = build_definitions({tool.name: tool}, precompute, RetryPolicy(max_retries=2))
    scope = largest_scope(precompute)
    assert run_partition(defs, "unused_fields", scope, instance).success
    clean = _rows(precompute, "unused_fields", scope)

    tool.fail_once = {1}  # the second batch of the first shard fails on its first attempt
    result = run_partition(flaky_defs, tool.name, scope, instance)

    assert result.success
    retried = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert [e.step_key for e in retried] == [
        "recording_fields_report.recording_fields_scan_shard[shard_0]"
    ]
    header = precompute.store().header(tool.name, scope)
    # Batch 0 was checkpointed before the failure: the retry skipped it.
    assert sorted(tool.scanned) == sorted([*range(header.batch_count), 1])
    pd.testing.assert_frame_equal(_rows(precompute, tool.name, scope), clean)


@pytest.mark.slow
def test_a_run_after_a_failed_run_rescans_only_missing_batches(precompute, instance, defs):
    tool = RecordingFields()
    flaky_defs = build_definitions({tool.name: tool}, precompute, RetryPolicy(max_retries=0))
    scope = largest_scope(precompute)
    assert run_partition(defs, "unused_fields", scope, instance).success
    clean = _rows(precompute, "unused_fields", scope)

    tool.fail_always = {4, 5}
    failed = run_partition(flaky_defs, tool.name, scope, instance, raise_on_error=False)
    assert not failed.success
    assert precompute.store().header(tool.name, scope) is None
    in_ledger = set(tool.scanned) - {4, 5}

    tool.scanned.clear()
    tool.fail_always = set()
    rerun = run_partition(flaky_defs, tool.name, scope, instance)

    assert rerun.success
    header = precompute.store().header(tool.name, scope)
    missing_after_failure = set(range(header.batch_count)) - in_ledger
    assert {4, 5} <= missing_after_failure
    assert sorted(tool.scanned) == sorted(missing_after_failure)  # each once
    assert header.summary["resumed"] is True
    pd.testing.assert_frame_equal(_rows(precompute, tool.name, scope), clean)


def test_a_tool_error_fails_at_once_naming_tool_scope_and_batch(precompute, instance):
    """A deterministic failure runs once: no op retry, whatever the policy allows."""
    tool = RecordingFields()
    tool.fail_always = {0}
    flaky_defs = build_definitions({tool.name: tool}, precompute, RetryPolicy(max_retries=3))
    scope = largest_scope(precompute)
    result = run_partition(flaky_defs, tool.name, scope, instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    message = failures[0].event_specific_data.error.to_string()
    assert f"tool 'recording_fields' failed to scan scope '{scope}', batch 0" in message
    assert "a bug in the tool" in message
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == []
    assert tool.scanned.count(0) == 1, "batch 0 was scanned once"
