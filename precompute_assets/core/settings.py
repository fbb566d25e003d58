"""Every setting in one place, read from the environment when asked for, never at import.

Each group is a pydantic model, and every value passes its validation whether it comes from an
environment variable or from the ``precompute`` resource's config in the launchpad: a bad value
is an error naming the variable or field and the value (a URL's password masked), raised where
the value is loaded, before any work starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from precompute_assets.core.db import safe_url, sqlite_url

DAY_S = 86_400
CACHE_SCHEMES = ("redis", "rediss", "memcached")

PositiveInt = Annotated[int, Field(gt=0)]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SettingsError(ValueError):
    """A setting holds a value the framework cannot use; the variable or field is named."""


class _SettingsModel(BaseModel):
    """Settings validated alike from the environment (``ENV`` names each field's variable) and
    from code or config."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ENV: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        values = {field: env[name] for field, name in cls.ENV.items() if env.get(name)}
        return cls.validated(values, names=cls.ENV)

    @classmethod
    def validated(cls, values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> Self:
        """The settings of ``values``, or SettingsError naming each bad one (``names`` says what
        the user calls a field: its environment variable, say)."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as error:
            problems = []
            for problem in error.errors():
                field = str(problem["loc"][0]) if problem["loc"] else ""
                name = (names or {}).get(field, field)
                shown = safe_url(str(problem.get("input")))
                message = problem["msg"].removeprefix("Value error, ")
                problems.append(f"{name}: {message}, got {shown!r}")
            raise SettingsError("; ".join(problems)) from None


class Settings(_SettingsModel):
    """Where the data lives, how a job is cut into work, and how long a run may take.

    =============================  ==========================================  =================
    environment variable           meaning                                     default
    =============================  ==========================================  =================
    ``PRECOMPUTE_HOME``            folder of the embedded SQLite files         ``./.precompute``
    ``PRECOMPUTE_SOURCE_URL``      SQLAlchemy URL of the source database       ``HOME/source.db``
    ``PRECOMPUTE_STORE_URL``       URL of the ledger and report store          ``HOME/reports.db``
    ``PRECOMPUTE_BATCH_SIZE``      entities per scanned batch                  5000
    ``PRECOMPUTE_MAX_SHARDS``      most mapped scan steps per job              4
    ``PRECOMPUTE_CACHE_URL``       Redis or memcached tier for contributions   none (SQL ledger)
    =============================  ==========================================  =================
    """

    ENV: ClassVar[dict[str, str]] = {
        "home": "PRECOMPUTE_HOME",
        "source_url": "PRECOMPUTE_SOURCE_URL",
        "store_url": "PRECOMPUTE_STORE_URL",
        "batch_size": "PRECOMPUTE_BATCH_SIZE",
        "max_shards": "PRECOMPUTE_MAX_SHARDS",
        "cache_url": "PRECOMPUTE_CACHE_URL",
    }

    home: Path = Path(".precompute")
    source_url: str = ""
    store_url: str = ""
    batch_size: PositiveInt = 5_000
    max_shards: PositiveInt = 4
    cache_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _embedded_defaults(cls, values: Any) -> Any:
        # The embedded SQLite files live under home unless URLs are given.
        if not isinstance(values, Mapping):
            return values
        home = Path(values.get("home") or ".precompute").resolve()
        return {
            **values,
            "home": home,
            "source_url": values.get("source_url") or sqlite_url(home / "source.db"),
            "store_url": values.get("store_url") or sqlite_url(home / "reports.db"),
        }

    @field_validator("source_url", "store_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        try:
            make_url(url)
        except Exception:
            raise ValueError("not an SQLAlchemy database URL") from None
        return url

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, url: str | None) -> str | None:
        if url and url.split("://", 1)[0] not in CACHE_SCHEMES:
            raise ValueError("use redis://host:port/db or memcached://host:port")
        return url or None


class RefreshSettings(_SettingsModel):
    """The prioritised refresh policy.

    ===================================  ===============================================  =======
    environment variable                 meaning                                          default
    ===================================  ===============================================  =======
    ``PRECOMPUTE_REFRESH_THRESHOLD``     utilisation from which a scope is high priority  0.7
    ``PRECOMPUTE_REFRESH_MAX_AGE_DAYS``  age that makes a high scope's report due         7
    ``PRECOMPUTE_REFRESH_LOW_AGE_DAYS``  age that makes a low scope's report due          30
    ``PRECOMPUTE_REFRESH_BUDGET``        most run requests per sensor tick                20
    ``PRECOMPUTE_BASELINE_BUDGET``       most run requests per baseline schedule tick     500
    ``PRECOMPUTE_SENSOR_INTERVAL_S``     seconds between two ticks of a sensor            60
    ===================================  ===============================================  =======
    """

    ENV: ClassVar[dict[str, str]] = {
        "threshold": "PRECOMPUTE_REFRESH_THRESHOLD",
        "max_age_days": "PRECOMPUTE_REFRESH_MAX_AGE_DAYS",
        "low_max_age_days": "PRECOMPUTE_REFRESH_LOW_AGE_DAYS",
        "budget": "PRECOMPUTE_REFRESH_BUDGET",
        "baseline_budget": "PRECOMPUTE_BASELINE_BUDGET",
        "sensor_interval_s": "PRECOMPUTE_SENSOR_INTERVAL_S",
    }

    threshold: PositiveNumber = 0.7
    max_age_days: PositiveNumber = 7.0
    low_max_age_days: PositiveNumber = 30.0
    budget: PositiveInt = 20
    baseline_budget: PositiveInt = 500
    sensor_interval_s: PositiveInt = 60

    @property
    def max_age_s(self) -> float:
        return self.max_age_days * DAY_S

    @property
    def low_max_age_s(self) -> float:
        return self.low_max_age_days * DAY_S


class ExecutorSettings(_SettingsModel):
    """How report runs run: their executor, by the entity count of the scope's last plan, and
    their deadline.

    ===================================  =========================================  ============
    environment variable                 meaning                                    default
    ===================================  =========================================  ============
    ``PRECOMPUTE_LARGE_SCOPE_ENTITIES``  entity count from which a scope is large   2000000
    ``PRECOMPUTE_LARGE_SCOPE_EXECUTOR``  a large scope's executor: ``multiprocess``  multiprocess
                                         or ``celery``; smaller ones run in-process
    ``PRECOMPUTE_CELERY_BROKER``         broker URL of the celery workers           see below
    ``PRECOMPUTE_CELERY_BACKEND``        their result backend                       see below
    ``PRECOMPUTE_MAX_RUNTIME_S``         seconds a run may take before run          3600
                                         monitoring stops it (``dagster/max_runtime``)
    ===================================  =========================================  ============

    Without the celery URLs, dagster-celery's defaults apply: RabbitMQ at
    ``DAGSTER_CELERY_BROKER_HOST`` (localhost) and the ``rpc://`` backend.
    """

    ENV: ClassVar[dict[str, str]] = {
        "large_scope_entities": "PRECOMPUTE_LARGE_SCOPE_ENTITIES",
        "large_scope_executor": "PRECOMPUTE_LARGE_SCOPE_EXECUTOR",
        "celery_broker": "PRECOMPUTE_CELERY_BROKER",
        "celery_backend": "PRECOMPUTE_CELERY_BACKEND",
        "max_runtime_s": "PRECOMPUTE_MAX_RUNTIME_S",
    }

    large_scope_entities: PositiveInt = 2_000_000
    large_scope_executor: Literal["multiprocess", "celery"] = "multiprocess"
    celery_broker: str | None = None
    celery_backend: str | None = None
    max_runtime_s: PositiveInt = 3_600
