"""The code location of ``tests/test_daemon.py``: the project's tools and ``slow_fields``.

``failing_fields`` raises in every scan, as a tool with a bug would. ``slow_fields`` is
``unused_fields`` taking ``SLOW_FIELDS_SCAN_S`` seconds per batch, and
appending ``"<pid> <batch index>"`` to ``SLOW_FIELDS_LOG`` as each scan starts, so a test can
find the process of a run mid-scan, kill it, and see which batches a retry scanned again.
"""

from __future__ import annotations

import os
import time

from precompute_assets.core.registry import load_tools
from precompute_assets.orchestration.definitions import build_definitions
from tool_plugins.unused_fields import UnusedFields


class SlowFields(UnusedFields):
    name = "slow_fields"

    def scan(self, source, batch):
        log = os.environ.get("SLOW_FIELDS_LOG")
        if log:
            with open(log, "a") as out:
                out.write(f"{os.getpid()} {batch.index}\n")
        time.sleep(float(os.environ.get("SLOW_FIELDS_SCAN_S", "0")))
        return super().scan(source, batch)


class FailingFields(UnusedFields):
    """A tool with a bug: every scan raises."""

    name = "failing_fields"

    def scan(self, source, batch):
        raise ValueError("a bug in failing_fields")


defs = build_definitions(
    {
        **load_tools(autoload=False),
        SlowFields.name: SlowFields(),
        FailingFields.name: FailingFields(),
    }
)
