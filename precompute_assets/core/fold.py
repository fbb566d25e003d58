"""A running fold of contributions over a span of a job's batches.

Shards fold their batches into a partial as they scan them, and finalise folds partials and
unlifted batches as the ledger streams them: neither ever holds more than a few contributions.
The fold knows which batches it covers, so what is missing is rescanned and nothing is folded
twice.
"""

from __future__ import annotations

from typing import Any

from precompute_assets.contract import ReportTool

# Contributions merged at once: n-ary merges spare a tool whose merge copies its first argument
# most of the copies, while only this many decoded contributions wait in memory.
MERGE_EVERY = 16


class Fold:
    """``merge`` over the contributions added, each covering distinct batches of ``span``."""

    def __init__(self, tool: ReportTool[Any], span: range) -> None:
        self.tool = tool
        self.span = span
        self.partials: list[range] = []  # the lifted partials folded in
        self.entries = 0  # the single batches folded in
        self._total = tool.empty()
        self._waiting: list[Any] = []
        self._covered = bytearray(len(span))

    def add(self, batches: range, contribution: Any, *, partial: bool = False) -> None:
        """Fold the contribution of ``batches``: one batch's entry, or a lifted partial."""
        self.cover(batches)
        if partial:
            self.partials.append(batches)
        else:
            self.entries += len(batches)
        self._waiting.append(contribution)
        if len(self._waiting) >= MERGE_EVERY:
            self._merge()

    def cover(self, batches: range) -> None:
        """Count ``batches`` as folded (a partial folded elsewhere covers them)."""
        first = batches.start - self.span.start
        last = batches.stop - self.span.start
        if first < 0 or last > len(self.span):
            raise ValueError(f"batches {_text(batches)} are not all in {_text(self.span)}")
        if any(self._covered[first:last]):
            raise RuntimeError(f"batches {_text(batches)} would be folded twice")
        self._covered[first:last] = b"\x01" * len(batches)

    def missing(self) -> list[int]:
        """The batches of the span no contribution covers yet, in order."""
        return [self.span.start + at for at, done in enumerate(self._covered) if not done]

    def total(self) -> Any:
        self._merge()
        return self._total

    def _merge(self) -> None:
        if self._waiting:
            self._total = self.tool.merge([self._total, *self._waiting])
            self._waiting = []


def _text(batches: range) -> str:
    return f"{batches.start}..{batches.stop - 1}"
