"""The contract checker on the real demo source: the built-in tools pass, broken tools are named.

Each broken tool below is a small subclass of a built-in tool that breaks exactly one property,
the way a tool author might by accident; the checker must name that property and the smallest
case that shows it. No mocks: every check scans and finalises against a generated SQLite source.
"""

from __future__ import annotations

import copy
import functools
import random
import re
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from precompute_assets.checker import (
    PROPERTIES,
    ContractViolation,
    assert_tool_obeys_contract,
    check_tool,
    format_check,
)
from precompute_assets.cli.main import main
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.reader import UnknownScopeError
from tool_plugins.unused_fields import UnusedFields
from tool_plugins.unused_work_types import UnusedWorkTypes


@pytest.fixture(scope="module")
def source(source_url: str) -> Iterator[Engine]:
    engine = create_engine_for(source_url, must_exist=True)
    yield engine
    engine.dispose()


@pytest.fixture
def cli_env(source_url, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRECOMPUTE_SOURCE_URL", source_url)
    monkeypatch.setenv("PRECOMPUTE_STORE_URL", sqlite_url(tmp_path / "reports.db"))
    monkeypatch.setenv("PRECOMPUTE_DISABLE_PLUGIN_AUTOLOAD", "1")


# -- the built-in tools -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["unused_fields", "unused_work_types"])
def test_builtin_tools_obey_the_contract(tools, source, name):
    result = assert_tool_obeys_contract(tools[name], source)

    assert result.ok and [check.property for check in result.checks] == list(PROPERTIES)
    assert all(check.result == "ok" and check.cases for check in result.checks)
    assert "largest" in result.why_scope and result.batch_count >= 6
    assert result.reports_computed == 2, "a passing tool costs two finalise queries"


@pytest.mark.parametrize("name", ["unused_fields", "unused_work_types"])
def test_check_tool_command_prints_what_it_checked_and_exits_0(cli_env, capsys, name):
    assert main(["check-tool", name]) == 0

    out = capsys.readouterr().out
    assert out.startswith(f"{name} on scope ") and "the largest of the first" in out
    for prop in PROPERTIES:
        assert re.search(rf"^{prop} .* ok$", out, re.MULTILINE), prop
    assert "all 9 properties hold" in out


def test_check_tool_command_checks_the_scope_it_is_given(cli_env, capsys, tools, source):
    with source.connect() as connection:
        scope = list(tools["unused_work_types"].catalogue.scopes(connection))[-2]
    assert main(["check-tool", "unused_work_types", "--scope", scope]) == 0
    assert f"on scope {scope} (as asked)" in capsys.readouterr().out


def test_unknown_tool_or_scope_is_the_usual_cli_error(cli_env, capsys):
    assert main(["check-tool", "nope"]) == 1
    assert "unknown tool 'nope'" in capsys.readouterr().err
    assert main(["check-tool", "unused_fields", "--scope", "no-such-space"]) == 1
    assert "unknown scope 'no-such-space'" in capsys.readouterr().err


def test_an_unknown_scope_raises_the_readers_error(source):
    with pytest.raises(UnknownScopeError, match="no-such-space"):
        check_tool(UnusedFields(), source, "no-such-space")


# -- broken tools, one property each ----------------------------------------------------------


class CountsItsScans(UnusedWorkTypes):
    """Not idempotent: a per-instance counter leaks into every count."""

    name = "counts_its_scans"
    scans = 0

    def scan(self, source, batch):
        self.scans += 1
        usage = super().scan(source, batch)
        return {key: [count + self.scans, *rest] for key, (count, *rest) in usage.items()}


class Pairwise:
    """A merge written for two accumulators (``merge_two``), folded over any number of them."""

    def merge(self, accumulators):
        return functools.reduce(self.merge_two, accumulators)

    def usage_merge(self, a, b):
        """The built-in merge of two usage accumulators, changing neither."""
        return UnusedWorkTypes.merge(self, [copy.deepcopy(a), copy.deepcopy(b)])


class FirstWriterWins(Pairwise, UnusedWorkTypes):
    """Not commutative: a key's value from the left contribution wins instead of adding up."""

    name = "first_writer_wins"

    def merge_two(self, a, b):
        return {**b, **a}


class AveragesCounts(Pairwise, UnusedWorkTypes):
    """Not associative: counts are averaged (commutative, with {} as identity)."""

    name = "averages_counts"

    def merge_two(self, a, b):
        merged = self.usage_merge(a, b)
        for key in a.keys() & b.keys():
            merged[key] = [(a[key][0] + b[key][0]) // 2, *merged[key][1:]]
        return merged


class StartsAtOne(UnusedWorkTypes):
    """Bad identity: empty() already counts one use of a work type."""

    name = "starts_at_one"

    def empty(self):
        return {"1": [1, None, 0, 0]}


class IntKeysAndTuples(Pairwise, UnusedWorkTypes):
    """Not serialisable: int keys and tuples, which the ledger's JSON turns into str and lists."""

    name = "int_keys_and_tuples"

    def scan(self, source, batch):
        return {int(key): tuple(value) for key, value in super().scan(source, batch).items()}

    def merge_two(self, a, b):
        lists = [{str(key): list(value) for key, value in c.items()} for c in (a, b)]
        return {int(key): tuple(value) for key, value in self.usage_merge(*lists).items()}

    def finalise(self, source, scope, total, params):
        total = {str(key): list(value) for key, value in total.items()}
        return super().finalise(source, scope, total, params)


class RemembersTheBatch(UnusedWorkTypes):
    """Not thread-safe: the batch is kept on self between being handed in and being scanned."""

    name = "remembers_the_batch"

    def scan(self, source, batch):
        self.current = batch
        time.sleep(0.002)
        return super().scan(source, self.current)


class Jitters(UnusedWorkTypes):
    """Not deterministic: every count depends on random."""

    name = "jitters"

    def scan(self, source, batch):
        usage = super().scan(source, batch)
        return {key: [count + random.randint(1, 9), *rest] for key, (count, *rest) in usage.items()}


class CountsBatchesNotItems(UnusedFields):
    """Not batch-agnostic: counts the batches a field has values in, so the cut shows through."""

    name = "counts_batches_not_items"

    def scan(self, source, batch):
        usage = super().scan(source, batch)
        return {key: [min(recent, 1), *rest] for key, (recent, *rest) in usage.items()}


class ForgetsAfterFourBatches(Pairwise, UnusedWorkTypes):
    """Not associative on partial totals only, as a merge that truncates big totals would be.

    A total of four batches or more ignores what is merged into it. Pairs and triples of single
    batches obey every law; only folds of five batches or more differ.
    """

    name = "forgets_after_four_batches"

    def scan(self, source, batch):
        return {**super().scan(source, batch), "batches": [batch.index]}

    def merge_two(self, a, b):
        batches = sorted(set(a.get("batches", [])) | set(b.get("batches", [])))
        full = len(a.get("batches", [])) >= 4
        usage = _usage(a) if full else self.usage_merge(_usage(a), _usage(b))
        return {**usage, "batches": batches} if batches else usage

    def finalise(self, source, scope, total, params):
        return super().finalise(source, scope, _usage(total), params)


def _usage(contribution: dict) -> dict:
    return {key: value for key, value in contribution.items() if key != "batches"}


BROKEN = [
    (CountsItsScans, "idempotent"),
    (FirstWriterWins, "commutative"),
    (AveragesCounts, "associative"),
    (StartsAtOne, "identity"),
    (IntKeysAndTuples, "serialisable"),
    (RemembersTheBatch, "thread-safe"),
    (Jitters, "deterministic"),
    (CountsBatchesNotItems, "batch-agnostic"),
    (ForgetsAfterFourBatches, "associative"),
]


@pytest.mark.parametrize(("tool_class", "broken"), BROKEN, ids=[b for _, b in BROKEN])
def test_a_broken_tool_is_caught_with_the_property_it_breaks(source, tool_class, broken):
    with pytest.raises(ContractViolation) as caught:
        assert_tool_obeys_contract(tool_class(), source)

    violation = caught.value
    assert violation.property == broken
    assert str(violation).startswith(f"{broken}: ")


def test_the_order_dependent_tool_is_shown_on_two_batches_and_their_report(source):
    with pytest.raises(ContractViolation) as caught:
        assert_tool_obeys_contract(FirstWriterWins(), source)

    violation = caught.value
    assert re.fullmatch(
        r"merge\(batch 0, batch 1\) differs from merge\(batch 1, batch 0\)", violation.case
    )
    # The contribution that differs, then what it does to the report of those two batches.
    usage = r"\[\d+, (\d+|None), \d+, \d+\]"
    assert re.search(rf"key '\d+': {usage}, expected {usage}", violation.difference)
    assert re.search(
        r"folded in this order differ from \[0, 1\]: entity \d+ usage_count \d+, expected \d+",
        violation.difference,
    )


@pytest.mark.parametrize(
    ("tool_class", "case"),
    [
        (CountsItsScans, r"batch 0 scanned a second time by the same tool instance"),
        (Jitters, r"batch 0 scanned by two independent runs"),
        (IntKeysAndTuples, r"batch 0's contribution through ledger.encode/decode"),
        (StartsAtOne, r"merge\(empty\(\), batch 0\) differs from batch 0"),
        (RemembersTheBatch, r"batches \[\d+, \d+\] scanned at once by 2 threads"),
        (
            ForgetsAfterFourBatches,
            r"batches \[0, 1, 2, 3, 4\] merged as a right fold differ from the left fold",
        ),
        (
            CountsBatchesNotItems,
            r"batch \d+ \(keys \d+\.\.\d+\) scanned as 3 batches \(keys .*\) differs from it "
            r"scanned whole",
        ),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_the_case_reported_is_the_smallest_found(source, tool_class, case):
    with pytest.raises(ContractViolation) as caught:
        assert_tool_obeys_contract(tool_class(), source)
    assert re.fullmatch(case, caught.value.case), caught.value.case


def test_serialisation_problems_are_said_in_words(source):
    with pytest.raises(ContractViolation) as caught:
        assert_tool_obeys_contract(IntKeysAndTuples(), source)
    assert re.match(
        r"the contribution has key \d+ \(int\), which JSON turns into '\d+'",
        caught.value.difference,
    )


def test_a_failed_check_lists_what_held_what_broke_and_what_did_not_run(source):
    result = check_tool(StartsAtOne(), source)

    assert not result.ok and result.violation.property == "identity"
    states = {check.property: check.result for check in result.checks}
    assert [states[p] for p in PROPERTIES[:4]] == ["ok"] * 4
    assert states["identity"] == "BROKEN"
    assert {states[p] for p in PROPERTIES[5:]} == {"not run"}
    text = format_check(result)
    assert re.search(r"^identity .* BROKEN$", text, re.MULTILINE)
    assert re.search(r"^commutative .* not run$", text, re.MULTILINE)
    assert f"BROKEN {result.violation}" in text
    assert text.count(result.violation.difference) == 1, "the difference is printed once"
