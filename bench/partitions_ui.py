"""How the report asset's Partitions tab scales with the number of scopes, through a real
``dagster-webserver``.

    python bench/partitions_ui.py                         # 1,000, 10,000 and 100,000 partitions
    python bench/partitions_ui.py --url postgresql+psycopg2://postgres@127.0.0.1:5432/postgres

One Dagster instance and one webserver on the project's workspace. The instance is a fresh
DAGSTER_HOME with the project's ``dagster.yaml`` (SQLite storage); with ``--url``, it is
``deploy/dagster.yaml`` (PostgreSQL storage) in a fresh database on that server, named after the
URL's (``bench_partitions_ui`` for ``.../bench``). Scopes are registered as partitions of
``unused_fields_report`` size after size with ``add_dynamic_partitions``, as the discovery sensor
registers them, and the first ``--materialised`` of them carry a materialisation, reported
runless (the event a run or the UI's *Report materialization* stores). At each size, after one
warm-up, each query is timed ``--repeats`` times from sending it to having read the whole
response:

- ``partition_health``: what the asset's Partitions tab sends (``PartitionHealthQuery``: every
  partition key, and the materialised, materialising and failed ones), read from the installed
  webserver's UI bundle, so it is the query this version's UI sends;
- ``partition_stats``: the partition counts the asset's page and the asset graph show;
- ``one_partition``: the latest materialisation of one partition, as the tab shows the selected
  one.

It prints one JSON document: per size, each query's best and median time and its response's
size in bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from precompute_assets.core.db import sqlite_url

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "deploy"))  # the servers' process groups: deploy/processes.py

from processes import Server, server_group, webserver_command  # noqa: E402

ASSET = "unused_fields_report"
PARTITIONS = "unused_fields_scopes"
STARTUP_TIMEOUT_S = 120
QUERY_TIMEOUT_S = 600
UI_BUNDLE = "webapp/build/_next/static/chunks"

PARTITION_STATS_QUERY = """
query PartitionStats($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys) {
    id
    partitionStats { numMaterialized numMaterializing numFailed numPartitions }
  }
}
"""
ONE_PARTITION_QUERY = """
query OnePartition($assetKey: AssetKeyInput!, $partitionKey: String!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      assetEventHistory(partitions: [$partitionKey], limit: 1,
                        eventTypeSelectors: [MATERIALIZATION]) {
        results { ... on MaterializationEvent { runId timestamp partition } }
      }
    }
  }
}
"""


def partition_health_query() -> str:
    """``PartitionHealthQuery`` as the installed webserver's UI sends it, from its JS bundle."""
    import dagster_webserver

    chunks = Path(dagster_webserver.__file__).parent / UI_BUNDLE
    found = re.compile(r'"(\\n\s*query PartitionHealthQuery\(.*?)"\]', re.DOTALL)
    for chunk in sorted(chunks.glob("*.js")):
        match = found.search(chunk.read_text(errors="replace"))
        if match:
            query = json.loads(f'"{match.group(1)}"')
            if "${" in query or query.count("{") != query.count("}"):
                raise RuntimeError(f"PartitionHealthQuery in {chunk} is not a complete query")
            return query
    raise RuntimeError(f"no PartitionHealthQuery in the UI bundle under {chunks}")


def scope_keys(count: int) -> list[str]:
    """Space keys as the demo names them: 500 spaces a tenant."""
    return [f"t{n // 500 + 1}-s{n % 500 + 1:03d}" for n in range(count)]


# ------------------------------------------------------------------------------ the instance


