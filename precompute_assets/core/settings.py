"""Every setting in one typed place, read from the environment when asked for, never at import.

Each setting is a field of one of four pydantic models, with its environment variable, default
and description. The ``precompute`` resource has a field for each (so the launchpad shows them
all), the README's tables are generated from them (``python -m precompute_assets.core.settings``),
and every value passes the same validation whether it comes from the environment or from the
resource's config: a bad value is an error naming the variable or field and the value (a URL's
password masked), raised where the value is loaded, before any work starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

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
from precompute_assets.core.errors import SettingsError

DAY_S = 86_400
# A run's fixed cost (a process, the code location, its events) is seconds; a small scope
# computes in a tenth of one: a hundred of them make a run that mostly computes.
SCOPES_PER_RUN = 100
CACHE_SCHEMES = ("redis", "rediss", "memcached")

PositiveInt = Annotated[int, Field(gt=0)]
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def setting(default: Any, variable: str, description: str, shown: str | None = None) -> Any:
    """A setting: its default, its environment variable, what it means (and how the README
    shows its default, where that is not the value itself)."""
    extra = {"env": variable} | ({"shown": shown} if shown else {})
    return Field(default=default, description=description, json_schema_extra=extra)


class SettingsGroup(BaseModel):
    """Settings validated alike from the environment and from code or config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Each field's environment variable."""
        return {name: field.json_schema_extra["env"] for name, field in cls.model_fields.items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        values = {field: env[name] for field, name in cls.variables().items() if env.get(name)}
        return cls.validated(values, names=cls.variables())

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

    def overridden(self, overrides: Mapping[str, Any], names: Mapping[str, str]) -> Self:
        """These settings with ``overrides`` over them, validated as any setting is."""
        if not overrides:
            return self
        return self.validated({**self.model_dump(), **overrides}, names=names)


class Settings(SettingsGroup):
    """Where the data lives, how a job is cut into work, and how long the ledger keeps jobs."""

    home: Path = setting(
        Path(".precompute"),
        "PRECOMPUTE_HOME",
        "folder of the embedded SQLite files",
        "./.precompute",
    )
    source_url: str = setting(
        "", "PRECOMPUTE_SOURCE_URL", "SQLAlchemy URL of the source", "`sqlite:///$HOME/source.db`"
    )
    store_url: str = setting(
        "",
        "PRECOMPUTE_STORE_URL",
        "SQLAlchemy URL of the ledger and the reports",
        "`sqlite:///$HOME/reports.db`",
    )
    batch_size: PositiveInt = setting(5_000, "PRECOMPUTE_BATCH_SIZE", "entities per scanned batch")
    max_shards: PositiveInt = setting(4, "PRECOMPUTE_MAX_SHARDS", "most mapped scan steps per job")
    scan_threads: PositiveInt = setting(
        2,
        "PRECOMPUTE_SCAN_THREADS",
        "source connections each scan step scans its batches on at once (at most the source"
        " engine's pool size, 5, and the instance's `precompute_source` pool limit)",
    )
    cache_url: str | None = setting(
        None,
        "PRECOMPUTE_CACHE_URL",
        "`redis://host:6379/0` or `memcached://host:11211`: batch contributions live there during"
        " a job (the SQL ledger keeps the jobs and the shards' partials); a lost entry is"
        " rescanned",
        "unset: the SQL ledger",
    )
    job_retention_days: PositiveNumber = setting(
        7.0,
        "PRECOMPUTE_JOB_RETENTION_DAYS",
        "days the ledger keeps a closed, replaced or abandoned job (and its batches)",
    )

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


class RefreshSettings(SettingsGroup):
    """The prioritised refresh policy, and how often its sensors tick."""

    threshold: PositiveNumber = setting(
        0.7, "PRECOMPUTE_REFRESH_THRESHOLD", "utilisation from which a scope is refreshed first"
    )
    max_age_days: PositiveNumber = setting(
        7.0, "PRECOMPUTE_REFRESH_MAX_AGE_DAYS", "age that makes a high scope's report due"
    )
    low_max_age_days: PositiveNumber = setting(
        30.0, "PRECOMPUTE_REFRESH_LOW_AGE_DAYS", "age that makes a low scope's report due"
    )
    budget: PositiveInt = setting(
        20, "PRECOMPUTE_REFRESH_BUDGET", "most run requests per sensor tick"
    )
    baseline_budget: PositiveInt = setting(
        500, "PRECOMPUTE_BASELINE_BUDGET", "most run requests per baseline schedule tick"
    )
    sensor_interval_s: PositiveInt = setting(
        60, "PRECOMPUTE_SENSOR_INTERVAL_S", "seconds between two ticks of a sensor"
    )

    @property
    def max_age_s(self) -> float:
        return self.max_age_days * DAY_S

    @property
    def low_max_age_s(self) -> float:
        return self.low_max_age_days * DAY_S


class ExecutorSettings(SettingsGroup):
    """How report runs run: how many scopes each refreshes, their executor, by the entity count
    of the scope's last plan, and their deadline."""

    large_scope_entities: PositiveInt = setting(
        2_000_000,
        "PRECOMPUTE_LARGE_SCOPE_ENTITIES",
        "entity count of a scope's last plan from which its runs leave the run's process",
    )
    large_scope_executor: Literal["multiprocess", "celery"] = setting(
        "multiprocess",
        "PRECOMPUTE_LARGE_SCOPE_EXECUTOR",
        "executor of those runs: `multiprocess` or `celery`",
    )
    celery_broker: str | None = setting(
        None,
        "PRECOMPUTE_CELERY_BROKER",
        "broker of celery runs, named in their run config by this variable (no password lands"
        " in a run record)",
        "dagster-celery's: RabbitMQ",
    )
    celery_backend: str | None = setting(
        None, "PRECOMPUTE_CELERY_BACKEND", "result backend of celery runs, likewise", "`rpc://`"
    )
    scopes_per_run: PositiveInt = setting(
        SCOPES_PER_RUN,
        "PRECOMPUTE_SCOPES_PER_RUN",
        "most scopes one run refreshes (a backfill's runs, and the sensors' runs of small scopes;"
        " read when the definitions load)",
    )
    shared_run_entities: PositiveInt = setting(
        100_000,
        "PRECOMPUTE_SHARED_RUN_ENTITIES",
        "entity count of a scope's last plan below which sensors refresh it in a run shared with"
        " other small scopes; larger scopes get a run each",
    )
    max_runtime_s: PositiveInt = setting(
        3_600,
        "PRECOMPUTE_MAX_RUNTIME_S",
        "seconds a report run may take before run monitoring stops it (`dagster/max_runtime`)",
    )


class ToolSettings(SettingsGroup):
    """Which tools load, read once, when the tools are discovered (not per run)."""

    disable_plugin_autoload: bool = setting(
        False,
        "PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD",
        "`1` loads only the tools in `tool_plugins/`, not those of entry points",
    )
    disabled_tools: str = setting(
        "",
        "PRECOMPUTE_DISABLED_TOOLS",
        "tools left out by name, comma-separated",
        "none",
    )

    @property
    def disabled(self) -> set[str]:
        return {name.strip() for name in self.disabled_tools.split(",") if name.strip()}


class ServiceSettings(SettingsGroup):
    """The report service (``precompute serve``), and the Dagster webserver that on-demand
    refreshes go through."""

    host: str = setting("127.0.0.1", "PRECOMPUTE_SERVICE_HOST", "address the service listens on")
    port: Annotated[int, Field(gt=0, lt=65_536)] = setting(
        8000, "PRECOMPUTE_SERVICE_PORT", "port the service listens on"
    )
    workers: PositiveInt = setting(
        1, "PRECOMPUTE_SERVICE_WORKERS", "service processes (about one per CPU)"
    )
    cached_reports: PositiveInt = setting(
        256,
        "PRECOMPUTE_SERVICE_CACHED_REPORTS",
        "report generations each service process keeps in memory, encoded (least recently used go)",
    )
    key_cache_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = setting(
        1.0,
        "PRECOMPUTE_SERVICE_KEY_CACHE_S",
        "seconds each service process trusts a key it has looked up: a revoked key is refused "
        "within this time (0: look every request's key up)",
    )
    dagster_url: str = setting(
        "http://127.0.0.1:3000",
        "PRECOMPUTE_DAGSTER_URL",
        "the Dagster webserver that on-demand refreshes are submitted to (its GraphQL API)",
    )

    @field_validator("dagster_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("use http://host:port of the Dagster webserver")
        return url.rstrip("/")


# The settings of runs, which the ``precompute`` resource carries; tools load before any run.
GROUPS: tuple[type[SettingsGroup], ...] = (Settings, RefreshSettings, ExecutorSettings)
README_GROUPS: tuple[type[SettingsGroup], ...] = (*GROUPS, ToolSettings, ServiceSettings)


def settings_table(group: type[SettingsGroup]) -> str:
    """The README's table of one group: variable, meaning, default."""
    lines = ["| variable | meaning | default |", "| --- | --- | --- |"]
    for field in group.model_fields.values():
        extra = field.json_schema_extra
        default = extra.get("shown") or f"{field.default}"
        lines.append(f"| `{extra['env']}` | {field.description} | {default} |")
    return "\n".join(lines)


def with_settings_tables(text: str) -> str:
    """``text`` (the README) with each ``<!-- settings:Group -->`` block regenerated."""
    for group in README_GROUPS:
        start, end = f"<!-- settings:{group.__name__} -->", "<!-- /settings -->"
        before, found, rest = text.partition(start)
        if not found:
            continue
        _, _, after = rest.partition(end)
        text = f"{before}{start}\n{settings_table(group)}\n{end}{after}"
    return text


if __name__ == "__main__":
    # python -m precompute_assets.core.settings README.md: regenerate the README's tables.
    readme = Path(sys.argv[1])
    readme.write_text(with_settings_tables(readme.read_text()))
