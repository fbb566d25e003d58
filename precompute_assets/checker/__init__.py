"""The contract checker: Apache Beam's ``CombineFnTester`` for report tools.

``check`` runs the properties in order on one scope of a real source: ``scanning`` (the
properties of ``scan``), ``laws`` (of ``merge`` and ``empty``), ``folds`` (orders, groupings,
batch cuts, and shrinking a failure to its smallest case); ``subject`` holds the tool's
reference run and ``values`` says how two accumulators or reports differ.
"""

from precompute_assets.checker.check import (
    PROPERTIES,
    CheckResult,
    PropertyCheck,
    assert_tool_obeys_contract,
    check_tool,
    format_check,
)
from precompute_assets.checker.subject import ContractViolation

__all__ = [
    "PROPERTIES",
    "CheckResult",
    "ContractViolation",
    "PropertyCheck",
    "assert_tool_obeys_contract",
    "check_tool",
    "format_check",
]