@contextmanager
def instance_home(url: str | None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh DAGSTER_HOME and the environment of every process that uses it; removed after,
    with its PostgreSQL database."""
    home = Path(tempfile.mkdtemp(prefix="pc-partitions-ui-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECOMPUTE_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "PRECOMPUTE_HOME": str(home / "precompute"),
        "PRECOMPUTE_SOURCE_URL": sqlite_url(home / "source.db"),
        "PRECOMPUTE_STORE_URL": sqlite_url(home / "reports.db"),
    }
    server = None if url is None else make_url(url)
    database = None if server is None else f"{server.database or 'postgres'}_partitions_ui"
    try:
        if server is None:
            shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
        else:
            recreate_database(server, database, create=True)
            shutil.copy(PROJECT / "deploy" / "dagster.yaml", home / "dagster.yaml")
            env |= {
                "DAGSTER_PG_USERNAME": server.username or "",
                "DAGSTER_PG_PASSWORD": server.password or "",
                "DAGSTER_PG_HOST": server.host or "127.0.0.1",
                "DAGSTER_PG_PORT": str(server.port or 5432),
                "DAGSTER_PG_DB": database,
            }
        yield home, env
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if server is not None:
            recreate_database(server, database, create=False)


def recreate_database(server: sa.URL, name: str, *, create: bool) -> None:
    """Drop the database ``name`` of ``server`` if it exists, and create it anew if told."""
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()


@contextmanager
def instance_for(env: Mapping[str, str]):
    """The instance the webserver reads, opened in this process from the same environment."""
    from dagster import DagsterInstance

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with DagsterInstance.get() as instance:
            yield instance
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def grow(instance, registered: int, size: int, materialised: int) -> float:
    """Register partitions up to ``size`` and materialise the first ``materialised``; seconds."""
    from dagster import AssetKey, AssetMaterialization

    started = time.perf_counter()
    keys = scope_keys(size)
    instance.add_dynamic_partitions(PARTITIONS, keys[registered:])
    for key in keys[min(registered, materialised) : min(size, materialised)]:
        instance.report_runless_asset_event(AssetMaterialization(AssetKey(ASSET), partition=key))
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ the webserver


@contextmanager
def webserver(home: Path, env: Mapping[str, str], port: int) -> Iterator[Server]:
    with server_group("webserver", webserver_command(port), env, home, PROJECT) as server:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not location_loaded(port):
            if server.exit_code() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the webserver did not load the workspace\n{server.tail()}")
            time.sleep(0.5)
        yield server


def location_loaded(port: int) -> bool:
    query = "query { workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"
    try:
        entries = graphql(port, query, {})[0]["workspaceOrError"]["locationEntries"]
    except (OSError, KeyError, TypeError):
        return False
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def graphql(port: int, query: str, variables: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The response's data and its size in bytes; a GraphQL error is an exception."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=QUERY_TIMEOUT_S) as response:
        raw = response.read()
    answer = json.loads(raw)
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL errors: {answer['errors']}")
    return answer["data"], len(raw)


def timed(port: int, query: str, variables: dict[str, Any], repeats: int):
    graphql(port, query, variables)  # warm-up: caches of the webserver, the database's pages
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        data, size = graphql(port, query, variables)
        seconds.append(time.perf_counter() - started)
    figures = {
        "best_s": round(min(seconds), 3),
        "median_s": round(statistics.median(seconds), 3),
        "response_bytes": size,
    }
    return figures, data


def measure_size(port: int, size: int, materialised: int, repeats: int) -> dict[str, Any]:
    asset_key = {"path": [ASSET]}
    health, data = timed(port, partition_health_query(), {"assetKey": asset_key}, repeats)
    node = data["assetNodeOrError"]
    (dimension,) = node["partitionKeysByDimension"]
    statuses = node["assetPartitionStatuses"]
    expected = min(size, materialised)
    if (
        len(dimension["partitionKeys"]) != size
        or len(statuses["materializedPartitions"]) != expected
    ):
        raise RuntimeError(
            f"the Partitions tab saw {len(dimension['partitionKeys'])} partitions and "
            f"{len(statuses['materializedPartitions'])} materialised, not {size} and {expected}"
        )
    stats, _ = timed(port, PARTITION_STATS_QUERY, {"assetKeys": [asset_key]}, repeats)
    first = scope_keys(1)[0]
    one, _ = timed(
        port, ONE_PARTITION_QUERY, {"assetKey": asset_key, "partitionKey": first}, repeats
    )
    return {
        "partitions": size,
        "materialised": expected,
        "partition_health": health,
        "partition_stats": stats,
        "one_partition": one,
    }


def measure(
    sizes: list[int], materialised: int, repeats: int, url: str | None, port: int
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "instance": "sqlite (dagster.yaml)" if url is None else "postgresql (deploy/dagster.yaml)",
        "repeats": repeats,
    }
    with instance_home(url) as (home, env), instance_for(env) as instance:
        registered = 0
        with webserver(home, env, port):
            for size in sorted(sizes):
                setup_s = grow(instance, registered, size, materialised)
                registered = size
                results[f"partitions_{size}"] = {
                    **measure_size(port, size, materialised, repeats),
                    "setup_s": round(setup_s, 1),
                }
    return results


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--materialised", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--url", help="a PostgreSQL server for the instance; SQLite when absent")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = measure(args.partitions, args.materialised, args.repeats, args.url, free_port())
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
