"""Test support for tests/test_crash_resume.py: a tool that SIGKILLs its own step process.

Dagster's multiprocess executor runs every step in a child process that rebuilds the job from a
pointer. ``crash_job`` returns that pointer: ``make_job`` below, called with JSON keyword
arguments, so each child rebuilds the very job the test launched (the kill point, the scan log
and the store travel in the run's job origin).

Environment variables would not do here: under the ``forkserver`` start method every child is
forked from one server process that keeps the environment it had when it started, so a variable
changed after the first run never reaches a later run's steps.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import JobDefinition, RetryPolicy, build_reconstructable_job

from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from tool_plugins.unused_fields import UnusedFields

if TYPE_CHECKING:
    from dagster._core.definitions.reconstruct import ReconstructableJob

TOOL_NAME = "killing_fields"
JOB_NAME = f"{TOOL_NAME}_job"
PARTITIONS_NAME = f"{TOOL_NAME}_scopes"


class KillingFields(UnusedFields):
    """unused_fields that logs every batch it scans and kills its own process at one batch.

    ``scan`` appends ``"<pid> <batch index>"`` to ``scan_log``, then, when the batch is
    ``kill_batch`` and ``marker`` does not exist yet, creates ``marker`` and sends SIGKILL to its
    own process: the step dies mid-shard, after the shard's earlier batches were checkpointed in
    the ledger and before this one is. The marker makes the kill happen once per test case.
    """

    name = TOOL_NAME

    def __init__(
        self, scan_log: str, kill_batch: int | None = None, marker: str | None = None
    ) -> None:
        self.scan_log = scan_log
        self.kill_batch = kill_batch
        self.marker = marker

    def scan(self, source, batch):
        with open(self.scan_log, "a") as log:
            log.write(f"{os.getpid()} {batch.index}\n")
        if batch.index == self.kill_batch and self.marker is not None:
            marker = Path(self.marker)
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().scan(source, batch)


def make_job(
    *,
    source_url: str,
    store_url: str,
    batch_size: int,
    max_shards: int,
    max_retries: int,
    scan_log: str,
    kill_batch: int | None = None,
    marker: str | None = None,
    scan_threads: int = 1,
) -> JobDefinition:
    """The partitioned ``killing_fields_job``, as the framework builds it for any tool.

    One scan thread by default: each shard then scans its batches in order, so a kill at batch K
    leaves exactly the batches before K checkpointed."""
    tool = KillingFields(scan_log, kill_batch, marker)
    precompute = PrecomputeResource(
        source_url=source_url,
        store_url=store_url,
        batch_size=batch_size,
        max_shards=max_shards,
        scan_threads=scan_threads,
    )
    defs = build_definitions({tool.name: tool}, precompute, RetryPolicy(max_retries=max_retries))
    return defs.resolve_job_def(JOB_NAME)


def crash_job(**kwargs: Any) -> ReconstructableJob:
    """A pointer to ``make_job(**kwargs)`` that Dagster's child processes can follow."""
    # The folder is named: Dagster drops sys.path[0] (pytest's tests/) when it imports the module.
    return build_reconstructable_job(
        __name__,
        make_job.__name__,
        reconstructable_kwargs=kwargs,
        reconstructor_working_directory=str(Path(__file__).resolve().parent),
    )
