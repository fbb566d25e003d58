"""``precompute migrate``: bring the store's schema to this release's revision."""

from __future__ import annotations

import argparse
from typing import Any

from precompute_assets.core.db import check_reachable, create_engine_for, safe_url
from precompute_assets.core.schema import migrate
from precompute_assets.core.settings import Settings


def add_commands(commands: Any) -> None:
    migrate_parser = commands.add_parser(
        "migrate", help="create or upgrade the store's schema (PRECOMPUTE_STORE_URL)"
    )
    migrate_parser.set_defaults(command=migrate_command)


def migrate_command(args: argparse.Namespace) -> int:
    url = Settings.from_env().store_url
    before, after = migrate(check_reachable(create_engine_for(url)))
    if before == after:
        print(f"the store at {safe_url(url)} is at revision {after} already")
    else:
        print(f"migrated the store at {safe_url(url)} from {before or 'nothing'} to {after}")
    return 0
