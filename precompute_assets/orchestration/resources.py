"""The Dagster resource that hands ops the source, the ledger and the report store."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field
from sqlalchemy import Engine

from precompute_assets.core.cache import cache_from_url, check_cache_reachable
from precompute_assets.core.db import create_engine_for
from precompute_assets.core.fleet_state import FleetState
from precompute_assets.core.ledger import Ledger
from precompute_assets.core.report_store import ReportStore
from precompute_assets.core.settings import (
    GROUPS,
    ExecutorSettings,
    RefreshSettings,
    Settings,
    SettingsGroup,
)

G = TypeVar("G", bound=SettingsGroup)


def _described(group: type[SettingsGroup], name: str) -> Any:
    """The resource's field for a setting: empty by default, described as the setting is."""
    field = group.model_fields[name]
    variable = field.json_schema_extra["env"]
    return Field(
        default=None, description=f"{field.description}. Unset: ${variable}, or its default."
    )


class PrecomputeResource(ConfigurableResource):
    """Every setting of the framework: where the data lives, how a job is cut, how scopes are
    refreshed and runs run.

    Each field left empty takes its value from its environment variable, else its default (see
    ``precompute_assets.core.settings``), so one ``dagster.yaml`` serves a laptop and a
    deployment; the launchpad shows them all. A value set here passes the same validation.

    Example::

        Definitions(assets=..., resources={"precompute": PrecomputeResource(batch_size=2000)})
    """

    home: str | None = _described(Settings, "home")
    source_url: str | None = _described(Settings, "source_url")
    store_url: str | None = _described(Settings, "store_url")
    batch_size: int | None = _described(Settings, "batch_size")
    max_shards: int | None = _described(Settings, "max_shards")
    scan_threads: int | None = _described(Settings, "scan_threads")
    cache_url: str | None = _described(Settings, "cache_url")
    job_retention_days: float | None = _described(Settings, "job_retention_days")
    threshold: float | None = _described(RefreshSettings, "threshold")
    max_age_days: float | None = _described(RefreshSettings, "max_age_days")
    low_max_age_days: float | None = _described(RefreshSettings, "low_max_age_days")
    budget: int | None = _described(RefreshSettings, "budget")
    baseline_budget: int | None = _described(RefreshSettings, "baseline_budget")
    sensor_interval_s: int | None = _described(RefreshSettings, "sensor_interval_s")
    large_scope_entities: int | None = _described(ExecutorSettings, "large_scope_entities")
    large_scope_executor: str | None = _described(ExecutorSettings, "large_scope_executor")
    celery_broker: str | None = _described(ExecutorSettings, "celery_broker")
    celery_backend: str | None = _described(ExecutorSettings, "celery_backend")
    scopes_per_run: int | None = _described(ExecutorSettings, "scopes_per_run")
    shared_run_entities: int | None = _described(ExecutorSettings, "shared_run_entities")
    max_runtime_s: int | None = _described(ExecutorSettings, "max_runtime_s")

    def settings(self) -> Settings:
        """Where the data lives: the environment's settings with this resource's over them."""
        return self._group(Settings)

    def refresh_settings(self) -> RefreshSettings:
        return self._group(RefreshSettings)

    def executor_settings(self) -> ExecutorSettings:
        return self._group(ExecutorSettings)

    def _group(self, group: type[G]) -> G:
        overrides = {
            name: getattr(self, name)
            for name in group.model_fields
            if getattr(self, name) is not None
        }
        names = {name: f"resource field precompute.{name}" for name in overrides}
        return group.from_env().overridden(overrides, names)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # A bad value fails the run as it starts, before any op opens a job.
        for group in GROUPS:
            self._group(group)

    def source_engine(self) -> Engine:
        return _source_engine(self.settings().source_url)

    def source_writer(self) -> Engine:
        """The source for remediation runs, the only writes the framework makes to it."""
        return _engine(self.settings().source_url)

    def ledger(self) -> Ledger:
        settings = self.settings()
        return _ledger(settings.store_url, settings.cache_url, settings.job_retention_days)

    def store(self) -> ReportStore:
        return _store(self.settings().store_url)

    def fleet(self) -> FleetState:
        """What the sensors know of every scope, in the store."""
        return _fleet(self.settings().store_url)


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
def _ledger(url: str, cache_url: str | None, retention_days: float) -> Ledger:
    tier = None if cache_url is None else check_cache_reachable(cache_from_url(cache_url))
    return Ledger(_engine(url), tier, retention_days)


@cache
def _store(url: str) -> ReportStore:
    return ReportStore(_engine(url))


@cache
def _fleet(url: str) -> FleetState:
    return FleetState(_engine(url))
