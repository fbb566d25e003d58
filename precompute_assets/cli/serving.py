"""``precompute serve`` and ``precompute keys``: the report service and its API keys."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from precompute_assets.core.db import create_engine_for
from precompute_assets.core.settings import ServiceSettings, Settings
from precompute_assets.core.text import format_table

APP = "precompute_assets.service.app:from_env"


def add_commands(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve reports over HTTP (reads the store alone; refreshes go through Dagster)",
    )
    serve.add_argument("--host", help="address to listen on (PRECOMPUTE_SERVICE_HOST)")
    serve.add_argument("--port", type=int, help="port (PRECOMPUTE_SERVICE_PORT)")
    serve.add_argument("--workers", type=int, help="processes (PRECOMPUTE_SERVICE_WORKERS)")
    serve.add_argument(
        "--access-log", action="store_true", help="log every request line (never its key)"
    )
    serve.set_defaults(command=serve_command)

    keys = commands.add_parser("keys", help="API keys of the report service")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a new key, printed once")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--tenant", help="the tenant whose scopes the key reads")
    owner.add_argument("--operator", action="store_true", help="a key that reads every tenant")
    create.add_argument("--name", default="", help="what the key is for (shown in listings)")
    create.set_defaults(command=create_key_command)
    listing = actions.add_parser("list", help="every key: id, tenant, name, created, revoked")
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    listing.set_defaults(command=list_keys_command)
    revoke = actions.add_parser("revoke", help="revoke a key by its id: it is refused at once")
    revoke.add_argument("key_id")
    revoke.set_defaults(command=revoke_key_command)


def serve_command(args: argparse.Namespace) -> int:
    settings = ServiceSettings.from_env()
    Settings.from_env()  # a bad setting fails here, naming it, before any worker starts
    overrides = {"host": args.host, "port": args.port, "workers": args.workers}
    names = ServiceSettings.variables()
    settings = settings.overridden({k: v for k, v in overrides.items() if v is not None}, names)
    run_service(APP, settings, access_log=args.access_log)
    return 0


def run_service(
    app: str, settings: ServiceSettings, *, access_log: bool = False, app_dir: str | None = None
) -> None:
    """uvicorn serving the app factory ``app`` ("module:function"), with its metrics shared by
    its worker processes, until it is stopped."""
    import uvicorn

    metrics_dir = tempfile.mkdtemp(prefix="precompute-metrics-")
    # Before prometheus_client is imported here or in any worker: it reads it at import.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(
        f"serving reports on http://{settings.host}:{settings.port} ({settings.workers} "
        f"worker(s); OpenAPI at /docs); refreshes through {settings.dagster_url}\n"
        f"admin pages: http://{settings.host}:{settings.port}/admin",
        flush=True,
    )
    try:
        uvicorn.run(
            app,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            # uvicorn[standard]'s C parser and event loop, named so that a missing one fails
            # here rather than falling back to the pure-Python ones at a fraction of the speed.
            loop="uvloop",
            http="httptools",
            access_log=access_log,
            app_dir=app_dir,
            log_level="info",
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _keys() -> Any:
    from precompute_assets.core.api_keys import ApiKeys

    return ApiKeys(create_engine_for(Settings.from_env().store_url))


def create_key_command(args: argparse.Namespace) -> int:
    from precompute_assets.core.registry import load_tools
    from precompute_assets.core.scope_index import ScopeIndex

    keys = _keys()
    tenant = None if args.operator else args.tenant
    if tenant is not None:
        index = ScopeIndex(keys.engine)
        if not any(index.scopes(tool, tenant) for tool in load_tools()):
            print(
                f"precompute: warning: no scope of tenant {tenant!r} is known yet (the sensors "
                "or a report will make it known); the key reads nothing until then",
                file=sys.stderr,
            )
    created, key = keys.create(args.name, tenant)
    whose = "an operator (every tenant)" if tenant is None else f"tenant {tenant}"
    print(f"created key {created.key_id} for {whose}; it is shown this once:", file=sys.stderr)
    print(key)
    return 0


def list_keys_command(args: argparse.Namespace) -> int:
    listed = _keys().list()
    if args.json:
        rows = [
            {
                "key_id": k.key_id,
                "tenant": k.tenant,
                "operator": k.operator,
                "name": k.name,
                "created_at": k.created_at,
                "revoked_at": k.revoked_at,
            }
            for k in listed
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [
            k.key_id,
            "(operator)" if k.operator else str(k.tenant),
            k.name or "-",
            _time(k.created_at),
            "-" if k.revoked_at is None else _time(k.revoked_at),
        ]
        for k in listed
    ]
    print(format_table(["key id", "tenant", "name", "created (UTC)", "revoked (UTC)"], table))
    return 0


def revoke_key_command(args: argparse.Namespace) -> int:
    key = _keys().revoke(args.key_id)
    print(f"key {key.key_id} revoked at {_time(key.revoked_at or 0)} UTC")
    return 0


def _time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
