"""``GET /v1/tools``: the report tools this service serves."""

from __future__ import annotations

from fastapi import APIRouter

from precompute_assets.service.dependencies import Caller, State
from precompute_assets.service.models import Tool, ToolList
from precompute_assets.service.problems import documented

router = APIRouter(prefix="/v1", tags=["tools"])


@router.get("/tools", responses=documented(401, 503))
async def list_tools(state: State, caller: Caller) -> ToolList:
    """Every tool: its name, the entity type of its rows, what it reports, its limit."""
    return ToolList(
        tools=[
            Tool(
                name=tool.name,
                entity_type=tool.entity_type,
                description=tool.description or (type(tool).__doc__ or "").strip().split("\n")[0],
                limit=tool.catalogue.limit,
            )
            for tool in state.tools.values()
        ]
    )
