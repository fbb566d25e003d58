"""Tool discovery, the contract checked at load time, plug-ins that fail alone, the report shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from precompute_assets import Remediation, ReportTool, UsageTool
from precompute_assets.contract import MalformedReportError
from precompute_assets.core.errors import ToolContractError, UnknownToolError
from precompute_assets.core.registry import (
    FAILED,
    discover,
    get_tool,
    load_tools,
    quick_check,
    register,
    validate_tool,
)
from precompute_assets.core.rows import validate_report
from precompute_assets.demo import Spaces
from tool_plugins.unused_fields import UnusedFields

PROJECT = Path(__file__).resolve().parents[1]


def test_builtin_tools_are_discovered_with_and_without_entry_points():
    with_entry_points = discover(autoload=True)
    assert set(with_entry_points.tools) == {"unused_fields", "unused_work_types"}
    assert all(
        e.origin.startswith("built-in: precompute-assets") for e in with_entry_points.entries
    )
    without = discover(autoload=False)
    assert set(without.tools) == {"unused_fields", "unused_work_types"}
    assert {e.origin for e in without.entries} == {
        "built-in: module tool_plugins.unused_fields",
        "built-in: module tool_plugins.unused_work_types",
    }


def test_tools_do_not_import_dagster():
    code = (
        "import tool_plugins.unused_fields, tool_plugins.unused_work_types, sys;"
        "print('dagster' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_tool_names_the_known_ones_and_a_long_name_is_cut():
    with pytest.raises(UnknownToolError, match=r"'nope'.*unused_fields"):
        get_tool(load_tools(autoload=False), "nope")
    with pytest.raises(UnknownToolError) as raised:
        get_tool(load_tools(autoload=False), "x" * 100_000)
    assert len(str(raised.value)) < 200


class _Incomplete(ReportTool[dict]):
    name = "incomplete"
    entity_type = "thing"
    catalogue = Spaces(counted="space_fields", limit=700)

    def scan(self, source, batch): ...


def test_a_tool_missing_methods_is_rejected_with_their_names():
    with pytest.raises(ToolContractError, match=r"_Incomplete.*does not implement.*empty.*merge"):
        validate_tool(_Incomplete, "test")


class _WrongArity(UnusedFields):
    name = "wrong_arity"

    def scan(self, batch):  # the contract passes (source, batch)
        return {}


def test_a_method_with_the_wrong_signature_is_rejected():
    with pytest.raises(ToolContractError, match=r"'wrong_arity': scan takes 2 arguments.*3"):
        validate_tool(_WrongArity)


class _NoCatalogue(UsageTool):
    name = "no_catalogue"
    entity_type = "thing"

    def scan(self, source, batch): ...
    def finalise(self, source, scope, total, params): ...


def test_a_tool_needs_a_scope_catalogue():
    with pytest.raises(
        ToolContractError, match=r"'no_catalogue' needs a class attribute catalogue"
    ):
        validate_tool(_NoCatalogue)


class _Unlabelled(Remediation):
    batch_size = 10

    def verify(self, source, scope, entities, params): ...
    def apply(self, source, scope, entities, params): ...
    def undo(self, source, scope, undo, params): ...


class _TwoArgumentUndo(_Unlabelled):
    action = "Remove"

    def undo(self, source, undo): ...


def _with_remediation(remediation: object) -> type:
    return type("_Acting", (UnusedFields,), {"name": "acting", "remediation": remediation})


@pytest.mark.parametrize(
    ("remediation", "problem"),
    [
        ("remove it", r"'acting': remediation must be a precompute_assets.Remediation instance"),
        (_Unlabelled(), r"'acting': its remediation needs an action"),
        (_TwoArgumentUndo(), r"'acting': remediation undo takes 3 arguments, the contract pas"),
    ],
)
def test_a_remediation_is_checked_when_its_tool_loads(remediation, problem):
    with pytest.raises(ToolContractError, match=problem):
        validate_tool(_with_remediation(remediation))
    labelled = _TwoArgumentUndo()
    labelled.batch_size = 0
    with pytest.raises(ToolContractError, match="batch_size must be a positive integer, got 0"):
        validate_tool(_with_remediation(labelled))


class _BadName(UnusedFields):
    name = "Bad Name"


def test_a_tool_name_must_be_snake_case():
    with pytest.raises(ToolContractError, match="snake_case"):
        validate_tool(_BadName)


class _Twin(UnusedFields):
    pass


def test_two_tools_with_one_name_are_an_error():
    with pytest.raises(ToolContractError, match="two tools are named 'unused_fields'"):
        register([("a", UnusedFields), ("b", _Twin)])


class _NotItsOwnIdentity(UnusedFields):
    name = "not_its_own_identity"

    def empty(self):
        return {"1": [1, None, 0, 0]}


class _SetsAreNotJson(UnusedFields):
    name = "sets_are_not_json"

    def empty(self):
        return set()


@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        (_NotItsOwnIdentity(), r"merge\(\[empty\(\), empty\(\)\]\) is .* not empty\(\)"),
        (_SetsAreNotJson(), r"empty\(\) is not a JSON value"),
    ],
)
def test_the_laws_that_need_no_source_are_checked_at_load(tool, problem):
    with pytest.raises(ToolContractError, match=problem):
        quick_check(tool)


# A package another team publishes, installed beside the framework: one of its tools misses
# merge, another breaks merge's identity, a third loads fine.
BROKEN_PACKAGE = """
from precompute_assets import ReportTool, UsageTool
from tool_plugins.unused_work_types import UnusedWorkTypes


