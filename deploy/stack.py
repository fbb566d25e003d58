"""The production-shaped stack on one machine, in the foreground: Ctrl-C stops all of it.

    python deploy/stack.py [--port 3000] [--scale demo|small]

Against the local PostgreSQL and Redis, as docs/deploy.md deploys it: the Dagster instance in
one database (``deploy/dagster.yaml``), the source, ledger and reports in another, batch
contributions in Redis. It creates the databases if missing, seeds a demo source into an empty
one, registers its scopes, then starts ``dagster-webserver``, ``dagster-daemon``, the report
service (``precompute serve``, two workers) and celery workers
(RabbitMQ on loopback as their broker), each in a process group of its own, with only environment
variables to configure them; large scopes' runs go to the workers.
It prints the UI's address once the webserver answers, and stops every server when interrupted
(SIGINT or SIGTERM) or when one of them exits.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import sqlalchemy as sa
from dagster import DagsterInstance
from processes import (
    Server,
    celery_worker_command,
    daemon_command,
    start_server,
    stop_servers,
    wait_for_celery_workers,
    webserver_command,
)

from precompute_assets.core.cache import cache_from_url, check_cache_reachable
from precompute_assets.core.db import create_databases
from precompute_assets.core.registry import load_tools
from precompute_assets.demo.source import DemoScale, generate_source
from precompute_assets.orchestration.runs import register_scopes

PROJECT = Path(__file__).resolve().parents[1]
SCALES = {
    "demo": DemoScale(),
    "small": DemoScale(tenants=2, spaces=4, work_items=4_000, seed=3),
}
READY_TIMEOUT_S = 120
BROKER = ("127.0.0.1", 5672)  # dagster-celery's default broker: RabbitMQ on this machine


class Stopped(Exception):
    """SIGINT or SIGTERM, turned into an exception so that the servers are stopped on the way
    out."""


@dataclass(frozen=True)
class StackConfig:
    home: Path
    server: sa.URL  # the PostgreSQL server, no database
    instance_db: str
    data_db: str
    cache_url: str
    port: int
    service_port: int
    scale: DemoScale
    workers: int

    def data_url(self) -> str:
        return self.server.set(database=self.data_db).render_as_string(hide_password=False)


def stack_env(config: StackConfig) -> dict[str, str]:
    """Everything the servers need, as a deployment sets it (docs/deploy.md lists each one)."""
    server = config.server
    return {
        **{
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("PRECOMPUTE_", "DAGSTER_"))
        },
        "DAGSTER_HOME": str(config.home),
        "DAGSTER_PG_USERNAME": server.username or "",
        "DAGSTER_PG_PASSWORD": server.password or "",
        "DAGSTER_PG_HOST": server.host or "",
        "DAGSTER_PG_PORT": str(server.port or 5432),
        "DAGSTER_PG_DB": config.instance_db,
        "PRECOMPUTE_HOME": str(config.home / "precompute"),
        "PRECOMPUTE_SOURCE_URL": config.data_url(),
        "PRECOMPUTE_STORE_URL": config.data_url(),
        "PRECOMPUTE_CACHE_URL": config.cache_url,
        "PRECOMPUTE_LARGE_SCOPE_EXECUTOR": "celery",
        "PRECOMPUTE_DAGSTER_URL": f"http://127.0.0.1:{config.port}",
    }


def prepare(config: StackConfig, env: Mapping[str, str]) -> None:
    """Databases, instance config, a demo source if the data database has none, its scopes."""
    create_databases(config.server, [config.instance_db, config.data_db])
    check_cache_reachable(cache_from_url(config.cache_url))
    check_broker_reachable()
    config.home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "deploy" / "dagster.yaml", config.home / "dagster.yaml")

    data = sa.create_engine(config.data_url())
    try:
        if not sa.inspect(data).has_table("spaces"):
            seeded = generate_source(config.data_url(), config.scale)
            print(f"seeded a demo source: {seeded.work_items:,} work items, {seeded.spaces} spaces")
        # This process reads the instance as the servers will: from the same environment.
        os.environ.update(env)
        with DagsterInstance.get() as instance, data.connect() as source:
            for tool in load_tools().values():
                register_scopes(instance, tool, sorted(tool.catalogue.scopes(source)))
    finally:
        data.dispose()


def check_broker_reachable() -> None:
    try:
        socket.create_connection(BROKER, timeout=5).close()
    except OSError as error:
        raise SystemExit(
            f"no celery broker at {BROKER[0]}:{BROKER[1]} ({error}): start RabbitMQ (guest/guest)"
        ) from None


def start(config: StackConfig, env: Mapping[str, str]) -> list[Server]:
    # Not "logs": Dagster keeps its telemetry queue there and moves the folder away.
    logs = config.home / "server-logs"
    commands = {
        "webserver": webserver_command(config.port),
        "daemon": daemon_command(),
        "service": [
            sys.executable, "-m", "precompute_assets.cli", "serve",
            "--host", "127.0.0.1", "--port", str(config.service_port), "--workers", "2",
        ],
        **{
            # Named after this stack's process: a worker name is unique on its broker.
            f"celery-worker-{n}": celery_worker_command(f"stack-{os.getpid()}-{n}")
            for n in range(config.workers)
        },
    }  # fmt: skip
    servers: list[Server] = []
    try:
        for name, args in commands.items():
            servers.append(start_server(name, args, env, logs, PROJECT))
    except BaseException:
        stop_all(servers)
        raise
    return servers


def wait_until_ready(port: int, servers: list[Server]) -> None:
    """The webserver answers ``/server_info``; every server is still running."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        check_running(servers)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the webserver did not answer in {READY_TIMEOUT_S}s")


