"""The laws of ``merge``: ``empty()`` its identity, commutative, associative."""

from __future__ import annotations

import random
from itertools import combinations

from precompute_assets.checker.folds import (
    balanced_tree,
    check_arrangement,
    random_pairs,
    right_fold,
    shards,
)
from precompute_assets.checker.subject import ContractViolation, Subject
from precompute_assets.checker.values import _same, _value_difference

RANDOM_PAIRINGS = 3
LAW_CASES = 60  # pairs and triples of batches on which merge laws are checked directly


def identity(subject: Subject) -> tuple[int, str]:
    tool = subject.tool
    cases = [*enumerate(subject.contributions), (-1, tool.empty())]
    for index, contribution in cases:
        name = "empty()" if index < 0 else f"batch {index}"
        second = subject.copy(contribution)
        for label, merged in (
            (f"merge(empty(), {name})", tool.merge([tool.empty(), second])),
            (f"merge({name}, empty())", tool.merge([subject.copy(contribution), tool.empty()])),
        ):
            if not _same(second, contribution):
                raise ContractViolation(
                    "identity",
                    f"merge(empty(), {name}) changed {name}, its second accumulator",
                    f"{_value_difference(contribution, second)}; merge may change only its "
                    "first accumulator",
                )
            if not _same(merged, contribution):
                raise ContractViolation(
                    "identity",
                    f"{label} differs from {name}",
                    f"{_value_difference(contribution, merged)}; "
                    + subject.consequence_of_totals(contribution, merged),
                )
    return 2 * len(cases), "merge(empty(), c) == c == merge(c, empty()), every batch"


def commutative(subject: Subject) -> tuple[int, str]:
    pairs = _pairs(len(subject.batches), random.Random(subject.seed), LAW_CASES)
    for i, j in pairs:
        forward, backward = subject.merge_pair(i, j), subject.merge_pair(j, i)
        if not _same(forward, backward):
            raise ContractViolation(
                "commutative",
                f"merge(batch {i}, batch {j}) differs from merge(batch {j}, batch {i})",
                f"{_value_difference(backward, forward)}; batches [{j}, {i}] folded in this "
                f"order differ from [{i}, {j}]: {subject.subset_consequence([i, j], [j, i])}",
            )
    return len(pairs), "merge(a, b) == merge(b, a) on pairs of batches"


def associative(subject: Subject) -> tuple[int, str]:
    triples = _triples(len(subject.batches), random.Random(subject.seed), LAW_CASES)
    for i, j, k in triples:
        left = subject.tool.merge(
            [subject.merge_pair(i, j), subject.copy(subject.contributions[k])]
        )
        right = subject.tool.merge(
            [subject.copy(subject.contributions[i]), subject.merge_pair(j, k)]
        )
        if not _same(left, right):
            raise ContractViolation(
                "associative",
                f"merge(merge(batch {i}, batch {j}), batch {k}) differs from "
                f"merge(batch {i}, merge(batch {j}, batch {k}))",
                f"{_value_difference(right, left)}; " + subject.consequence_of_totals(right, left),
            )
    arrangements = [right_fold(subject), balanced_tree(subject)]
    arrangements += [random_pairs(subject, subject.seed + n) for n in range(RANDOM_PAIRINGS)]
    shard_counts = sorted({2, 3, subject.max_shards} & set(range(2, len(subject.batches))))
    arrangements += [shards(subject, count) for count in shard_counts]
    for arrangement in arrangements:
        check_arrangement(subject, arrangement)
    how = (
        f"triples; right fold, tree, {RANDOM_PAIRINGS} random groupings, "
        f"{'/'.join(map(str, shard_counts)) or 'no'} shards"
    )
    return len(triples) + len(arrangements), how


def _pairs(count: int, rng: random.Random, limit: int) -> list[tuple[int, int]]:
    """Neighbours first (the smallest indices fail first), then random pairs, up to ``limit``."""
    every = list(combinations(range(count), 2))
    if len(every) <= limit:
        return every
    chosen = dict.fromkeys([(i, i + 1) for i in range(count - 1)][: limit // 2])
    chosen[(0, count - 1)] = None
    while len(chosen) < limit:
        i, j = sorted(rng.sample(range(count), 2))
        chosen[(i, j)] = None
    return list(chosen)


def _triples(count: int, rng: random.Random, limit: int) -> list[tuple[int, int, int]]:
    """Consecutive triples first, then random ones (in batch order), up to ``limit``."""
    every = list(combinations(range(count), 3))
    if len(every) <= limit:
        return every
    chosen = dict.fromkeys([(i, i + 1, i + 2) for i in range(count - 2)][: limit // 2])
    while len(chosen) < limit:
        i, j, k = sorted(rng.sample(range(count), 3))
        chosen[(i, j, k)] = None
    return list(chosen)
