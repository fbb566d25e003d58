"""A Jira-like, multi-tenant demo source database, generated deterministically at any scale.

No Dagster here: the generator needs only numpy and SQLAlchemy, so tests, benchmarks and the
command line can build a source without the orchestrator. See ``generate`` for the data's
shape and the edge cases it guarantees, and ``schema`` for the tables.
"""

from precompute_assets.demo.source.generate import (
    FIELD_LIMIT,
    REFERENCE_TIME,
    WORK_TYPE_LIMIT,
    DemoScale,
    SourceSummary,
    generate_source,
    single_space_scale,
    touch_space,
)

__all__ = [
    "FIELD_LIMIT",
    "REFERENCE_TIME",
    "WORK_TYPE_LIMIT",
    "DemoScale",
    "SourceSummary",
    "generate_source",
    "single_space_scale",
    "touch_space",
]
