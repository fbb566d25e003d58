"""API keys of the report service: one tenant's, or an operator's (every tenant).

A key is 32 random bytes (256 bits) from ``secrets``, shown once when it is created; the store
keeps its SHA-256 only. A slow password hash (bcrypt, argon2) protects guessable passwords against
a stolen table; a 256-bit random key cannot be guessed, so a fast hash is as safe, and it lets the
service find a key by its hash in one indexed lookup per request. The key's id, in the key and
in listings, names it without revealing it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Engine

from precompute_assets.core.db import connect, write_transaction
from precompute_assets.core.errors import UnknownKeyError
from precompute_assets.core.schema import api_keys, check_store_schema, create_store_schema
from precompute_assets.core.text import shorten

PREFIX = "pcr"


@dataclass(frozen=True)
class ApiKey:
    """A key as the store knows it: never the key itself."""

    key_id: str
    tenant: str | None  # None: an operator's key
    name: str
    created_at: float
    revoked_at: float | None = None

    @property
    def operator(self) -> bool:
        return self.tenant is None

    def sees(self, tenant: str | None) -> bool:
        """Whether this key may read a scope of ``tenant``."""
        return self.operator or (tenant is not None and tenant == self.tenant)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Create, list and revoke keys in the store's ``precompute_api_keys`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, tenant: str | None) -> tuple[ApiKey, str]:
        """A new key for ``tenant`` (None: an operator's); the key itself is returned only here."""
        key_id = secrets.token_hex(4)
        key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        created = ApiKey(key_id, tenant, name, time.time())
        create_store_schema(self.engine)
        with write_transaction(self.engine) as connection:
            connection.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    key_hash=key_hash(key),
                    tenant=tenant,
                    name=name,
                    created_at=created.created_at,
                )
            )
        return created, key

    def list(self) -> list[ApiKey]:
        with connect(self.engine) as connection:
            if not check_store_schema(connection):
                return []
            rows = connection.execute(_COLUMNS.order_by(api_keys.c.created_at))
            return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its id (a revoked key stays listed); UnknownKeyError if none."""
        create_store_schema(self.engine)
        with write_transaction(self.engine) as connection:
            row = connection.execute(_COLUMNS.where(api_keys.c.key_id == key_id)).first()
            if row is None:
                raise UnknownKeyError(
                    f"no API key {shorten(key_id)!r}: `precompute keys list` shows them"
                )
            key = ApiKey(*row)
            if key.revoked_at is None:
                key = ApiKey(*row[:-1], revoked_at=time.time())
                connection.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key_id)
                    .values(revoked_at=key.revoked_at)
                )
        return key


_COLUMNS = sa.select(
    api_keys.c.key_id,
    api_keys.c.tenant,
    api_keys.c.name,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)
# A key's record by the hash of the key (its ``revoked_at`` last).
key_lookup = _COLUMNS.where(api_keys.c.key_hash == sa.bindparam("key_hash"))
