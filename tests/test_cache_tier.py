"""Redis and memcached in front of the SQL ledger, against real servers.

memcached runs with 2 MB of memory so that it evicts contributions during the job: the report
must still equal the SQL-ledger one. In a run, the shards lift their folds into partials as they
finish, so evicted entries cost nothing (the run's metadata shows the evictions, and no rescan);
the entries of shards killed before lifting are what eviction costs, and finalise rescans them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import require_service, run_partition

from precompute_assets.core.cache import cache_from_url
from precompute_assets.core.db import sqlite_url
from precompute_assets.core.ledger import batches
from precompute_assets.core.phases import finalise_job, open_job, scan_and_record
from precompute_assets.demo.source import generate_source, single_space_scale
from precompute_assets.orchestration.definitions import build_definitions
from precompute_assets.orchestration.resources import PrecomputeResource

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/13"
SCOPE = "t1-s001"
BATCH = 100


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def redis_url() -> Iterator[str]:
    cache = cache_from_url(REDIS_URL)
    try:
        cache.client.flushdb()
    except Exception:
        require_service("Redis at 127.0.0.1:6379", "start redis-server on port 6379")
    yield REDIS_URL
    cache.client.flushdb()


@pytest.fixture
def small_memcached() -> Iterator[str]:
    """A memcached of our own with 2 MB of memory: it must evict during a job."""
    binary = shutil.which("memcached")
    if binary is None:
        require_service("memcached", "install it: apt-get install -y memcached")
    port = _free_port()
    # Items up to 512 KB need at most half of memory; 2 MB is the smallest that allows it.
    options = ["-m", "2", "-I", "512k", "-U", "0", "-u", "root"]
    server = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"memcached://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            cache_from_url(url).evictions()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("memcached did not start within 10 s")
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(timeout=10)


def _report(precompute: PrecomputeResource, scope: str) -> pd.DataFrame:
    return precompute.store().read("unused_fields", scope)[1]


def _sql_ledger_rows(precompute: PrecomputeResource) -> int:
    with precompute.store().engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(batches)).scalar()


@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> str:
    """One space whose contributions, in batches of 100 items, far exceed 2 MB."""
    url = sqlite_url(tmp_path_factory.mktemp("cache") / "source.db")
    generate_source(url, single_space_scale(150_000))
    return url


@pytest.fixture
def reference(big_source, tmp_path, tools, instance):
    """The SQL-ledger report of the space, and the space."""
    precompute = PrecomputeResource(
        source_url=big_source, store_url=sqlite_url(tmp_path / "sql.db"), batch_size=BATCH
    )
    assert run_partition(build_definitions(tools, precompute), "unused_fields", SCOPE, instance)
    return _report(precompute, SCOPE)


def test_redis_tier_holds_contributions_and_gives_the_same_report(
    redis_url, reference, big_source, tmp_path, tools, instance
):
    precompute = PrecomputeResource(
        source_url=big_source,
        store_url=sqlite_url(tmp_path / "redis.db"),
        batch_size=BATCH,
        cache_url=redis_url,
    )
    result = run_partition(build_definitions(tools, precompute), "unused_fields", SCOPE, instance)
    assert result.success
    pd.testing.assert_frame_equal(_report(precompute, SCOPE), reference)
    assert _sql_ledger_rows(precompute) == 0, "contributions went to Redis, not SQL"
    redis = cache_from_url(redis_url).client
    assert redis.keys("precompute:*") == [], "finalise expires the job's entries"


def test_memcached_evicting_mid_job_still_gives_the_same_report(
    small_memcached, reference, big_source, tmp_path, tools, instance
):
    precompute = PrecomputeResource(
        source_url=big_source,
        store_url=sqlite_url(tmp_path / "memcached.db"),
        batch_size=BATCH,
        max_shards=2,
        cache_url=small_memcached,
    )
    result = run_partition(build_definitions(tools, precompute), "unused_fields", SCOPE, instance)

    assert result.success
    pd.testing.assert_frame_equal(_report(precompute, SCOPE), reference)
    [materialisation] = result.asset_materializations_for_node("unused_fields_report")
    metadata = materialisation.metadata
    assert metadata["cache_evictions"].value > 0
    # Each shard folded its batches as it scanned them and lifted the fold: nothing to rescan.
    assert metadata["batches_rescanned_at_finalise"].value == 0
    header = precompute.store().header("unused_fields", SCOPE)
    assert header.summary["partials_folded"] == header.shard_count


def test_memcached_evicting_what_killed_shards_left_unlifted_is_rescanned(
    small_memcached, reference, big_source, tmp_path, tools
):
    precompute = PrecomputeResource(
        source_url=big_source,
        store_url=sqlite_url(tmp_path / "memcached.db"),
        batch_size=BATCH,
        cache_url=small_memcached,
    )
    tool, source, ledger = tools["unused_fields"], precompute.source_engine(), precompute.ledger()
    plan = open_job(tool, SCOPE, source, ledger, BATCH)
    evictions = ledger.evictions()
    with source.connect() as connection:  # every shard checkpointed its batches, then died
        for index in range(plan.batch_count):
            scan_and_record(tool, connection, ledger, plan, plan.batch(index))
    assert ledger.evictions() > evictions

    report = finalise_job(tool, plan, source, ledger, precompute.store(), shard_count=2)

    assert report.rescanned, "evicted entries are rescanned"
    assert report.header.summary["partials_folded"] == 0
    pd.testing.assert_frame_equal(_report(precompute, SCOPE), reference)
