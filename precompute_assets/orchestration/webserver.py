"""The Dagster webserver's GraphQL API, as the UI uses it: runs, their events, launches.

On-demand refreshes go through it rather than through Dagster's Python internals: the webserver
submits a launch to the instance's run coordinator (the queue), as the asset page's
*Materialize* does, and any process that reaches it over HTTP (a service worker on another
machine) can ask. Plain HTTP and JSON, no client library.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from precompute_assets.core.errors import DagsterUnavailableError

# Dagster's run statuses that are waiting in the queue or running.
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
TERMINAL = ("SUCCESS", "FAILURE", "CANCELED")
START_BOTH = (
    "start the webserver and the daemon on the project's instance: `make ui` (dagster dev), or "
    "`dagster-webserver -w workspace.yaml` and `dagster-daemon run -w workspace.yaml`"
)

RUN_FIELDS = "runId status jobName tags { key value } assetSelection { path }"
RUNS_QUERY = f"""
query ($filter: RunsFilter) {{ runsOrError(filter: $filter) {{
  __typename
  ... on Runs {{ results {{ {RUN_FIELDS} }} }}
  ... on PythonError {{ message }}
}} }}
"""
RUN_QUERY = f"""
query ($runId: ID!) {{ runOrError(runId: $runId) {{
  __typename
  ... on Run {{ {RUN_FIELDS} }}
  ... on PythonError {{ message }}
}} }}
"""
DAEMONS_QUERY = """
query { instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""
ASSET_QUERY = """
query ($assetKey: AssetKeyInput!) { assetNodeOrError(assetKey: $assetKey) {
  __typename
  ... on AssetNode { repository { name location { name } } }
  ... on Error { message }
} }
"""
PARTITION_KEYS_QUERY = """
query ($assetKey: AssetKeyInput!) { assetNodeOrError(assetKey: $assetKey) {
  __typename
  ... on AssetNode { partitionKeysByDimension { partitionKeys } }
  ... on Error { message }
} }
"""
ADD_PARTITION = """
mutation ($repositorySelector: RepositorySelector!, $partitionsDefName: String!,
          $partitionKey: String!) {
  addDynamicPartition(repositorySelector: $repositorySelector,
                      partitionsDefName: $partitionsDefName, partitionKey: $partitionKey) {
    __typename
    ... on Error { message }
  }
}
"""
LAUNCH = """
mutation ($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""
EVENTS_QUERY = """
query ($runId: ID!, $afterCursor: String) { logsForRun(runId: $runId, afterCursor: $afterCursor) {
  __typename
  ... on EventConnection { cursor events { __typename ... on MessageEvent { message stepKey } } }
  ... on Error { message }
} }
"""


@dataclass(frozen=True)
class RunInfo:
    """A run as the Runs page shows it."""

    run_id: str
    status: str
    job_name: str
    tags: dict[str, str]
    asset_keys: tuple[str, ...]  # of its asset selection, as "a/b"

    @classmethod
    def from_graphql(cls, run: dict[str, Any]) -> RunInfo:
        return cls(
            run["runId"],
            run["status"],
            run["jobName"],
            {tag["key"]: tag["value"] for tag in run["tags"]},
            tuple("/".join(key["path"]) for key in run.get("assetSelection") or ()),
        )

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT


@dataclass(frozen=True)
class RunEvent:
    kind: str  # the GraphQL type: ExecutionStepSuccessEvent, RunFailureEvent, ...
    message: str
    step_key: str | None


class DagsterWebserver:
    """A Dagster webserver at ``url`` (``http://host:port``)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, document: str, **variables: Any) -> dict[str, Any]:
        """The ``data`` of one GraphQL request; DagsterUnavailableError if nothing answers."""
        body = json.dumps({"query": document, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DagsterUnavailableError(
                f"no Dagster webserver answers at {self.url} ({reason}): {START_BOTH}"
            ) from None
        if answer.get("errors"):
            raise DagsterUnavailableError(
                f"the Dagster webserver at {self.url} refused a request: "
                f"{answer['errors'][0].get('message')}"
            )
        return answer["data"]

    def runs(self, statuses: tuple[str, ...], tags: dict[str, str]) -> list[RunInfo]:
        """Runs in one of ``statuses`` carrying every one of ``tags``."""
        runs_filter = {
            "statuses": list(statuses),
            "tags": [{"key": key, "value": value} for key, value in tags.items()],
        }
        found = self.query(RUNS_QUERY, filter=runs_filter)["runsOrError"]
        _expect(found, "Runs", "list runs")
        return [RunInfo.from_graphql(run) for run in found["results"]]

    def run(self, run_id: str) -> RunInfo | None:
        found = self.query(RUN_QUERY, runId=run_id)["runOrError"]
        if found["__typename"] == "RunNotFoundError":
            return None
        _expect(found, "Run", f"read run {run_id}")
        return RunInfo.from_graphql(found)

    def check_daemon(self) -> None:
        """DagsterUnavailableError unless the daemon that drains the run queue is running."""
        statuses = self.query(DAEMONS_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        queue = [s for s in statuses if s["daemonType"] == "QUEUED_RUN_COORDINATOR"]
        if not queue or not queue[0]["healthy"]:
            raise DagsterUnavailableError(
                f"the Dagster daemon of the instance behind {self.url} is not running, so queued "
                "runs would never start: start `dagster-daemon run -w workspace.yaml` "
                "(`make ui` starts it with the webserver)"
            )

    def repository_of(self, asset_path: list[str]) -> dict[str, str]:
        """The repository selector (location and repository names) that defines the asset."""
        found = self.query(ASSET_QUERY, assetKey={"path": asset_path})["assetNodeOrError"]
        _expect(found, "AssetNode", f"find asset {'/'.join(asset_path)}")
        repository = found["repository"]
        return {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
        }

    def partition_keys(self, asset_path: list[str]) -> list[str]:
        """The asset's partitions, in their order (which a range of partitions follows)."""
        node = self.query(PARTITION_KEYS_QUERY, assetKey={"path": asset_path})["assetNodeOrError"]
        _expect(node, "AssetNode", f"read the partitions of {'/'.join(asset_path)}")
        [dimension] = node["partitionKeysByDimension"]
        return list(dimension["partitionKeys"])

    def add_partition(self, repository: dict[str, str], partitions: str, key: str) -> None:
        """Register ``key`` in the dynamic partitions ``partitions`` unless it is there."""
        added = self.query(
            ADD_PARTITION,
            repositorySelector=repository,
            partitionsDefName=partitions,
            partitionKey=key,
        )["addDynamicPartition"]
        if added["__typename"] != "DuplicateDynamicPartitionError":
            _expect(added, "AddDynamicPartitionSuccess", f"add partition {key!r}")

    def launch(self, execution_params: dict[str, Any]) -> str:
        """Submit a run to the instance's run coordinator; its run id."""
        launched = self.query(LAUNCH, executionParams=execution_params)["launchPipelineExecution"]
        if launched["__typename"] == "RunConfigValidationInvalid":
            messages = "; ".join(error["message"] for error in launched["errors"])
            raise DagsterUnavailableError(f"the run's config was refused: {messages}")
        _expect(launched, "LaunchRunSuccess", "launch a run")
        return launched["run"]["runId"]

    def events(self, run_id: str, cursor: str | None) -> tuple[list[RunEvent], str | None]:
        """The run's events after ``cursor``, and the cursor to ask from next."""
        found = self.query(EVENTS_QUERY, runId=run_id, afterCursor=cursor)["logsForRun"]
        _expect(found, "EventConnection", f"read the events of run {run_id}")
        events = [
            RunEvent(event["__typename"], event.get("message", ""), event.get("stepKey"))
            for event in found["events"]
        ]
        return events, found["cursor"]


def _expect(result: dict[str, Any], typename: str, doing: str) -> None:
    if result["__typename"] != typename:
        message = result.get("message") or result["__typename"]
        raise DagsterUnavailableError(f"the Dagster webserver could not {doing}: {message}")
