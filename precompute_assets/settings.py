"""Every setting in one place, read from the environment when asked for, never at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from precompute_assets.db import sqlite_url

DEFAULT_BATCH_SIZE = 5_000
DEFAULT_MAX_SHARDS = 4


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
    =========================  ==========================================  ====================
    """

    home: Path
    source_url: str
    store_url: str
    batch_size: int = DEFAULT_BATCH_SIZE
    max_shards: int = DEFAULT_MAX_SHARDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("PRECOMPUTE_HOME") or ".precompute").resolve()
        return cls(
            home=home,
            source_url=env.get("PRECOMPUTE_SOURCE_URL") or sqlite_url(home / "source.db"),
            store_url=env.get("PRECOMPUTE_STORE_URL") or sqlite_url(home / "reports.db"),
            batch_size=_positive_int(env, "PRECOMPUTE_BATCH_SIZE", DEFAULT_BATCH_SIZE),
            max_shards=_positive_int(env, "PRECOMPUTE_MAX_SHARDS", DEFAULT_MAX_SHARDS),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value
