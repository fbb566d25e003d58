"""The report service through a real uvicorn server (``precompute serve``) on a loopback port.

One server for the module, over a store whose reports were computed as the demo computes them
(2 tenants, 4 spaces), with four keys: tenant t1's, tenant t2's, an operator's, and a revoked one.
Its Dagster URL points at a closed port: reads are served while refreshes answer 503. Every
endpoint, the auth matrix, ETag and 304, CSV and gzip, pages while the report is recomputed,
the problem documents, the metrics, and schemathesis over the OpenAPI document.

Wall time: about 25 s on 2 CPUs (the reports ~5 s, the server ~2 s, schemathesis ~10 s).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from dagster import instance_for_test
from live_dagster import free_port
from live_service import PROJECT, TOOL, Service, compute_reports, running_service

from precompute_assets.core.api_keys import ApiKeys
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.scope_index import KnownScope, ScopeIndex
from precompute_assets.core.settings import ServiceSettings
from precompute_assets.demo.source import DemoScale, generate_source

pytestmark = [pytest.mark.slow, pytest.mark.servers]

SCALE = DemoScale(tenants=2, spaces=4, work_items=4_000, seed=3)


@dataclass
class Deployment:
    service: Service
    env: dict[str, str]
    home: Path
    source_url: str
    store_url: str
    instance: object
    scopes: dict[str, list[str]]  # by tenant
    keys: dict[str, str]  # t1, t2, operator, revoked

    def report(self, scope: str, key: str = "operator", query: str = "", **headers: str):
        path = f"/v1/tools/{TOOL}/scopes/{scope}/report{query}"
        return self.service.get(path, self.keys.get(key, key), **headers)

    def recompute(self, scope: str) -> None:
        """A new generation of the scope's report, as a run commits it."""
        compute_reports(self.instance, self.source_url, self.store_url)


def project_env(home: Path, source_url: str, store_url: str, dagster_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PRECOMPUTE_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "PRECOMPUTE_HOME": str(home / "precompute"),
        "PRECOMPUTE_SOURCE_URL": source_url,
        "PRECOMPUTE_STORE_URL": store_url,
        "PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PRECOMPUTE_DAGSTER_URL": dagster_url,
    }


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("service")
    source_url, store_url = sqlite_url(home / "source.db"), sqlite_url(home / "reports.db")
    generate_source(source_url, SCALE)
    keys = ApiKeys(create_engine_for(store_url))
    with instance_for_test() as instance:
        scopes = compute_reports(instance, source_url, store_url)
        known = ScopeIndex(keys.engine).scopes(TOOL)
        by_tenant: dict[str, list[str]] = {}
        for scope in known:
            by_tenant.setdefault(scope.tenant, []).append(scope.scope)
        assert sorted(by_tenant) == ["t1", "t2"] and sum(map(len, by_tenant.values())) == 4
        made = {
            "t1": keys.create("ui", "t1")[1],
            "t2": keys.create("ui", "t2")[1],
            "operator": keys.create("ops", None)[1],
        }
        revoked, made["revoked"] = keys.create("old", "t1")
        keys.revoke(revoked.key_id)
        env = project_env(home, source_url, store_url, f"http://127.0.0.1:{free_port()}")
        with running_service(env, home) as service:
            yield Deployment(service, env, home, source_url, store_url, instance, by_tenant, made)
    assert sorted(scopes) == sorted(s for found in by_tenant.values() for s in found)


