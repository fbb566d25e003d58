"""The volatile tier for batch contributions: Redis or memcached, chosen by URL.

With a cache tier, batch contributions live there during a job (fast, shared by every process
and machine) while the SQL ledger keeps the jobs and the shards' partials. The tier may lose an
entry (memcached evicts under memory pressure, Redis may be flushed): a missing contribution is
normal, not an error, because the shard or finalise rescans any planned batch it cannot find.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from urllib.parse import urlparse

from precompute_assets.core.db import DatabaseUnavailableError, safe_url

DEFAULT_TTL_S = 7 * 86_400
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


class ContributionCache(ABC):
    """Encoded contributions by key; ``get_many`` simply omits keys the tier no longer holds."""

    url: str

    @abstractmethod
    def set(self, key: str, value: str) -> None: ...

    @abstractmethod
    def get_many(self, keys: Iterable[str]) -> dict[str, str]: ...

    @abstractmethod
    def delete_many(self, keys: Iterable[str]) -> None: ...

    @abstractmethod
    def evictions(self) -> int:
        """The server's count of entries evicted for memory since it started."""


class RedisCache(ContributionCache):
    def __init__(self, url: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        import redis

        self.url = url
        self.ttl_s = ttl_s
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def set(self, key: str, value: str) -> None:
        self.client.set(key, value, ex=self.ttl_s)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        if not keys:
            return {}
        values = self.client.mget(keys)
        return {key: value.decode() for key, value in zip(keys, values, strict=True) if value}

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self.client.delete(*keys)

    def evictions(self) -> int:
        return int(self.client.info("stats")["evicted_keys"])


class MemcachedCache(ContributionCache):
    def __init__(self, url: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        from pymemcache.client.base import PooledClient

        parsed = urlparse(url)
        self.url = url
        self.ttl_s = ttl_s
        # A shard's scan threads record their batches at once: a pooled client is thread-safe.
        self.client = PooledClient(
            (parsed.hostname or "127.0.0.1", parsed.port or 11211),
            connect_timeout=5,
            timeout=10,
        )

    def set(self, key: str, value: str) -> None:
        self.client.set(key, value.encode(), expire=self.ttl_s, noreply=False)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        if not keys:
            return {}
        return {key: value.decode() for key, value in self.client.get_many(keys).items()}

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self.client.delete_many(keys, noreply=False)

    def evictions(self) -> int:
        return int(self.client.stats()[b"evictions"])


def cache_from_url(url: str) -> ContributionCache:
    """``redis://host:6379/0`` or ``memcached://host:11211``."""
    scheme = urlparse(url).scheme
    caches: Mapping[str, type[ContributionCache]] = {
        "redis": RedisCache,
        "rediss": RedisCache,
        "memcached": MemcachedCache,
    }
    if scheme not in caches:
        raise ValueError(
            f"cache URL {safe_url(url)!r}: use redis://host:port/db or memcached://host:port"
        )
    return caches[scheme](url)


def check_cache_reachable(cache: ContributionCache) -> ContributionCache:
    try:
        cache.evictions()
    except Exception as error:  # each client raises its own connection errors
        raise DatabaseUnavailableError(
            f"cannot reach cache {safe_url(cache.url)}: {safe_url(str(error))}"
        ) from None
    return cache


def contribution_key(tool: str, scope: str, job_id: str, batch: int) -> str:
    """A key both servers accept: scopes with other characters are hashed."""
    if not _SAFE_KEY.match(scope):
        scope = hashlib.sha1(scope.encode()).hexdigest()
    return f"precompute:{tool}:{scope}:{job_id}:{batch}"
