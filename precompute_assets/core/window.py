"""The reference times of a job: what ``as_of`` and ``since`` in a batch's params mean.

The framework fixes them when a job opens, so every scan of the job, retried or resumed, computes
against the same times. ``as_of`` is the job's start in unix seconds. A tool with a usage window
(``window_days``) also gets ``since``: that many days before the UTC midnight that starts the
job's day, so every job of one day over an unchanged scope gives the same report, and the window
moves once a day. A reader compares a report's ``since`` with today's to say "window moved".
"""

from __future__ import annotations

from typing import Any

from precompute_assets.contract import ReportTool

DAY_S = 86_400


def window_start(tool: ReportTool[Any], now: float) -> int | None:
    """Where the tool's window starts for a job at ``now``; None for a tool without one."""
    if tool.window_days is None:
        return None
    return int(now) // DAY_S * DAY_S - tool.window_days * DAY_S


def reference_params(tool: ReportTool[Any], now: float) -> dict[str, int]:
    """``as_of``, and ``since`` for a tool with a window."""
    since = window_start(tool, now)
    return {"as_of": int(now)} | ({} if since is None else {"since": since})
