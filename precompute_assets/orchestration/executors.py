"""One executor for every report job, chosen per run through run config.

A small scope runs in-process: on the measured machine a step process costs more than a shard's
scan gains from it (bench/results.json). A large scope gets the multiprocess executor or, where
celery workers serve the deployment, ``dagster-celery``'s. The refresh sensor, the discovery
sensor and the baseline schedule pick one from the entity count of the scope's last plan::

    execution:
      config:
        in_process: {}          # or multiprocess: {...}, or celery: {broker: ..., backend: ...}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import (
    Executor,
    ExecutorDefinition,
    Field,
    InitExecutorContext,
    Selector,
    executor,
    in_process_executor,
    multiple_process_executor_requirements,
    multiprocess_executor,
)
from dagster_celery import celery_executor

from precompute_assets.core.settings import ExecutorSettings

EXECUTORS: dict[str, ExecutorDefinition] = {
    "in_process": in_process_executor,
    "multiprocess": multiprocess_executor,
    "celery": celery_executor,
}
# Step processes fork from a server that has imported the framework and the tools once, instead
# of each importing them anew (spawn).
FORKSERVER = {"forkserver": {"preload_modules": ["precompute_assets.orchestration.definitions"]}}


def _requirements(config: dict[str, Any]) -> list[Any]:
    return [] if "in_process" in config else multiple_process_executor_requirements()


@executor(
    name="precompute_executor",
    config_schema=Field(
        Selector(
            {name: definition.config_schema.as_field() for name, definition in EXECUTORS.items()}
        ),
        default_value={"in_process": {}},
        description="in_process (default), multiprocess or celery, with that executor's config.",
    ),
    requirements=_requirements,
)
def precompute_executor(init_context: InitExecutorContext) -> Executor:
    [(name, config)] = init_context.executor_config.items()
    chosen = EXECUTORS[name]
    return chosen.executor_creation_fn(
        InitExecutorContext(
            job=init_context.job,
            executor_def=chosen,
            executor_config=config,
            instance=init_context.instance,
        )
    )


def concurrent_steps(run_config: Mapping[str, Any]) -> int | None:
    """How many steps a run of ``precompute_executor`` runs at once, from its run config: one
    in-process (the default), the multiprocess executor's ``max_concurrent`` (unset or 0: one
    per CPU, as Dagster's), None for celery (its workers decide)."""
    chosen = (run_config.get("execution") or {}).get("config") or {"in_process": {}}
    [(name, config)] = chosen.items()
    if name == "in_process":
        return 1
    if name == "multiprocess":
        return (config or {}).get("max_concurrent") or os.cpu_count() or 1
    return None


def executor_for(entity_count: int | None, settings: ExecutorSettings) -> str:
    """``in_process`` below the large-scope threshold (or with no plan yet), else the setting's."""
    if entity_count is None or entity_count < settings.large_scope_entities:
        return "in_process"
    return settings.large_scope_executor


def execution_run_config(name: str, settings: ExecutorSettings) -> dict[str, Any]:
    """The ``execution`` section of a run's config that selects executor ``name``."""
    config: dict[str, Any] = {}
    if name == "multiprocess":
        config = {"start_method": FORKSERVER}
    elif name == "celery":
        # By the variable's name: a broker URL may hold a password, which a run's config keeps.
        config = {
            key: {"env": variable}
            for key, variable, value in (
                ("broker", "PRECOMPUTE_CELERY_BROKER", settings.celery_broker),
                ("backend", "PRECOMPUTE_CELERY_BACKEND", settings.celery_backend),
            )
            if value
        }
    return {"execution": {"config": {name: config}}}
