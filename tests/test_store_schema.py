"""The store's schema under Alembic: created on first use, migrated by `precompute migrate`, and an
old schema refused by writers and readers alike with a message saying to migrate; the ledger
forgets old jobs."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from precompute_assets.cli.main import main
from precompute_assets.contract import Extent
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.errors import SchemaVersionError
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.schema import HEAD_REVISION, MIGRATIONS, jobs, metadata, schema_revision


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store.db")
    return request.getfixturevalue("postgres_url")


def _at_revision(url: str, revision: str) -> sa.Engine:
    """A store made by an earlier release: migrated only as far as ``revision``."""
    engine = create_engine_for(url)
    with engine.begin() as connection:
        for table in ("precompute_step_outputs", *(t.name for t in metadata.sorted_tables)):
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return engine


def test_a_new_store_is_created_at_this_releases_revision_on_first_write(store_url):
    engine = _at_revision(store_url, "base")
    Ledger(engine).open_job("t", "s", Extent(0, 9, 10, "w"), 5)
    with engine.connect() as connection:
        assert schema_revision(connection) == HEAD_REVISION
    engine.dispose()


def test_an_old_store_is_refused_until_migrated(store_url, monkeypatch, capsys):
    engine = _at_revision(store_url, "0001")
    # A new process (new engines) on the old schema: writers and readers stop, saying why.
    with pytest.raises(SchemaVersionError, match=r"revision 0001; .* run `precompute migrate`"):
        Ledger(create_engine_for(store_url))
    with pytest.raises(SchemaVersionError, match="run `precompute migrate`"):
        ReportStore(create_engine_for(store_url)).header("t", "s")

    monkeypatch.setenv("PRECOMPUTE_STORE_URL", store_url)
    assert main(["migrate"]) == 0
    assert f"from 0001 to {HEAD_REVISION}" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert f"at revision {HEAD_REVISION} already" in capsys.readouterr().out
    plan = Ledger(create_engine_for(store_url)).open_job("t", "s", Extent(0, 9, 10, "w"), 5)
    assert plan.generation == 1
    assert ReportStore(create_engine_for(store_url)).header("t", "s") is None
    engine.dispose()


def test_a_store_made_before_migrations_existed_is_migrated(
    source_url, tmp_path, monkeypatch, capsys
):
    url = sqlite_url(tmp_path / "store.db")
    engine = _at_revision(url, "0001")
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")
    monkeypatch.setenv("PRECOMPUTE_STORE_URL", url)
    monkeypatch.setenv("PRECOMPUTE_SOURCE_URL", source_url)
    assert main(["report", "unused_fields", "t1-s001"]) == 1
    assert "no schema version" in capsys.readouterr().err
    assert main(["migrate"]) == 0
    assert f"from 0001 to {HEAD_REVISION}" in capsys.readouterr().out


def test_old_jobs_and_their_batches_are_forgotten(store_url):
    engine = _at_revision(store_url, "head")
    ledger = Ledger(engine, retention_days=1)
    old = ledger.open_job("t", "old", Extent(0, 9, 10, "w"), 5)
    ledger.record(old, 0, {"a": 1})
    abandoned = ledger.open_job("t", "abandoned", Extent(0, 9, 10, "w"), 5)
    ledger.record(abandoned, 0, {"a": 1})
    ledger.close_job(old)
    two_days_ago = time.time() - 2 * 86_400
    with engine.begin() as connection:
        connection.execute(jobs.update().values(opened_at=two_days_ago))
        connection.execute(
            jobs.update().where(jobs.c.scope == "old").values(closed_at=two_days_ago)
        )
    recent = ledger.open_job("t", "recent", Extent(0, 9, 10, "w"), 5)
    ledger.record(recent, 0, {"a": 1})
    ledger.close_job(recent)  # closing a job forgets every job past the retention
    with engine.connect() as connection:
        kept = connection.execute(sa.select(jobs.c.scope)).scalars().all()
        left = connection.exec_driver_sql("SELECT scope FROM precompute_batches").scalars().all()
    assert kept == ["recent"]
    assert left == []
