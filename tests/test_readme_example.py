"""The README's example tool loads, runs through Dagster and reports what its SQL says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import run_partition, source_connection

from precompute_assets.core.registry import register
from precompute_assets.orchestration.definitions import build_definitions

README = Path(__file__).resolve().parents[1] / "README.md"


# The complete example tool (the README's other Python blocks are excerpts).
[README_CODE] = [
    block
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    if "class StaleWorkTypes" in block
]


def _example_tool():
    namespace: dict = {}
    exec(compile(README_CODE, "README.md", "exec"), namespace)
    return namespace["StaleWorkTypes"]


def test_the_readme_tool_imports_only_public_names():
    imports = re.findall(r"^from (\S+) import (.+)$", README_CODE, flags=re.MULTILINE)
    ours = [(module, names) for module, names in imports if module.startswith("precompute")]
    assert ours == [
        ("precompute_assets", "Batch, Usage, UsageTool, count_uses, usage_of"),
        ("precompute_assets.demo", "Spaces"),
    ]


@pytest.mark.slow
def test_the_readme_tool_is_valid_and_runs(precompute, instance):
    tools = register([("README.md", _example_tool())])
    defs = build_definitions(tools, precompute)
    scope = "t1-s001"
    assert run_partition(defs, "stale_work_types", scope, instance).success

    header, rows = precompute.store().read("stale_work_types", scope)
    params = header.summary["params"]
    assert params["since"] % 86_400 == 0, "90 days back from a UTC midnight"
    with source_connection(precompute.source_url) as source:
        recent = dict(
            source.execute(
                sa.text(
                    "SELECT a.work_type_id, COUNT(w.id) FROM spaces s"
                    " JOIN space_work_types a ON a.space_id = s.id"
                    " LEFT JOIN work_items w ON w.space_id = s.id"
                    "  AND w.work_type_id = a.work_type_id"
                    "  AND w.created_at >= :since AND w.created_at <= :as_of"
                    " WHERE s.key = :scope GROUP BY a.work_type_id"
                ),
                {"scope": scope, "since": params["since"], "as_of": params["as_of"]},
            ).all()
        )
    assert dict(zip(rows["entity_id"], rows["usage_count"], strict=True)) == {
        str(work_type): count for work_type, count in recent.items()
    }
    assert set(rows.loc[rows["unused"], "entity_id"]) == {
        str(work_type) for work_type, count in recent.items() if count == 0
    }
