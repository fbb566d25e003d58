"""Signed-in sessions of the admin pages: an admin signs in with their tenant's API key once, and
the browser holds a session cookie instead of the key.

A session token is 32 random bytes; the store keeps its SHA-256 only (as it keeps keys), with
the key's id, a CSRF token for the session's forms, and when it expires. Revoking the key ends
its sessions at once: every lookup joins the key and checks it is not revoked.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Engine

from precompute_assets.core.api_keys import ApiKey, key_hash
from precompute_assets.core.db import connect, write_transaction
from precompute_assets.core.schema import (
    admin_sessions,
    api_keys,
    check_store_schema,
    create_store_schema,
)

SESSION_S = 8 * 3_600  # a working day


@dataclass(frozen=True)
class AdminSession:
    """A signed-in admin: their key (never the key itself) and the session's CSRF token."""

    key: ApiKey
    csrf_token: str
    expires_at: float


class AdminSessions:
    """Sessions in the store's ``precompute_admin_sessions`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, key: ApiKey, now: float | None = None) -> tuple[str, AdminSession]:
        """A new session for ``key``: the token for the cookie (shown only here), and it."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        session = AdminSession(key, secrets.token_urlsafe(32), now + SESSION_S)
        create_store_schema(self.engine)
        with write_transaction(self.engine) as connection:
            connection.execute(admin_sessions.delete().where(admin_sessions.c.expires_at < now))
            connection.execute(
                admin_sessions.insert().values(
                    session_hash=key_hash(token),
                    key_id=key.key_id,
                    csrf_token=session.csrf_token,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
        return token, session

    def find(self, token: str, now: float | None = None) -> AdminSession | None:
        """The live session of ``token``: not expired, its key not revoked."""
        now = time.time() if now is None else now
        joined = admin_sessions.join(api_keys, api_keys.c.key_id == admin_sessions.c.key_id)
        query = (
            sa.select(
                api_keys.c.key_id,
                api_keys.c.tenant,
                api_keys.c.name,
                api_keys.c.created_at,
                admin_sessions.c.csrf_token,
                admin_sessions.c.expires_at,
            )
            .select_from(joined)
            .where(
                (admin_sessions.c.session_hash == key_hash(token))
                & (admin_sessions.c.expires_at > now)
                & api_keys.c.revoked_at.is_(None)
            )
        )
        with connect(self.engine) as connection:
            if not check_store_schema(connection):
                return None
            row = connection.execute(query).first()
        if row is None:
            return None
        return AdminSession(ApiKey(*row[:4]), row.csrf_token, row.expires_at)

    def end(self, token: str) -> None:
        create_store_schema(self.engine)
        with write_transaction(self.engine) as connection:
            connection.execute(
                admin_sessions.delete().where(admin_sessions.c.session_hash == key_hash(token))
            )
