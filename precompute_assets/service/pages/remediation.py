"""Acting on a report: review the selected unused entities (a plan, made against the live
source), apply it, follow its run, undo it; and the activity log of every action.

The framework's rules hold here as in the run (``core/remediation.py``): a plan is refused from
a stale report, its apply is refused once the report was replaced, and a form posted twice
queues one run. Actions are the admin's tenant's only: another tenant's is a 404, as a missing
one is. Runs go to Dagster's run queue through the webserver, imported when first asked.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from precompute_assets.core.actions import APPLY, DONE, FAILED, PLANNED, REFUSED, Action
from precompute_assets.core.errors import DagsterUnavailableError
from precompute_assets.core.remediation import PlanRefused, check_submittable, make_plan
from precompute_assets.core.scope_index import KnownScope, ScopeIndex
from precompute_assets.service.pages.common import (
    Admin,
    CheckedForm,
    PageError,
    Pages,
    PagesState,
    render,
    secured,
)
from precompute_assets.service.pages.report import load_report

router = APIRouter(prefix="/admin", include_in_schema=False)
FINISHED = (DONE, REFUSED, FAILED)


@router.post("/tools/{tool}/spaces/{scope}/review")
def review(
    request: Request, pages: Pages, admin: Admin, form: CheckedForm, tool: str, scope: str
) -> Response:
    """Make a plan of the selected entities and show it for review; refused, with what to do,
    if the report is stale or was replaced since the page was shown."""
    report = load_report(pages, admin, tool, scope)
    entities = [str(value) for value in form.getlist("entity")]
    shown = str(form.get("generation", ""))
    header = report.header
    try:
        if shown != str(header.generation):
            raise PlanRefused(
                "replaced",
                f"The report was recomputed (generation {header.generation}) since the page you "
                "selected from: review the new report, then select again.",
            )
        live = pages.live_watermark(report.tool, scope)
        if live is not None and live != header.watermark:
            _seen(pages, report.tool.name, scope, live)
        action = make_plan(
            pages.actions, report.tool, header, report.records, entities, live,
            admin.key.key_id, tenant=report.tenant,
        )  # fmt: skip
    except PlanRefused as refused:
        return render(
            request,
            "review.html",
            admin,
            status_code=409 if refused.kind in ("stale", "replaced") else 422,
            report=report,
            refusal=str(refused),
            action=None,
        )
    return secured(RedirectResponse(f"/admin/actions/{action.action_id}", status_code=303))


@router.get("/actions/{action_id}")
def action_page(request: Request, pages: Pages, admin: Admin, action_id: str) -> Response:
    """A plan to review and apply, or an action's progress and result, with its undo."""
    action = _own(pages, admin, action_id)
    if action.status == PLANNED:
        report = load_report(pages, admin, action.tool, action.scope)
        return render(request, "review.html", admin, report=report, action=action, refusal=None)
    return render(request, "action.html", admin, **_action_view(pages, action))


@router.get("/actions/{action_id}/status")
def action_status(pages: Pages, admin: Admin, action_id: str) -> Response:
    """The action's status, for the page's progress (JSON)."""
    action = _own(pages, admin, action_id)
    return secured(
        JSONResponse(
            {
                "status": action.status,
                "finished": action.status in FINISHED,
                "message": action.message,
                "applied": action.applied_count,
                "skipped": action.skipped_count,
            }
        )
    )


@router.post("/actions/{action_id}/apply")
def apply(
    request: Request, pages: Pages, admin: Admin, form: CheckedForm, action_id: str
) -> Response:
    """Queue the plan's run, unless its report was replaced since it was reviewed."""
    action = _own(pages, admin, action_id)
    if action.status != PLANNED:  # posted twice: the run is queued already
        return secured(RedirectResponse(f"/admin/actions/{action_id}", status_code=303))
    header = pages.service.store.header(action.tool, action.scope)
    try:
        check_submittable(action, header)
    except PlanRefused as refused:
        report = load_report(pages, admin, action.tool, action.scope)
        return render(
            request, "review.html", admin, 409, report=report, action=action, refusal=str(refused)
        )
    return _launch(request, pages, admin, action)


@router.post("/actions/{action_id}/undo")
def undo(
    request: Request, pages: Pages, admin: Admin, form: CheckedForm, action_id: str
) -> Response:
    """Undo a done apply (once: asking again shows the undo that exists)."""
    applied = _own(pages, admin, action_id)
    if applied.kind != APPLY or applied.status != DONE or not applied.applied_count:
        raise PageError(409, "Nothing to undo", "Only an apply that changed something is undone.")
    action, _ = pages.actions.plan_undo(applied, admin.key.key_id)
    if action.status != PLANNED:
        return secured(RedirectResponse(f"/admin/actions/{action.action_id}", status_code=303))
    return _launch(request, pages, admin, action)


@router.get("/activity")
def activity_page(request: Request, pages: Pages, admin: Admin) -> Response:
    """Every action of the admin's tenant, newest first."""
    actions = pages.actions.recent(admin.key.tenant, limit=200)
    return render(request, "activity.html", admin, activity=actions)


def _launch(request: Request, pages: PagesState, admin: Admin, action: Action) -> Response:
    """Queue the action (once) and launch its run; back to a plan if Dagster is down."""
    from precompute_assets.orchestration.remediation import launch_action
    from precompute_assets.orchestration.webserver import DagsterWebserver

    log = pages.actions
    if log.submit(action.action_id):
        webserver = DagsterWebserver(pages.service.settings.dagster_url)
        try:
            run_id = launch_action(webserver, pages.tool(action.tool), action)
        except DagsterUnavailableError as error:
            log.withdraw(action.action_id, str(error))
            raise PageError(503, "Actions unavailable", f"{error}. Nothing was changed.") from None
        log.launched(action.action_id, run_id)
    return secured(RedirectResponse(f"/admin/actions/{action.action_id}", status_code=303))


def _own(pages: PagesState, admin: Admin, action_id: str) -> Action:
    action = pages.actions.get(action_id) if action_id.isalnum() else None
    if action is None or not admin.key.sees(action.tenant):
        raise PageError(404, "Not found", "There is no such action of yours.")
    return action


def _action_view(pages: PagesState, action: Action) -> dict[str, Any]:
    names = action.names
    batches = pages.actions.batches(action.action_id)
    applied = [e for batch in batches if batch.done for e in batch.applied or ()]
    skipped = [e for batch in batches if batch.done for e in batch.skipped or ()]
    undo = pages.actions.undo_of(action.action_id) if action.kind == APPLY else None
    tool = pages.service.tools.get(action.tool)
    return {
        "action": action,
        "label": tool.remediation.action if tool and tool.remediation else action.kind,
        "applied": [(entity, names.get(entity, entity)) for entity in applied],
        "skipped": [(entity, names.get(entity, entity)) for entity in skipped],
        "undo": undo,
        "can_undo": action.kind == APPLY
        and action.status == DONE
        and bool(action.applied_count)
        and (undo is None or undo.status == PLANNED),
        "finished": action.status in FINISHED,
    }


def _seen(pages: PagesState, tool: str, scope: str, watermark: str) -> None:
    """Record the live watermark a review found, so the pages show the report stale."""
    known = pages.service.store.known(tool, scope)
    if known is not None:
        ScopeIndex(pages.service.store.writer).record(
            [KnownScope(tool, scope, known.tenant, known.utilisation, watermark, time.time())]
        )
