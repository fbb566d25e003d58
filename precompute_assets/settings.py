"""Every setting in one place, read from the environment when asked for, never at import."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from precompute_assets.db import sqlite_url

DAY_S = 86_400
LARGE_SCOPE_EXECUTORS = ("multiprocess", "celery")
N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """An environment variable holds a value the framework cannot use; it is named."""


@dataclass(frozen=True)
class Settings:
    """Where the data lives and how a job is cut into work.

    =========================  ==========================================  ====================
    environment variable       meaning                                     default
    =========================  ==========================================  ====================
    ``PRECOMPUTE_HOME``        folder of the embedded SQLite files         ``./.precompute``
    ``PRECOMPUTE_SOURCE_URL``  SQLAlchemy URL of the source database       ``HOME/source.db``
    ``PRECOMPUTE_STORE_URL``   URL of the ledger and report store          ``HOME/reports.db``
    ``PRECOMPUTE_BATCH_SIZE``  entities per scanned batch                  5000
    ``PRECOMPUTE_MAX_SHARDS``  most mapped scan steps per job              4
    ``PRECOMPUTE_CACHE_URL``   Redis or memcached tier for contributions   none (SQL ledger)
    =========================  ==========================================  ====================
    """

    home: Path
    source_url: str
    store_url: str
    batch_size: int = 5_000
    max_shards: int = 4
    cache_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("PRECOMPUTE_HOME") or ".precompute").resolve()
        return cls(
            home=home,
            source_url=env.get("PRECOMPUTE_SOURCE_URL") or sqlite_url(home / "source.db"),
            store_url=env.get("PRECOMPUTE_STORE_URL") or sqlite_url(home / "reports.db"),
            batch_size=_positive(env, "PRECOMPUTE_BATCH_SIZE", cls.batch_size, int),
            max_shards=_positive(env, "PRECOMPUTE_MAX_SHARDS", cls.max_shards, int),
            cache_url=env.get("PRECOMPUTE_CACHE_URL") or None,
        )


@dataclass(frozen=True)
class RefreshSettings:
    """The prioritised refresh policy.

    ===================================  ===============================================  =======
    environment variable                 meaning                                          default
    ===================================  ===============================================  =======
    ``PRECOMPUTE_REFRESH_THRESHOLD``     utilisation from which a scope is high priority  0.7
    ``PRECOMPUTE_REFRESH_MAX_AGE_DAYS``  age that makes a high scope's report due         7
    ``PRECOMPUTE_REFRESH_LOW_AGE_DAYS``  age that makes a low scope's report due          30
    ``PRECOMPUTE_REFRESH_BUDGET``        most run requests per sensor tick                20
    ``PRECOMPUTE_BASELINE_BUDGET``       most run requests per baseline schedule tick     500
    ===================================  ===============================================  =======
    """

    threshold: float = 0.7
    max_age_days: float = 7.0
    low_max_age_days: float = 30.0
    budget: int = 20
    baseline_budget: int = 500

    @property
    def max_age_s(self) -> float:
        return self.max_age_days * DAY_S

    @property
    def low_max_age_s(self) -> float:
        return self.low_max_age_days * DAY_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RefreshSettings:
        env = os.environ if environ is None else environ
        return cls(
            threshold=_positive(env, "PRECOMPUTE_REFRESH_THRESHOLD", cls.threshold, float),
            max_age_days=_positive(env, "PRECOMPUTE_REFRESH_MAX_AGE_DAYS", cls.max_age_days, float),
            low_max_age_days=_positive(
                env, "PRECOMPUTE_REFRESH_LOW_AGE_DAYS", cls.low_max_age_days, float
            ),
            budget=_positive(env, "PRECOMPUTE_REFRESH_BUDGET", cls.budget, int),
            baseline_budget=_positive(env, "PRECOMPUTE_BASELINE_BUDGET", cls.baseline_budget, int),
        )


@dataclass(frozen=True)
class ExecutorSettings:
    """Which executor a run gets, from the entity count of the scope's last plan.

    ===================================  =========================================  ============
    environment variable                 meaning                                    default
    ===================================  =========================================  ============
    ``PRECOMPUTE_LARGE_SCOPE_ENTITIES``  entity count from which a scope is large   2000000
    ``PRECOMPUTE_LARGE_SCOPE_EXECUTOR``  a large scope's executor: ``multiprocess``  multiprocess
                                         or ``celery``; smaller ones run in-process
    ``PRECOMPUTE_CELERY_BROKER``         broker URL of the celery workers           see below
    ``PRECOMPUTE_CELERY_BACKEND``        their result backend                       see below
    ===================================  =========================================  ============

    Without the celery URLs, dagster-celery's defaults apply: RabbitMQ at
    ``DAGSTER_CELERY_BROKER_HOST`` (localhost) and the ``rpc://`` backend.
    """

    large_scope_entities: int = 2_000_000
    large_scope_executor: str = "multiprocess"
    celery_broker: str | None = None
    celery_backend: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExecutorSettings:
        env = os.environ if environ is None else environ
        executor = env.get("PRECOMPUTE_LARGE_SCOPE_EXECUTOR") or cls.large_scope_executor
        if executor not in LARGE_SCOPE_EXECUTORS:
            raise SettingsError(
                "PRECOMPUTE_LARGE_SCOPE_EXECUTOR must be one of "
                f"{', '.join(LARGE_SCOPE_EXECUTORS)}, got {executor!r}"
            )
        return cls(
            large_scope_entities=_positive(
                env, "PRECOMPUTE_LARGE_SCOPE_ENTITIES", cls.large_scope_entities, int
            ),
            large_scope_executor=executor,
            celery_broker=env.get("PRECOMPUTE_CELERY_BROKER") or None,
            celery_backend=env.get("PRECOMPUTE_CELERY_BACKEND") or None,
        )


def _positive(env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N]) -> N:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a positive {kind.__name__}, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be a positive {kind.__name__}, got {raw!r}")
    return value
