"""Long-running servers (webserver, daemon, celery workers) started and stopped as a whole.

Each server leads a process group of its own, which holds what it spawns (code servers, run
workers, step processes): stopping the group leaves nothing behind, and a Ctrl-C meant for the
launcher does not reach the servers half-way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 15
WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"
BIN = Path(sys.executable).parent  # this environment's console scripts
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Server:
    """One started server: its process (the leader of its own group) and its log file."""

    name: str
    process: subprocess.Popen
    log: Path

    def exit_code(self) -> int | None:
        return self.process.poll()

    def tail(self, chars: int = 4_000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        text = ANSI_ESCAPE.sub("", text)
        return f"--- last {chars} characters of {self.name} ({self.log}) ---\n{text[-chars:]}"


def webserver_command(port: int, workspace: Path = WORKSPACE) -> list[str]:
    """``dagster-webserver`` on ``workspace``, listening on loopback at ``port``."""
    return [
        *(str(BIN / "dagster-webserver"), "-w", str(workspace)),
        *("-h", "127.0.0.1", "-p", str(port)),
    ]


def daemon_command(workspace: Path = WORKSPACE) -> list[str]:
    """``dagster-daemon run`` on ``workspace``: it starts queued runs and ticks the sensors."""
    return [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]


def start_server(
    name: str, args: Sequence[str], env: Mapping[str, str], logs: Path, cwd: Path
) -> Server:
    """Start ``args`` in a new session, its output in ``logs/<name>.log``.

    Output goes to a file: a pipe nobody reads could fill and block the server.
    """
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, process, log)


@contextmanager
def server_group(
    name: str, args: Sequence[str], env: Mapping[str, str], logs: Path, cwd: Path
) -> Iterator[Server]:
    """``start_server``, and on exit ``stop_server``."""
    server = start_server(name, args, env, logs, cwd)
    try:
        yield server
    finally:
        stop_server(server)


def stop_server(server: Server, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's group, give it a grace period, then SIGKILL whatever is left of it."""
    stop_servers([server], grace_s)


def stop_servers(servers: Sequence[Server], grace_s: float = STOP_GRACE_S) -> None:
    """``stop_server`` for all of them at once, in the given order, sharing one grace period:
    stopping them one after another could take a grace period each."""
    for server in servers:
        _signal_group(server.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(s.process.pid) for s in servers):
        for server in servers:
            server.process.poll()  # reap the leader so that it does not count as alive
        time.sleep(0.2)
    for server in servers:
        _signal_group(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=grace_s)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def celery_worker_command(name: str) -> list[str]:
    """A dagster-celery worker taking one step at a time from the ``dagster`` queue.

    The broker is dagster-celery's default: RabbitMQ at ``DAGSTER_CELERY_BROKER_HOST``.
    """
    return [
        sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker",
        "-Q", "dagster", "--concurrency", "1", "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--loglevel", "INFO",
    ]  # fmt: skip


def wait_for_celery_workers(workers: Sequence[Server], timeout_s: float = 60) -> None:
    """Until every worker has logged that it is ready; fails if one exits first."""
    deadline = time.monotonic() + timeout_s
    while not all(" ready." in worker.tail() for worker in workers):
        for worker in workers:
            if worker.exit_code() is not None:
                raise RuntimeError(f"celery worker exited {worker.exit_code()}\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"celery workers not ready in {timeout_s:.0f}s\n{workers[0].tail()}")
        time.sleep(0.5)
