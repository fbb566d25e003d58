"""Remediation, the second phase over a report: plans made from a fresh report, then applied or
undone batch by batch against the live source, with safety, an audit log and rollback.

- A **plan** is made from the stored report an admin reviewed: only entities that report lists
  as unused, and only while the report is fresh (the live source's watermark is still the
  report's). A stale report refuses, saying to refresh it.
- **Submitting** a plan is refused once its report was replaced by a newer generation; so is
  its run, should a refresh land between submission and the run's start.
- At **apply**, each batch re-verifies its entities against the live source, in the source
  transaction that applies the change: the ones that no longer qualify (used since the review,
  put on a screen) are skipped and listed.
- Batches are idempotent and independent (``actions.py`` checkpoints each one prepared, then
  done): a crashed run resumes, a batch run twice changes nothing more, any order gives the
  same result. **Undo** restores exactly what apply changed, batch for batch, and is audited
  as an action of its own.

No Dagster here: ``orchestration/remediation.py`` runs ``run_action`` as a Dagster job.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from precompute_assets.contract import Remediation, ReportTool
from precompute_assets.core.actions import (
    APPLY,
    DONE,
    PLANNED,
    REFUSED,
    Action,
    ActionLog,
    BatchRecord,
)
from precompute_assets.core.db import write_transaction
from precompute_assets.core.report_store import ReportHeader, ReportStore
from precompute_assets.core.text import ago, shorten
from precompute_assets.core.window import reference_params

FINISHED = (DONE, REFUSED)


class PlanRefused(Exception):
    """A plan that cannot be made or applied; ``kind`` says why (``stale``, ``replaced``,
    ``invalid``, ``unavailable``), the message what to do."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def remediation_of(tool: ReportTool[Any]) -> Remediation:
    if tool.remediation is None:
        raise PlanRefused("unavailable", f"tool {tool.name!r} offers no action on its entities")
    return tool.remediation


def make_plan(
    log: ActionLog,
    tool: ReportTool[Any],
    header: ReportHeader,
    records: Sequence[dict[str, Any]],
    entity_ids: Sequence[str],
    live_watermark: str | None,
    key_id: str,
    now: float | None = None,
    tenant: str | None = None,
) -> Action:
    """A plan to apply the tool's remediation to ``entity_ids`` of the report (``header`` and
    its ``records``), reviewed by ``key_id``; PlanRefused if the report is stale or the
    entities are not among its unused ones. ``tenant`` is the scope's, if known better than
    the report's header knows it."""
    remediation = remediation_of(tool)
    now = time.time() if now is None else now
    if live_watermark is None:
        raise PlanRefused("invalid", f"the source no longer holds {header.scope!r}")
    if live_watermark != header.watermark:
        raise PlanRefused(
            "stale",
            f"The source changed since this report was computed "
            f"({ago(now - header.computed_at)}): refresh the report, then review again.",
        )
    unused = {record["entity_id"]: record for record in records if record["unused"]}
    chosen = list(dict.fromkeys(entity_ids))
    if not chosen:
        raise PlanRefused("invalid", "Select at least one unused entity to review.")
    strays = [entity for entity in chosen if entity not in unused]
    if strays:
        raise PlanRefused(
            "invalid",
            f"{shorten(', '.join(strays))} {'is' if len(strays) == 1 else 'are'} not among the "
            "report's unused entities: reload the report and select again.",
        )
    return log.plan(
        tool=tool.name,
        scope=header.scope,
        tenant=tenant or header.tenant,
        generation=header.generation,
        watermark=header.watermark,
        entities=[
            {"id": entity, "name": str(unused[entity]["detail"].get("name") or entity)}
            for entity in chosen
        ],
        params=header.summary.get("params", {}),
        key_id=key_id,
        batch_size=remediation.batch_size,
    )


def check_submittable(action: Action, header: ReportHeader | None) -> None:
    """PlanRefused unless ``action`` is a plan whose report is still the stored one."""
    if action.status != PLANNED:
        raise PlanRefused("invalid", f"This plan was {action.status} already.")
    replaced = _replaced(action, header)
    if replaced:
        raise PlanRefused("replaced", replaced)


@dataclass(frozen=True)
class ActionResult:
    """What a run of an action did, and what the action as a whole applied and skipped."""

    action: Action
    applied: list[str]
    skipped: list[str]
    batches_run: int  # by this run
    batches_done_before: int  # found done by an earlier run of the action

    @property
    def refused(self) -> bool:
        return self.action.status == REFUSED


