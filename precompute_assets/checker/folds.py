"""Ways of folding the batches: orders, groupings and other batch cuts, each of which must give
the report of the left fold in batch order; a failing one is shrunk to the fewest batches."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import combinations, islice
from typing import Any

from precompute_assets.checker.subject import ContractViolation, Subject
from precompute_assets.contract import Batch
from precompute_assets.core.plan import JobPlan, cut_on_keys, plan_shards

SHUFFLES = 5
SHRINK_SUBSETS = 2_000  # pairs, then triples, tried when shrinking a failing fold
SHRINK_REPORTS = 30  # finalise queries one shrink may spend before settling


@dataclass(frozen=True)
class Arrangement:
    """One way of folding the batches' contributions, applicable to any subset of them.

    Shrinking applies it to pairs and triples of batches to find the smallest that differs
    from the left fold in batch order.
    """

    property: str
    fold: Callable[[Sequence[int]], Any]  # the total of these batches, folded this way
    describe: Callable[[Sequence[int]], str]  # the case, e.g. "batches [3, 0] folded ..."


def order_agnostic(subject: Subject) -> tuple[int, str]:
    count = len(subject.batches)
    arrangements = [in_order(subject, lambda index: -index, "reversed")]
    for n in range(SHUFFLES):
        order = list(range(count))
        random.Random(subject.seed + n).shuffle(order)
        rank = {index: position for position, index in enumerate(order)}
        arrangements.append(in_order(subject, rank.__getitem__, f"shuffle {subject.seed + n}"))
    for arrangement in arrangements:
        check_arrangement(subject, arrangement)
    return len(arrangements), f"reversed and {SHUFFLES} seeded shuffles, left folds"


def batch_agnostic(subject: Subject) -> tuple[int, str]:
    size = subject.plan.batch_size
    sizes = sorted({max(1, size // 3), size * 3} - {size})
    cuts = [(f"{other:,}", recut(subject, other)) for other in sizes]
    if subject.plan.batch_starts is not None:
        cuts.append(
            (f"{size:,} cut evenly over the key range", replace(subject.plan, batch_starts=None))
        )
    described = []
    for label, plan in cuts:
        batches = [plan.batch(index) for index in range(plan.batch_count)]
        total = subject.fold(subject.scan_all(subject.tool, batches))
        difference = subject.difference(subject.reference_total, total)
        if difference is not None:
            raise shrink_cut(subject, plan, label, difference)
        described.append(f"{label} ({plan.batch_count})")
    return len(cuts), f"batch sizes (batches): {', '.join(described)}"


def recut(subject: Subject, size: int) -> JobPlan:
    """The subject's plan with batches of ``size``, cut as a job would cut them."""
    plan = subject.plan
    starts = cut_on_keys(subject.tool.catalogue, subject.connection, plan.scope, plan.extent, size)
    return replace(plan, batch_size=size, batch_starts=starts)


# -- folding and reports ----------------------------------------------------------------


def check_arrangement(subject: Subject, arrangement: Arrangement) -> None:
    everything = list(range(len(subject.batches)))
    difference = arranged_difference(subject, arrangement, everything)
    if difference is None:
        return
    budget = subject.reports_computed + SHRINK_REPORTS
    for subset in smaller_subsets(len(everything)):
        if subject.reports_computed >= budget:
            break
        smaller = arranged_difference(subject, arrangement, subset)
        if smaller is not None:
            raise ContractViolation(arrangement.property, arrangement.describe(subset), smaller)
    raise ContractViolation(arrangement.property, arrangement.describe(everything), difference)


def arranged_difference(
    subject: Subject, arrangement: Arrangement, indices: Sequence[int]
) -> str | None:
    """How folding ``indices`` this way changes their report from the left fold in order."""
    try:
        total = arrangement.fold(indices)
    except Exception as error:  # a merge that breaks in one arrangement breaks the property
        return f"merge raises {error!r}"
    return subject.difference(subject.fold_batches(indices), total)


def in_order(subject: Subject, rank: Callable[[int], int], label: str) -> Arrangement:
    def fold(indices: Sequence[int]) -> Any:
        return subject.fold_batches(sorted(indices, key=rank))

    def describe(indices: Sequence[int]) -> str:
        return (
            f"batches {sorted(indices, key=rank)} folded in this order ({label}) differ "
            f"from {sorted(indices)}"
        )

    return Arrangement("order-agnostic", fold, describe)


def right_fold(subject: Subject) -> Arrangement:
    def fold(indices: Sequence[int]) -> Any:
        total = subject.tool.empty()
        for index in reversed(indices):
            total = subject.tool.merge([subject.copy(subject.contributions[index]), total])
        return total

    return Arrangement("associative", fold, merged_as("a right fold"))


