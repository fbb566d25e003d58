"""Tool discovery, contract validation at load time, and the report shape check."""

import subprocess
import sys

import pandas as pd
import pytest

from precompute_assets.contract import MalformedReportError, ReportTool, validate_report
from precompute_assets.core.registry import (
    ToolContractError,
    UnknownToolError,
    get_tool,
    load_tools,
    register,
    validate_tool,
)
from tool_plugins.unused_fields import UnusedFields


def test_builtin_tools_are_discovered_with_and_without_entry_points():
    assert set(load_tools(autoload=False)) == {"unused_fields", "unused_work_types"}
    assert set(load_tools(autoload=True)) == {"unused_fields", "unused_work_types"}


def test_tools_do_not_import_dagster():
    code = (
        "import tool_plugins.unused_fields, tool_plugins.unused_work_types, sys;"
        "print('dagster' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_tool_names_the_known_ones():
    with pytest.raises(UnknownToolError, match=r"'nope'.*unused_fields"):
        get_tool(load_tools(autoload=False), "nope")


class _Incomplete(ReportTool[dict]):
    name = "incomplete"
    entity_type = "thing"

    def initialise(self, source, scope): ...
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