def run_action(
    tool: ReportTool[Any],
    action_id: str,
    source: Engine,
    log: ActionLog,
    store: ReportStore,
    now: float | None = None,
) -> ActionResult:
    """Apply or undo the action, every batch not done yet; finish it with its result.

    A run of an action already finished changes nothing. An apply is refused at its start if
    its report was replaced since the plan was made (after its first batch, the source moves
    because of the action itself, so a resumed run goes on).
    """
    remediation = remediation_of(tool)
    action = _action(log, action_id)
    if action.status == PLANNED:
        raise PlanRefused("invalid", f"action {action_id} is a plan nobody submitted")
    batches = log.batches(action_id)
    done_before = sum(1 for batch in batches if batch.done)
    if action.status not in FINISHED:
        first_start = action.kind == APPLY and not any(batch.prepared for batch in batches)
        replaced = first_start and _replaced(action, store.header(tool.name, action.scope))
        if replaced:
            log.refuse(action_id, replaced)
        else:
            log.start(action_id)
        action = _action(log, action_id)
    ran = 0
    if action.status not in FINISHED:
        params = {**action.params, **reference_params(tool, time.time() if now is None else now)}
        undone = _undone_batches(log, action)
        for batch in batches:
            if not batch.done:
                run_batch(remediation, action, batch, source, log, params, undone)
                ran += 1
        batches = log.batches(action_id)
    applied = [entity for batch in batches for entity in batch.applied or ()]
    skipped = [entity for batch in batches for entity in batch.skipped or ()]
    if action.status not in FINISHED:
        log.finish(action_id, len(applied), len(skipped), _result(remediation, action, skipped))
    return ActionResult(_action(log, action_id), applied, skipped, ran, done_before)


def run_batch(
    remediation: Remediation,
    action: Action,
    batch: BatchRecord,
    source: Engine,
    log: ActionLog,
    params: dict[str, Any],
    undone: dict[int, BatchRecord] | None = None,
) -> None:
    """One batch, in one source transaction: verify and apply (or undo), prepared in the log
    before the source commits, done after. Any order, any number of times."""
    with write_transaction(source) as connection:
        if action.kind == APPLY:
            if batch.prepared:  # a run died around the commit: the same entities again
                applied, skipped = batch.applied or [], batch.skipped or []
            else:
                found = remediation.verify(connection, action.scope, batch.entities, params)
                qualifying = set(found)
                applied = [entity for entity in batch.entities if entity in qualifying]
                skipped = [entity for entity in batch.entities if entity not in qualifying]
            undo = remediation.apply(connection, action.scope, applied, params) if applied else None
            log.prepare(action.action_id, batch.batch, applied, skipped, undo)
        else:
            original = (undone or _undone_batches(log, action))[batch.batch]
            remediation.undo(connection, action.scope, original.undo, params)
            log.prepare(action.action_id, batch.batch, batch.entities, [], None)
    log.mark_done(action.action_id, batch.batch)


def _undone_batches(log: ActionLog, action: Action) -> dict[int, BatchRecord]:
    """The batches of the apply an undo restores, by index (none for an apply)."""
    if action.kind == APPLY or action.undoes is None:
        return {}
    return {batch.batch: batch for batch in log.batches(action.undoes)}


def _replaced(action: Action, header: ReportHeader | None) -> str | None:
    if header is None:
        return "The report this plan came from is gone: refresh it, then review again."
    if header.generation != action.generation:
        return (
            f"The report was recomputed (generation {header.generation}) since this plan was "
            f"reviewed from generation {action.generation}: review the new report, then apply."
        )
    return None


def _result(remediation: Remediation, action: Action, skipped: list[str]) -> str:
    if action.kind != APPLY:
        return f"Undone: {len(action.entities)} restored."
    applied = len(action.entities) - len(skipped)
    text = f"{remediation.action}: {applied} applied"
    if skipped:
        text += f", {len(skipped)} skipped (no longer qualify against the live source)"
    return text + "."


def _action(log: ActionLog, action_id: str) -> Action:
    action = log.get(action_id)
    if action is None:
        raise LookupError(f"no remediation action {shorten(action_id)!r} in the store")
    return action
