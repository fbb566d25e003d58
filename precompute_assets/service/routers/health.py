"""``/healthz`` (the process answers), ``/readyz`` (the store answers), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response

from precompute_assets.service.dependencies import State
from precompute_assets.service.metrics import CONTENT_TYPE, exposition
from precompute_assets.service.models import Health
from precompute_assets.service.problems import documented

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The service process is up."""
    return Health(status="ok")


@router.get("/readyz", responses=documented(503))
def readyz(state: State) -> Health:
    """The store answers at this release's schema: reads can be served."""
    state.store.ready()
    return Health(status="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
)
def metrics() -> Response:
    """Prometheus metrics of every service process."""
    return Response(exposition(), media_type=CONTENT_TYPE)