def test_every_read_endpoint_answers_the_tenant_its_scopes(deployment: Deployment):
    t1 = deployment.keys["t1"]
    tools = deployment.service.get("/v1/tools", t1).json()["tools"]
    assert {t["name"]: t["limit"] for t in tools} == {
        "unused_fields": 700,
        "unused_work_types": 150,
    }

    listed = deployment.service.get(f"/v1/tools/{TOOL}/scopes", t1).json()
    assert sorted(s["scope"] for s in listed["scopes"]) == sorted(deployment.scopes["t1"])
    utilisations = [s["utilisation"] for s in listed["scopes"]]
    assert utilisations == sorted(utilisations, reverse=True), "refresh-priority order"
    assert all(s["generation"] == 1 and s["due"] is None for s in listed["scopes"])
    pages = _all_pages(deployment, f"/v1/tools/{TOOL}/scopes?limit=3", "scopes")
    assert sorted(s["scope"] for s in pages) == sorted(
        scope for found in deployment.scopes.values() for scope in found
    )

    scope = deployment.scopes["t1"][0]
    answer = deployment.report(scope, "t1")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    report = answer.json()
    assert (report["tool"], report["scope"], report["tenant"]) == (TOOL, scope, "t1")
    assert report["header"]["row_count"] == len(report["rows"]) > 0
    assert report["staleness"]["source_changed"] is False and report["next"] is None
    assert answer.headers["cache-control"] == "private, no-cache"

    assert deployment.service.get("/healthz").json() == {"status": "ok"}
    assert deployment.service.get("/readyz").json() == {"status": "ok"}


def _all_pages(deployment: Deployment, path: str, items: str, key: str = "operator") -> list:
    found, seen = [], 0
    while path:
        page = deployment.service.get(path, deployment.keys[key]).json()
        found += page[items]
        path, seen = page["next"], seen + 1
        assert seen < 100
    return found


def test_the_unused_filter_sorting_csv_and_gzip_give_the_same_report(deployment: Deployment):
    scope = deployment.scopes["t2"][0]
    full = deployment.report(scope, "t2").json()
    unused = deployment.report(scope, "t2", "?unused=true&sort=-usage_count").json()
    assert [r["entity_id"] for r in unused["rows"]] == [
        r["entity_id"] for r in full["rows"] if r["unused"]
    ]
    by_use = deployment.report(scope, "t2", "?sort=-usage_count").json()["rows"]
    assert [r["usage_count"] for r in by_use] == sorted(
        (r["usage_count"] for r in full["rows"]), reverse=True
    )

    as_csv = deployment.report(scope, "t2", Accept="text/csv")
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["entity_id"], r["unused"] == "true") for r in lines] == [
        (r["entity_id"], r["unused"]) for r in full["rows"]
    ]
    assert json.loads(lines[0]["detail"]) == full["rows"][0]["detail"]

    raw = _raw(deployment, scope, "t2", {"Accept-Encoding": "gzip"})
    assert raw.headers["Content-Encoding"] == "gzip"
    body = raw.read()
    assert len(body) < len(deployment.report(scope, "t2").content) / 3
    # As Python's gzip reader and as zlib (curl's, browsers') read it: the same report.
    for decoded in (gzip.decompress(body), zlib.decompress(body, 16 + zlib.MAX_WBITS)):
        report = json.loads(decoded)
        assert report["rows"] == full["rows"] and report["header"] == full["header"]


def _raw(deployment: Deployment, scope: str, key: str, headers: dict[str, str]):
    """The answer's bytes as sent (urllib does not decode gzip)."""
    request = urllib.request.Request(
        f"{deployment.service.url}/v1/tools/{TOOL}/scopes/{scope}/report",
        headers={**headers, "Authorization": f"Bearer {deployment.keys[key]}"},
    )
    return urllib.request.urlopen(request, timeout=30)


