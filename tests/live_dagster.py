"""Talking to a live webserver as the UI does: through its GraphQL API, with dagster-graphql.

Shared by the tests that start real servers (``test_ui_graphql.py``, ``test_stack.py``).
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from dagster_graphql import DagsterGraphQLClient
from processes import Server

STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 240
RUN_TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

LOCATIONS_QUERY = """
query { workspaceOrError {
  __typename
  ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
  } }
  ... on PythonError { message }
} }
"""
RUN_ERRORS_QUERY = """
query ($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events {
      ... on MessageEvent { level stepKey message }
      ... on ErrorEvent { error { message causes { message } } }
    } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    condition: Callable[[], Any], timeout_s: float, describe: Callable[[], str], every_s=1.0
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``describe()`` if never."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {timeout_s}s: {describe()}")
        time.sleep(every_s)


@dataclass
class LiveDagster:
    """A webserver's GraphQL client, and the servers whose logs explain a failure."""

    client: DagsterGraphQLClient
    port: int

    def servers(self) -> list[Server]:
        return []

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        return self.client._execute(query, variables or None)

    def logs(self) -> str:
        return "\n".join(server.tail() for server in self.servers())

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n{self.logs()}")

    def check_running(self) -> None:
        for server in self.servers():
            if server.exit_code() is not None:
                self.fail(f"{server.name} exited with {server.exit_code()}")


def wait_for_webserver(live: LiveDagster) -> None:
    """The webserver answers, and it loaded the project's code location without an error."""

    def answers() -> bool:
        live.check_running()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{live.port}/server_info", timeout=2):
                return True
        except OSError:
            return False

    wait_until(answers, STARTUP_TIMEOUT_S, live.logs, every_s=0.5)

    def loaded() -> list[dict[str, Any]] | None:
        workspace = live.query(LOCATIONS_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            live.fail(f"the workspace did not load: {workspace}")
        entries = workspace["locationEntries"]
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            return entries
        return None

    for entry in wait_until(loaded, STARTUP_TIMEOUT_S, live.logs, every_s=0.5):
        error = entry["locationOrLoadError"]
        if error["__typename"] == "PythonError":
            live.fail(f"code location {entry['name']} failed to load: {error['message']}")


def wait_for_run(live: LiveDagster, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Wait until the run ends; fail with its errors unless it succeeded."""

    def terminal() -> str | None:
        status = live.client.get_run_status(run_id).value
        return status if status in RUN_TERMINAL else None

    status = wait_until(
        terminal,
        timeout_s,
        lambda: f"run {run_id} is {live.client.get_run_status(run_id).value}\n{live.logs()}",
    )
    if status != "SUCCESS":
        live.fail(f"run {run_id} ended {status}:\n{run_errors(live, run_id)}")
    return status


def run_errors(live: LiveDagster, run_id: str) -> str:
    """The run's error-level events with their errors' causes, as the run page shows them."""
    events = live.query(RUN_ERRORS_QUERY, runId=run_id)["logsForRun"].get("events", [])
    lines = []
    for event in events:
        if event.get("level") != "ERROR":
            continue
        lines.append(f"[{event.get('stepKey') or 'run'}] {event['message']}")
        error = event.get("error") or {}
        for cause in (error, *error.get("causes", [])):
            if cause.get("message"):
                lines.append(f"    {cause['message'].strip()}")
    return "\n".join(lines)
