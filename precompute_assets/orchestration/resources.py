"""The Dagster resource that hands ops the source, the ledger and the report store."""

from __future__ import annotations

from functools import cache

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field
from sqlalchemy import Engine

from precompute_assets.core.cache import cache_from_url, check_cache_reachable
from precompute_assets.core.db import create_engine_for
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import Settings

# The settings a resource carries; the rest come from the environment of the process using it.
RESOURCE_SETTINGS = ("source_url", "store_url", "batch_size", "max_shards", "cache_url")


class PrecomputeResource(ConfigurableResource):
    """Where the source, ledger and reports live, and how a job is cut into batches and shards.

    Fields left empty take their value from the environment (see ``Settings``), so one
    ``dagster.yaml`` serves a laptop and a deployment.

    Example::

        Definitions(assets=..., resources={"precompute": PrecomputeResource(batch_size=2000)})
    """

    source_url: str | None = Field(default=None, description="SQLAlchemy URL of the source.")
    store_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the batch ledger and the report store."
    )
    batch_size: int | None = Field(default=None, description="Entities per scanned batch.")
    max_shards: int | None = Field(default=None, description="Most mapped scan steps per job.")
    cache_url: str | None = Field(
        default=None,
        description="redis://host:port/db or memcached://host:port for batch contributions.",
    )

    def settings(self) -> Settings:
        """The environment's settings with this resource's fields over them, validated alike."""
        overrides = {
            name: getattr(self, name)
            for name in RESOURCE_SETTINGS
            if getattr(self, name) is not None
        }
        if not overrides:
            return Settings.from_env()
        return Settings.validated(
            {**Settings.from_env().model_dump(), **overrides},
            names={name: f"resource field precompute.{name}" for name in overrides},
        )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # A bad value fails the run as it starts, before any op opens a job.
        self.settings()

    def source_engine(self) -> Engine:
        return _source_engine(self.settings().source_url)

    def ledger(self) -> Ledger:
        settings = self.settings()
        return _ledger(settings.store_url, settings.cache_url)

    def store(self) -> ReportStore:
        return _store(self.settings().store_url)


# One pool per database and process, shared by every op that runs in it.
@cache
def _engine(url: str) -> Engine:
    return create_engine_for(url)


@cache
def _source_engine(url: str) -> Engine:
    # The framework only ever reads the source; a missing file is a misconfiguration, not an
    # empty source.
    return create_engine_for(url, read_only=True)


@cache
def _ledger(url: str, cache_url: str | None) -> Ledger:
    tier = None if cache_url is None else check_cache_reachable(cache_from_url(cache_url))
    return Ledger(_engine(url), tier)


@cache
def _store(url: str) -> ReportStore:
    return ReportStore(_engine(url))
