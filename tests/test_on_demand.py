"""On-demand refreshes through the run queue, with the real webserver, daemon and service.

One ``dagster-webserver`` and one ``dagster-daemon`` (the project's ``dagster.yaml``: queued runs)
and ``precompute serve`` with two worker processes, on one instance and store. 50 requests at
once, from threads against both workers, and ``precompute refresh`` processes at the same time,
start exactly one run: Dagster's asset job, at on-demand priority; the daemon runs it, the report
lands and its ETag changes. ``precompute refresh`` waits and prints the run's progress;
``--no-wait`` prints the run id. A run's status is the caller's tenant's only.

Wall time: about 70 s on 2 CPUs (servers ~15 s, three runs).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster_graphql import DagsterGraphQLClient
from live_dagster import LiveDagster, free_port, wait_for_webserver, wait_until
from live_service import PROJECT, TOOL, Service, compute_reports, running_service
from processes import Server, daemon_command, server_group, webserver_command
from test_service import SCALE, project_env

from precompute_assets.core.api_keys import ApiKeys
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.scope_index import ScopeIndex
from precompute_assets.demo.source import generate_source
from precompute_assets.orchestration.webserver import DagsterWebserver

pytestmark = [pytest.mark.slow, pytest.mark.servers]

REQUESTS = 50


@dataclass
class Deployment(LiveDagster):
    processes: list[Server]
    service: Service
    env: dict[str, str]
    home: Path
    keys: dict[str, str]
    scopes: dict[str, list[str]]

    def servers(self) -> list[Server]:
        return [*self.processes, self.service.server]

    def precompute(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "precompute_assets.cli", *args],
            env=self.env, cwd=self.home, capture_output=True, text=True, timeout=240,
        )  # fmt: skip

    def report_runs(self, scope: str) -> list:
        runs = DagsterWebserver(self.env["PRECOMPUTE_DAGSTER_URL"]).runs(
            ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUCCESS", "FAILURE", "CANCELED"),
            {"dagster/partition": scope},
        )
        return [run for run in runs if run.tags.get("precompute/reason") == "on demand"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("on_demand")
    (home / "dagster.yaml").write_bytes((PROJECT / "dagster.yaml").read_bytes())
    source_url, store_url = sqlite_url(home / "source.db"), sqlite_url(home / "reports.db")
    generate_source(source_url, SCALE)
    port = free_port()
    env = project_env(home, source_url, store_url, f"http://127.0.0.1:{port}")
    with DagsterInstance.from_config(str(home)) as instance:
        compute_reports(instance, source_url, store_url)
    keys = ApiKeys(create_engine_for(store_url))
    made = {"t1": keys.create("ui", "t1")[1], "t2": keys.create("ui", "t2")[1]}
    scopes: dict[str, list[str]] = {}
    for known in ScopeIndex(keys.engine).scopes(TOOL):
        scopes.setdefault(known.tenant, []).append(known.scope)
    with ExitStack() as stack:
        webserver = stack.enter_context(
            server_group("webserver", webserver_command(port), env, home, PROJECT)
        )
        daemon = stack.enter_context(server_group("daemon", daemon_command(), env, home, PROJECT))
        service = stack.enter_context(running_service(env, home, workers=2))
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        deployed = Deployment(client, port, [webserver, daemon], service, env, home, made, scopes)
        wait_for_webserver(deployed)

        def daemon_healthy() -> bool:
            try:
                DagsterWebserver(env["PRECOMPUTE_DAGSTER_URL"]).check_daemon()
            except Exception:
                return False
            return True

        wait_until(daemon_healthy, 90, deployed.logs)
        yield deployed


def test_fifty_requests_at_once_start_one_run_and_the_report_lands(deployment: Deployment):
    scope = deployment.scopes["t1"][0]
    path = f"/v1/tools/{TOOL}/scopes/{scope}"
    key = deployment.keys["t1"]
    before = deployment.service.get(f"{path}/report", key)
    barrier = threading.Barrier(REQUESTS)
    answers: list = [None] * REQUESTS

    def ask(index: int) -> None:
        barrier.wait(timeout=30)
        answers[index] = deployment.service.request("POST", f"{path}/refresh", key)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(REQUESTS)]
    for thread in threads:
        thread.start()
    # And the command line at the same moment, as an operator would.
    cli = subprocess.Popen(
        [sys.executable, "-m", "precompute_assets.cli", "refresh", TOOL, scope],
        env=deployment.env, cwd=deployment.home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    for thread in threads:
        thread.join(timeout=120)
    assert all(answer is not None and answer.status_code == 202 for answer in answers), [
        a and a.text for a in answers
    ]
    run_ids = {answer.json()["run_id"] for answer in answers}
    assert len(run_ids) == 1, run_ids
    [run_id] = run_ids
    assert sum(not answer.json()["coalesced"] for answer in answers) <= 1
    assert all(answer.headers["location"] == f"/v1/refreshes/{run_id}" for answer in answers)

    output = cli.communicate(timeout=240)[0]
    assert cli.returncode == 0, output
    assert f"run {run_id}" in output and f"refreshed {TOOL}/{scope}" in output
    # Its progress: the run's statuses and each step as it ends.
    assert f"run {run_id} success" in output and f"{TOOL}_initialise: done" in output

    [run] = deployment.report_runs(scope)
    assert (run.run_id, run.status, run.job_name) == (run_id, "SUCCESS", "__ASSET_JOB")
    assert run.tags["dagster/priority"] == "1000" and f"{TOOL}_report" in run.asset_keys
    status = deployment.service.get(f"/v1/refreshes/{run_id}", key).json()
    assert (status["status"], status["finished"], status["scope"]) == ("SUCCESS", True, scope)
    assert (
        deployment.service.get(f"/v1/refreshes/{run_id}", deployment.keys["t2"]).status_code == 404
    )

    after = deployment.service.get(
        f"{path}/report", key, **{"If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert after.json()["header"]["run_id"] == run_id
    metrics = deployment.service.get("/metrics").text
    assert f'precompute_refreshes_total{{outcome="coalesced",tool="{TOOL}"}}' in metrics


def test_refresh_without_waiting_prints_the_run_id_and_the_service_coalesces_onto_it(
    deployment: Deployment,
):
    scope = deployment.scopes["t2"][0]
    started = deployment.precompute("refresh", TOOL, scope, "--no-wait")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[1]
    joined = deployment.service.request(
        "POST", f"/v1/tools/{TOOL}/scopes/{scope}/refresh", deployment.keys["t2"]
    ).json()
    if joined["status"] in ("QUEUED", "STARTING", "STARTED", "NOT_STARTED"):
        assert (joined["run_id"], joined["coalesced"]) == (run_id, True)
    wait_until(
        lambda: deployment.client.get_run_status(run_id).value == "SUCCESS", 120, deployment.logs
    )


def test_refresh_names_what_to_start_when_dagster_is_not_running(deployment: Deployment, tmp_path):
    env = {**deployment.env, "PRECOMPUTE_DAGSTER_URL": f"http://127.0.0.1:{free_port()}"}
    scope = deployment.scopes["t1"][0]
    done = subprocess.run(
        [sys.executable, "-m", "precompute_assets.cli", "refresh", TOOL, scope],
        env=env, cwd=deployment.home, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("precompute: error: no Dagster webserver answers at http://127.0.0.1:")
    assert "dagster-daemon run" in line
