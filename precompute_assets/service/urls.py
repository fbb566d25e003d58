"""The API's paths, in one place: routes and the links in answers agree."""

from __future__ import annotations

from urllib.parse import quote, urlencode


def report_path(tool: str, scope: str) -> str:
    return f"/v1/tools/{quote(tool, safe='')}/scopes/{quote(scope, safe='')}/report"


def refresh_path(tool: str, scope: str) -> str:
    return f"/v1/tools/{quote(tool, safe='')}/scopes/{quote(scope, safe='')}/refresh"


def refresh_status_path(run_id: str) -> str:
    return f"/v1/refreshes/{quote(run_id, safe='')}"


def scopes_path(tool: str) -> str:
    return f"/v1/tools/{quote(tool, safe='')}/scopes"


def with_query(path: str, **params: object) -> str:
    return f"{path}?{urlencode({k: v for k, v in params.items() if v is not None})}"
