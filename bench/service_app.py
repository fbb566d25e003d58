"""The report service as the benchmark serves it: the real app, plus its ceiling.

``/ceiling/{tool}/{scope}`` answers the bytes the report route sends for that report (encoded
once, at the first request) with no key, no database and no staleness: what this machine's
uvicorn and FastAPI stack can serve at best, measured in the same server as the real route.

    python bench/service_app.py PORT WORKERS     # serves until stopped
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi import FastAPI, Response

from precompute_assets.cli.serving import run_service
from precompute_assets.core.settings import ServiceSettings
from precompute_assets.service.app import from_env
from precompute_assets.service.encoding import staleness_tail
from precompute_assets.service.reports import Generation, View


def build() -> FastAPI:
    app = from_env()
    store = app.state.service.store
    encoded: dict[tuple[str, str], bytes] = {}

    @app.get("/ceiling/{tool}/{scope}", include_in_schema=False)
    async def ceiling(tool: str, scope: str) -> Response:
        body = encoded.get((tool, scope))
        if body is None:
            header, records = store.report(tool, scope)
            report = Generation.from_records(header, records, header.tenant)
            start, _ = report.encoded(View(False, "entity_id", 1_000), "json", lambda _: "")
            body = encoded[(tool, scope)] = start.body(staleness_tail({"ceiling": True}))
        return Response(body, media_type="application/json")

    # First in the routing table: the ceiling pays for matching no other route.
    app.router.routes.insert(0, app.router.routes.pop())
    return app


if __name__ == "__main__":
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    settings = ServiceSettings(host="127.0.0.1", port=port, workers=workers)
    run_service("service_app:build", settings, app_dir=str(Path(__file__).resolve().parent))
