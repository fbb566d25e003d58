"""Engines for every database the project owns: the source, the ledger and the report store.

SQLite files get WAL and a busy timeout, because shards write the ledger from several
processes at once and SQLite otherwise answers concurrent writers with "database is locked".
Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that a transaction that reads
before it writes waits for the lock instead of failing on the upgrade.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from precompute_assets.core.errors import DatabaseUnavailableError

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "precompute_write"
# The password of a URL of any scheme: scheme://user:PASSWORD@host
_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@")


def safe_url(url: str | URL) -> str:
    """The URL as it may be printed: its password masked, whatever its scheme."""
    if isinstance(url, URL):
        if url.get_backend_name() == "sqlite" and (url.database or "").startswith("file:"):
            url = url.set(database=url.database.removeprefix("file:"), query={})  # read-only
        return url.render_as_string(hide_password=True)
    return _PASSWORD.sub(r"\1***@", str(url))


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def missing_sqlite_file(url: str | URL) -> bool:
    """Whether ``url`` is an SQLite file that does not exist (yet)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return False
    return not Path(parsed.database).exists()


def create_databases(server: URL, names: list[str]) -> None:
    """Create each PostgreSQL database of ``server`` that does not exist yet; an existing one is
    used as it is."""
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            known = set(connection.exec_driver_sql("SELECT datname FROM pg_database").scalars())
            for name in names:
                if name not in known:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()


def create_engine_for(
    url: str | URL,
    *,
    must_exist: bool = False,
    read_only: bool = False,
    poolclass: type[sa.pool.Pool] | None = None,
) -> Engine:
    """An engine for ``url``; SQLite files are created with their folder, in WAL mode.

    With ``must_exist`` a missing SQLite file is an error rather than a new empty database. A
    ``read_only`` engine never writes: SQLite opens the file read-only (it must exist) and never
    takes a lock a writer holds; PostgreSQL sessions are read-only. ``poolclass`` replaces
    SQLAlchemy's default connection pool.
    """
    pooling = {} if poolclass is None else {"poolclass": poolclass}
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {}
        if read_only:
            # Beside any options the URL gives (a search_path, say), which this replaces.
            given = parsed.query.get("options", "")
            connect_args["options"] = f"{given} -c default_transaction_read_only=on".strip()
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, **pooling)
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if (must_exist or read_only) and missing_sqlite_file(parsed):
            raise DatabaseUnavailableError(
                f"cannot reach database {safe_url(parsed)}: no such file"
            )
        if read_only:
            parsed = parsed.set(
                database=f"file:{path.resolve()}", query={"mode": "ro", "uri": "true"}
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pooling
    )

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes the write lock up front on SQLite (a no-op elsewhere)."""
    with connect(engine) as connection:
        connection = connection.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            yield connection


def dialect_insert(connection: Connection):
    """The INSERT construct of the connection's dialect, which knows ``ON CONFLICT``."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


@contextmanager
def snapshot_transaction(engine: Engine) -> Iterator[Connection]:
    """A read transaction whose statements all see one snapshot (header and rows agree)."""
    with connect(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A connection whose connection failures name the database (password masked)."""
    try:
        connection = engine.connect()
    except sa.exc.OperationalError as error:
        raise unavailable(engine, error) from error
    with connection:
        yield connection


def unavailable(engine: Engine, error: Exception) -> DatabaseUnavailableError:
    """The error to raise when ``engine`` could not connect: its URL masked, the driver's reason
    on one line (drivers add hints on further lines)."""
    reason = " ".join(str(getattr(error, "orig", error)).split())
    return DatabaseUnavailableError(
        f"cannot reach database {safe_url(engine.url)}: {safe_url(reason)}"
    )


def check_reachable(engine: Engine) -> Engine:
    """The engine, once a connection to it succeeded; DatabaseUnavailableError otherwise."""
    with connect(engine) as connection:
        connection.exec_driver_sql("SELECT 1")
    return engine
