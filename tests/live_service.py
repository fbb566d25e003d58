"""The report service for real: ``precompute serve`` in a process group of its own, on a free
loopback port, and what tests need to talk to it and to its store.

Shared by the tests that start the service (``test_service.py``, ``test_on_demand.py``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance
from live_dagster import free_port
from processes import Server, server_group

from precompute_assets.core.db import connect, create_engine_for
from precompute_assets.core.registry import load_tools
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource
from precompute_assets.orchestration.runs import materialise_scope, register_scopes

PROJECT = Path(__file__).resolve().parents[1]
TOOL = "unused_fields"
STARTUP_TIMEOUT_S = 60


@dataclass
class Service:
    """A running ``precompute serve`` and a client for it."""

    server: Server
    url: str

    def request(
        self, method: str, path: str, key: str | None = None, **headers: str
    ) -> httpx.Response:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.request(method, self.url + path, headers=headers, timeout=60)

    def get(self, path: str, key: str | None = None, **headers: str) -> httpx.Response:
        return self.request("GET", path, key, **headers)


@contextmanager
def running_service(env: Mapping[str, str], logs: Path, workers: int = 1) -> Iterator[Service]:
    port = free_port()
    args = [
        sys.executable, "-m", "precompute_assets.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    with server_group(f"service-{port}", args, env, logs, PROJECT) as server:
        service = Service(server, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.exit_code() is not None:
                pytest.fail(f"the service exited with {server.exit_code()}\n{server.tail()}")
            try:
                if service.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the service did not answer in {STARTUP_TIMEOUT_S}s\n{server.tail()}")
            time.sleep(0.2)
        yield service


def compute_reports(
    instance: DagsterInstance, source_url: str, store_url: str, tool: str = TOOL
) -> list[str]:
    """Every scope's report of ``tool``, computed in this process as the demo does; the scopes."""
    tools = {tool: load_tools(autoload=False)[tool]}
    precompute = PrecomputeResource(source_url=source_url, store_url=store_url, batch_size=1_000)
    defs = build_definitions(tools, precompute)
    with connect(create_engine_for(source_url, must_exist=True)) as source:
        scopes = sorted(tools[tool].catalogue.scopes(source))
    register_scopes(instance, tools[tool], scopes)
    for scope in scopes:
        assert materialise_scope(defs, tools[tool], scope, instance).success
    return scopes