def balanced_tree(subject: Subject) -> Arrangement:
    def fold(indices: Sequence[int]) -> Any:
        if len(indices) <= 1:
            return subject.fold_batches(indices)
        middle = len(indices) // 2
        return subject.tool.merge([fold(indices[:middle]), fold(indices[middle:])])

    return Arrangement("associative", fold, merged_as("a balanced tree"))


def random_pairs(subject: Subject, seed: int) -> Arrangement:
    def fold(indices: Sequence[int]) -> Any:
        rng = random.Random(seed)
        totals = [subject.copy(subject.contributions[index]) for index in indices]
        while len(totals) > 1:  # neighbours only: grouping changes, order does not
            left = rng.randrange(len(totals) - 1)
            totals[left : left + 2] = [subject.tool.merge([totals[left], totals[left + 1]])]
        return (
            subject.tool.merge([subject.tool.empty(), totals[0]])
            if totals
            else subject.tool.empty()
        )

    return Arrangement("associative", fold, merged_as(f"random pairs (seed {seed})"))


def shards(subject: Subject, count: int) -> Arrangement:
    def groups(indices: Sequence[int]) -> list[list[int]]:
        shards = plan_shards(len(indices), count)
        return [list(indices[s.first_batch : s.last_batch + 1]) for s in shards]

    def fold(indices: Sequence[int]) -> Any:
        return subject.fold([subject.fold_batches(group) for group in groups(indices)])

    def describe(indices: Sequence[int]) -> str:
        return (
            f"batches {list(indices)} folded in {count} contiguous shards "
            f"{groups(indices)}, then merged, differ from one left fold"
        )

    return Arrangement("associative", fold, describe)


def shrink_cut(subject: Subject, plan: JobPlan, label: str, difference: str) -> ContractViolation:
    """The smallest other cut that changes the report: one batch split, or two joined."""
    budget = subject.reports_computed + SHRINK_REPORTS
    if plan.batch_size < subject.plan.batch_size:
        for batch, contribution in zip(subject.batches, subject.contributions, strict=True):
            if subject.reports_computed >= budget:
                break
            parts = split_batch(batch, 3)
            found = subject.difference(
                subject.fold([contribution]), subject.fold(subject.scan_all(subject.tool, parts))
            )
            if found is not None:
                ranges = ", ".join(f"{p.first_key}..{p.last_key}" for p in parts)
                case = (
                    f"batch {batch.index} (keys {batch.first_key}..{batch.last_key}) "
                    f"scanned as {len(parts)} batches (keys {ranges}) differs from it "
                    "scanned whole"
                )
                return ContractViolation("batch-agnostic", case, found)
    else:
        for first, second in zip(subject.batches, subject.batches[1:], strict=False):
            if subject.reports_computed >= budget:
                break
            joined = Batch(first.scope, first.index, first.first_key, second.last_key, first.params)
            found = subject.difference(
                subject.fold_batches([first.index, second.index]),
                subject.fold([subject.tool.scan(subject.connection, joined)]),
            )
            if found is not None:
                case = (
                    f"batches [{first.index}, {second.index}] scanned as one batch (keys "
                    f"{joined.first_key}..{joined.last_key}) differ from them scanned apart"
                )
                return ContractViolation("batch-agnostic", case, found)
    case = (
        f"batch size {label} ({plan.batch_count} batches) differs from "
        f"{subject.plan.batch_size:,} ({len(subject.batches)} batches)"
    )
    return ContractViolation("batch-agnostic", case, difference)


# -- threads ----------------------------------------------------------------------------


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` cut into up to ``parts`` contiguous key ranges."""
    span = batch.last_key - batch.first_key + 1
    step = max(1, math.ceil(span / parts))
    return [
        Batch(batch.scope, batch.index, first, min(batch.last_key, first + step - 1), batch.params)
        for first in range(batch.first_key, batch.last_key + 1, step)
    ]


def smaller_subsets(count: int) -> Iterator[tuple[int, ...]]:
    """Subsets of ``count`` batches to shrink a failing fold to, smallest first.

    Pairs, then triples (each up to ``SHRINK_SUBSETS``), then the first four batches or more,
    for failures that only show on the partial totals of several batches. Only prefixes are
    tried among the longer runs, to keep the folds a shrink costs in O(batches squared).
    """
    everything = range(count)
    yield from islice(combinations(everything, 2), SHRINK_SUBSETS)
    yield from islice(combinations(everything, 3), SHRINK_SUBSETS)
    for size in range(4, count):
        yield tuple(range(size))


def merged_as(shape: str) -> Callable[[Sequence[int]], str]:
    def describe(indices: Sequence[int]) -> str:
        return f"batches {list(indices)} merged as {shape} differ from the left fold"

    return describe