class MissingMerge(ReportTool[dict]):
    name = "missing_merge"
    entity_type = "thing"
    catalogue = UnusedWorkTypes.catalogue

    def scan(self, source, batch):
        return {}

    def empty(self):
        return {}

    def finalise(self, source, scope, total, params):
        return None


class BadIdentity(UnusedWorkTypes):
    name = "bad_identity"

    def empty(self):
        return {"1": [1, None, 0, 0]}


class Fine(UnusedWorkTypes):
    name = "fine_work_types"
"""


@pytest.fixture
def broken_package(tmp_path) -> dict[str, str]:
    """The environment of a process with the package on its path, as pip would install it."""
    site = tmp_path / "site"
    (site / "other_tools").mkdir(parents=True)
    (site / "other_tools" / "__init__.py").write_text(BROKEN_PACKAGE)
    info = site / "other_tools-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-tools\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [precompute.tools]
            missing_merge = other_tools:MissingMerge
            bad_identity = other_tools:BadIdentity
            fine = other_tools:Fine
            not_there = other_tools:NotThere
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRECOMPUTE_")}
    return {**env, "PYTHONPATH": str(site), "PRECOMPUTE_HOME": str(tmp_path / "home")}


def test_a_broken_plugin_fails_alone_in_the_cli_and_the_code_location(broken_package):
    listed = subprocess.run(
        [sys.executable, "-m", "precompute_assets.cli", "tools"],
        env=broken_package,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {line.split()[0]: line for line in listed.splitlines()[2:]}
    assert set(lines) == {
        "bad_identity",
        "fine_work_types",
        "missing_merge",
        "not_there",
        "unused_fields",
        "unused_work_types",
    }
    assert (
        " failed " in lines["missing_merge"]
        and "does not implement merge" in lines["missing_merge"]
    )
    assert "package: other-tools 1.0, entry point missing_merge" in lines["missing_merge"]
    assert " failed " in lines["bad_identity"] and "not empty()" in lines["bad_identity"]
    assert " failed " in lines["not_there"] and "AttributeError" in lines["not_there"]
    assert " loaded " in lines["fine_work_types"] and " loaded " in lines["unused_fields"]

    location = (
        "import json; from precompute_assets.orchestration.definitions import defs;"
        "spec = [a for a in defs.assets if a.key.to_user_string() == 'precompute_tools'][0];"
        "print(json.dumps({'assets': sorted(a.key.to_user_string() for a in defs.assets),"
        " 'left_out': spec.metadata['left_out']}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", location],
        env=broken_package,
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT,
    )
    found = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert found == {
        "assets": [
            "fine_work_types_report",
            "precompute_tools",
            "unused_fields_report",
            "unused_work_types_report",
        ],
        "left_out": 3,
    }
    assert "tool missing_merge (package: other-tools 1.0" in loaded.stderr


def test_tools_are_disabled_by_name(monkeypatch):
    monkeypatch.setenv("PRECOMPUTE_DISABLED_TOOLS", "unused_work_types")
    registry = discover(autoload=False)
    assert set(registry.tools) == {"unused_fields"}
    [disabled] = [e for e in registry.entries if e.name == "unused_work_types"]
    assert disabled.status == "disabled" and "PRECOMPUTE_DISABLED_TOOLS" in disabled.problem
    assert not [e for e in registry.entries if e.status == FAILED]


def _rows(**overrides):
    rows = {
        "entity_id": ["1", "2"],
        "unused": [True, False],
        "usage_count": [0, 3],
        "last_used": [None, 1_700_000_000],
        "detail": [{"name": "a"}, None],
    }
    rows.update(overrides)
    return pd.DataFrame(rows)


def test_a_valid_report_is_normalised():
    rows = validate_report(UnusedFields(), "s", _rows())
    assert list(rows["entity_type"]) == ["field", "field"]
    assert pd.isna(rows["last_used"][0])
    assert rows["last_used"][1] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (_rows().drop(columns=["unused"]), r"missing columns \['unused'\]"),
        (_rows(entity_id=["1", "1"]), "entity_id not unique"),
        (_rows(unused=["yes", False]), "unused must be a boolean"),
        (_rows(usage_count=[-1, 2]), "usage_count must be a non-negative integer"),
        (_rows(usage_count=["x", 2]), "usage_count must be a non-negative integer"),
        (_rows(last_used=["not a time", None]), "last_used is not a time"),
        (_rows(detail=["text", None]), "detail must be"),
        ([("1", True)], "not a pandas DataFrame"),
    ],
)
def test_a_malformed_report_is_rejected_naming_tool_scope_and_fault(rows, problem):
    with pytest.raises(MalformedReportError, match=rf"'unused_fields', scope 's'.*{problem}"):
        validate_report(UnusedFields(), "s", rows)
