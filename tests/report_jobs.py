"""The framework's report jobs as pointers that step processes on other hosts can follow.

A multiprocess, celery or Kubernetes step rebuilds its job from a code pointer rather than
receiving it; ``report_job(**settings)`` is that pointer for the built-in tools, with the data's
whereabouts passed along instead of read from a shared environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import JobDefinition, RetryPolicy, build_reconstructable_job

from precompute_assets.definitions import build_definitions, report_job_name
from precompute_assets.registry import load_tools
from precompute_assets.resources import PrecomputeResource

if TYPE_CHECKING:
    from dagster._core.definitions.reconstruct import ReconstructableJob


def make_report_job(tool: str, max_retries: int = 0, **precompute: Any) -> JobDefinition:
    tools = load_tools()
    defs = build_definitions(
        tools, PrecomputeResource(**precompute), RetryPolicy(max_retries=max_retries)
    )
    return defs.resolve_job_def(report_job_name(tools[tool]))


def report_job(tool: str, **kwargs: Any) -> ReconstructableJob:
    """A pointer to ``make_report_job(tool, **kwargs)``."""
    # The folder is named: Dagster drops sys.path[0] (pytest's tests/) when it imports the module.
    return build_reconstructable_job(
        __name__,
        make_report_job.__name__,
        reconstructable_args=(tool,),
        reconstructable_kwargs=kwargs,
        reconstructor_working_directory=str(Path(__file__).resolve().parent),
    )
