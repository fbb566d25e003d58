"""``GET /v1/tools/{tool}/scopes``: the caller's scopes, in refresh-priority order, by page.

From the store alone: each scope as the sensors last saw it (utilisation, watermark) and its
stored report, ordered and judged by the refresh policy (``core/refresh.py``).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from precompute_assets.core.refresh import ScopeState, due_reason, is_high, priority_order
from precompute_assets.core.window import window_start
from precompute_assets.service.dependencies import Caller, ServiceState, State, tool_named
from precompute_assets.service.models import ScopeItem, ScopePage
from precompute_assets.service.problems import Problem, documented
from precompute_assets.service.reports import iso
from precompute_assets.service.urls import report_path, scopes_path, with_query

router = APIRouter(prefix="/v1", tags=["scopes"])


@router.get("/tools/{tool}/scopes", responses=documented(401, 404, 503))
def list_scopes(
    state: State,
    caller: Caller,
    tool: Annotated[str, Path(description="a tool's name")],
    limit: Annotated[int, Query(ge=1, le=1_000, description="scopes per page")] = 100,
    cursor: Annotated[str | None, Query(description="from a page's `next`")] = None,
) -> ScopePage:
    """The scopes of the caller's tenant (every tenant's, for an operator's key), most pressing
    first: high utilisation first, then utilisation, then the oldest report."""
    found = tool_named(state, tool)
    now = time.time()
    since = window_start(found, now)
    known = state.store.scopes(found.name, caller.tenant)
    states = [
        ScopeState(
            scope.scope,
            scope.utilisation or 0.0,
            scope.watermark or (header.watermark if header else ""),
            header,
            since,
            scope.tenant,
        )
        for scope, header in known
    ]
    ordered = priority_order(states, state.refresh)
    keys = [_key(s, state) for s in ordered]
    start = 0 if cursor is None else bisect.bisect_right(keys, _decoded(cursor))
    page = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return ScopePage(
        tool=found.name,
        scopes=[_item(found.name, s, state, now) for s in page],
        next=_next(found.name, limit, keys[start + limit - 1]) if more else None,
    )


def _next(tool: str, limit: int, last: tuple[Any, ...]) -> str:
    return with_query(scopes_path(tool), limit=limit, cursor=_encoded(last))


def _item(tool: str, scope: ScopeState, state: ServiceState, now: float) -> ScopeItem:
    header = scope.header
    reason = due_reason(scope, state.refresh, now)
    return ScopeItem(
        scope=scope.scope,
        tenant=scope.tenant,
        utilisation=round(scope.utilisation, 4),
        high=is_high(scope, state.refresh),
        generation=None if header is None else header.generation,
        computed_at=None if header is None else iso(header.computed_at),
        age_s=None if header is None else round(scope.age_s(now), 1),
        source_changed=scope.source_changed,
        window_moved=scope.window_moved,
        due=None if reason is None else reason.value,
        report=report_path(tool, scope.scope),
    )


def _key(scope: ScopeState, state: ServiceState) -> tuple[Any, ...]:
    """The scope's place in priority order, as JSON values (no infinity)."""
    computed = -1.0 if scope.header is None else scope.header.computed_at
    return (0 if is_high(scope, state.refresh) else 1, -scope.utilisation, computed, scope.scope)


def _encoded(key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decoded(cursor: str) -> tuple[Any, ...]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        high, utilisation, computed, scope = raw
        if not (
            high in (0, 1)
            and all(
                isinstance(v, int | float) and math.isfinite(v) for v in (utilisation, computed)
            )
            and isinstance(scope, str)
        ):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise Problem(
            422, "invalid-cursor", "Invalid cursor", "not a cursor of this API: start without one"
        ) from None
    return (high, utilisation, computed, scope)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