def check_running(servers: list[Server]) -> None:
    for server in servers:
        if server.exit_code() is not None:
            raise RuntimeError(f"{server.name} exited with {server.exit_code()}\n{server.tail()}")


def stop_all(servers: list[Server]) -> None:
    """Workers and daemon signalled first, so that no new step starts while the webserver goes."""
    stop_servers(list(reversed(servers)))


def summary(config: StackConfig, env: Mapping[str, str], servers: list[Server]) -> str:
    exports = [
        f"export {name}={shlex.quote(value)}"
        for name, value in env.items()
        if name.startswith(("DAGSTER_", "PRECOMPUTE_"))
    ]
    return "\n".join(
        [
            f"Dagster UI: http://127.0.0.1:{config.port}",
            f"Report service: http://127.0.0.1:{config.service_port} (keys: `precompute keys "
            "create --tenant t1` with the exports below)",
            f"instance: database {config.instance_db}; source, ledger and reports: database "
            f"{config.data_db}; cache: {config.cache_url}",
            *(f"{s.name}: pid {s.process.pid}, log {s.log}" for s in servers),
            "The CLI on this stack (e.g. `precompute status unused_fields`) after:",
            *exports,
            "Ctrl-C stops the stack.",
        ]
    )


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def run(config: StackConfig) -> int:
    # SIGINT too: a shell starting the stack in the background leaves it ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _raise_stopped)
    env = stack_env(config)
    prepare(config, env)
    servers = start(config, env)
    try:
        wait_until_ready(config.port, servers)
        wait_for_celery_workers([s for s in servers if s.name.startswith("celery-worker")])
        print(summary(config, env, servers), flush=True)
        while True:
            check_running(servers)
            time.sleep(1)
    except Stopped as stopped:
        print(f"stopping the stack ({stopped})", flush=True)
        return 0
    finally:
        stop_all(servers)
        print("stack stopped", flush=True)


def parse_args(argv: list[str] | None = None) -> StackConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=PROJECT / ".stack", help="DAGSTER_HOME")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432",
        help="the PostgreSQL server (a SQLAlchemy URL without a database)",
    )
    parser.add_argument("--instance-db", default="precompute_stack", help="Dagster's database")
    parser.add_argument(
        "--data-db", default="precompute_stack_data", help="source, ledger and reports"
    )
    parser.add_argument("--cache", default="redis://127.0.0.1:6379/0", help="cache tier URL")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--service-port", type=int, default=8000, help="the report service")
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo")
    parser.add_argument("--workers", type=int, default=2, help="celery workers")
    args = parser.parse_args(argv)
    return StackConfig(
        home=args.home.resolve(),
        server=sa.make_url(args.postgres),
        instance_db=args.instance_db,
        data_db=args.data_db,
        cache_url=args.cache,
        port=args.port,
        service_port=args.service_port,
        scale=SCALES[args.scale],
        workers=args.workers,
    )


if __name__ == "__main__":
    sys.exit(run(parse_args()))