def test_the_etag_names_the_generation_and_a_recomputed_report_gets_a_new_one(
    deployment: Deployment,
):
    scope = deployment.scopes["t1"][-1]
    first = deployment.report(scope, "t1")
    etag = first.headers["etag"]
    again = deployment.report(scope, "t1", **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert deployment.report(scope, "t1", **{"If-None-Match": '"other"'}).status_code == 200
    csv_etag = deployment.report(scope, "t1", Accept="text/csv").headers["etag"]
    assert csv_etag != etag, "another representation, another tag"

    deployment.recompute(scope)
    replaced = deployment.report(scope, "t1", **{"If-None-Match": etag})
    assert replaced.status_code == 200 and replaced.headers["etag"] != etag
    assert replaced.json()["generation"] == first.json()["generation"] + 1


def test_pages_never_mix_two_generations(deployment: Deployment):
    scope = max(
        deployment.scopes["t2"],
        key=lambda s: deployment.report(s, "t2").json()["header"]["row_count"],
    )
    whole = deployment.report(scope, "t2").json()
    first = deployment.report(scope, "t2", "?limit=5&sort=-usage_count").json()
    second = deployment.service.get(first["next"], deployment.keys["t2"]).json()
    assert [r["entity_id"] for r in first["rows"] + second["rows"]] == [
        r["entity_id"]
        for r in sorted(whole["rows"], key=lambda r: (-r["usage_count"], r["entity_id"]))
    ][:10]

    deployment.recompute(scope)
    stale = deployment.service.get(second["next"], deployment.keys["t2"])
    problem = stale.json()
    assert stale.status_code == 409 and stale.headers["content-type"] == "application/problem+json"
    assert problem["generation"] == whole["generation"] + 1
    assert "start again from the first page" in problem["detail"]

    # From the first page again: every row once, all of the new generation.
    rows, path = [], problem["first"] + "&limit=7"
    while path:
        page = deployment.service.get(path, deployment.keys["t2"]).json()
        assert page["generation"] == problem["generation"]
        rows += page["rows"]
        path = page["next"]
    assert sorted(r["entity_id"] for r in rows) == sorted(r["entity_id"] for r in whole["rows"])


ENDPOINTS = [
    ("GET", "/v1/tools"),
    ("GET", f"/v1/tools/{TOOL}/scopes"),
    ("GET", f"/v1/tools/{TOOL}/scopes/{{scope}}/report"),
    ("POST", f"/v1/tools/{TOOL}/scopes/{{scope}}/refresh"),
    ("GET", "/v1/refreshes/00000000-0000-4000-8000-000000000000"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[p for _, p in ENDPOINTS])
def test_the_auth_matrix(deployment: Deployment, method: str, path: str):
    """Every endpoint x no key, a revoked key, another tenant's key, the operator's key."""
    theirs = path.format(scope=deployment.scopes["t2"][0])
    missing = path.format(scope="zz-s999")
    for key in (None, deployment.keys["revoked"], "pcr_00000000_not-a-key"):
        answer = deployment.service.request(method, theirs, key)
        assert answer.status_code == 401, (key, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["content-type"] == "application/problem+json"
    if "{scope}" in path:
        # Another tenant's scope and a scope that does not exist: the same 404, word for word.
        other = deployment.service.request(method, theirs, deployment.keys["t1"])
        absent = deployment.service.request(method, missing, deployment.keys["t1"])
        assert other.status_code == absent.status_code == 404
        strip = lambda answer: {k: v for k, v in answer.json().items() if k != "instance"}  # noqa: E731
        assert strip(other) == {
            **strip(absent),
            "detail": strip(absent)["detail"].replace("zz-s999", deployment.scopes["t2"][0]),
        }
    operator = deployment.service.request(method, theirs, deployment.keys["operator"])
    owner = deployment.service.request(method, theirs, deployment.keys["t2"])
    # Reads are served; refreshes and run statuses need Dagster, which is down: 503, not 401/404.
    expected = 503 if "refresh" in path else 200
    assert operator.status_code == owner.status_code == expected, operator.text


def test_a_revoked_key_is_refused_once_the_key_cache_time_has_passed(deployment: Deployment):
    keys = ApiKeys(create_engine_for(deployment.store_url))
    made, key = keys.create("soon revoked", "t1")
    scope = deployment.scopes["t1"][0]
    assert deployment.report(scope, key).status_code == 200  # now in the service's key cache
    keys.revoke(made.key_id)
    time.sleep(ServiceSettings().key_cache_s + 0.2)
    for path in (f"/v1/tools/{TOOL}/scopes/{scope}/report", "/v1/tools"):
        answer = deployment.service.get(path, key)
        assert answer.status_code == 401, answer.text


def test_errors_are_problem_documents_that_say_what_to_do(deployment: Deployment):
    t1 = deployment.keys["t1"]
    cases = {
        "/v1/tools/nope/scopes": (404, "no tool 'nope'"),
        f"/v1/tools/{TOOL}/scopes/zz-s999/report": (404, "no scope 'zz-s999'"),
        f"/v1/tools/{TOOL}/scopes?limit=0": (422, "limit"),
        f"/v1/tools/{TOOL}/scopes/{deployment.scopes['t1'][0]}/report?sort=name": (422, "sort"),
        f"/v1/tools/{TOOL}/scopes/{deployment.scopes['t1'][0]}/report?cursor=xyz": (
            422,
            "not a cursor",
        ),
    }
    for path, (status, words) in cases.items():
        answer = deployment.service.get(path, t1)
        problem = answer.json()
        assert (answer.status_code, problem["status"]) == (status, status), path
        assert words in problem["detail"] and problem["type"].startswith("https://"), problem
    html = deployment.report(deployment.scopes["t1"][0], "t1", Accept="text/html")
    assert html.status_code == 406

    # A scope the sensors have seen, with no report yet: 404 with the link that computes it.
    ScopeIndex(create_engine_for(deployment.store_url)).record(
        [KnownScope(TOOL, "t1-new", "t1", 0.1, "1", time.time())]
    )
    answer = deployment.report("t1-new", "t1")
    assert answer.status_code == 404
    assert answer.json()["refresh"] == f"/v1/tools/{TOOL}/scopes/t1-new/refresh"

    refresh = deployment.service.request("POST", answer.json()["refresh"], t1)
    assert refresh.status_code == 503 and refresh.headers["retry-after"] == "5"
    assert "no Dagster webserver answers" in refresh.json()["detail"]
    assert "dagster-daemon run" in refresh.json()["detail"]


def test_metrics_count_requests_reports_by_staleness_and_keys_stay_out_of_logs(
    deployment: Deployment,
):
    deployment.report(deployment.scopes["t1"][0], "t1")
    text = deployment.service.get("/metrics").text
    assert (
        'precompute_http_requests_total{method="GET",route="/v1/tools/{tool}/scopes/{scope}/report",status="200"}'
        in text
    )
    assert 'precompute_reports_served_total{staleness="fresh",tool="unused_fields"}' in text
    assert "precompute_http_request_duration_seconds_bucket" in text
    log = deployment.service.server.log.read_text()
    assert all(key not in log for key in deployment.keys.values())


def test_an_unreachable_store_answers_503_with_retry_after(tmp_path: Path, deployment: Deployment):
    env = {
        **deployment.env,
        "PRECOMPUTE_STORE_URL": "postgresql+psycopg2://reader:pw-7@127.0.0.1:1/reports",
    }
    with running_service(env, tmp_path) as service:
        assert service.get("/healthz").status_code == 200
        for answer in (service.get("/readyz"), service.get("/v1/tools", deployment.keys["t1"])):
            assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
            assert "cannot reach database" in answer.json()["detail"]
            assert "pw-7" not in answer.text


def test_the_read_path_imports_no_dagster(deployment: Deployment):
    check = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from precompute_assets.service.app import from_env\n"
        "client = TestClient(from_env())\n"
        f"answer = client.get('/v1/tools/{TOOL}/scopes/{deployment.scopes['t1'][0]}/report',"
        f" headers={{'Authorization': 'Bearer {deployment.keys['t1']}'}})\n"
        "assert answer.status_code == 200, answer.text\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'"
        " or m.startswith('precompute_assets.orchestration')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        env=deployment.env,
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_answer_matches_the_openapi_document(deployment: Deployment):
    """schemathesis over every read operation: no 5xx, and every answer's status, content type,
    headers and body as documented (refreshes need Dagster: test_on_demand.py)."""
    schema = schemathesis.openapi.from_url(f"{deployment.service.url}/openapi.json")
    headers = {"Authorization": f"Bearer {deployment.keys['operator']}"}
    operations = [found.ok() for found in schema.get_all_operations()]
    checked = [op for op in operations if op.method.upper() == "GET" and "refreshes" not in op.path]
    assert {op.path for op in checked} >= {"/v1/tools/{tool}/scopes/{scope}/report", "/metrics"}
    for operation in checked:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            database=None,
        )
        def answers_as_documented(case) -> None:
            case.call_and_validate(headers=headers)

        answers_as_documented()
