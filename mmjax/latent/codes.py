"""The paper's integer codes for subsets of [n]: graded-lexicographic enumeration, 0-based."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import combinations

EMPTY_CODE = -1


def num_subset_codes(n: int) -> int:
    """Number of non-empty subsets of an n-set, i.e. one past the largest valid code."""
    return 2**n - 1


def subset_from_code(code: int, n: int) -> tuple[int, ...]:
    """0-based sorted indices of the subset with this graded-lexicographic code (-1 is the empty set)."""
    if code == EMPTY_CODE:
        return ()
    if not 0 <= code < num_subset_codes(n):
        top = num_subset_codes(n) - 1
        raise ValueError(f"subset code {code} out of range: allowed -1 (empty) to {top} for n={n}")
    rest = code
    for size in range(1, n + 1):
        count = math.comb(n, size)
        if rest < count:
            return _unrank_combination(rest, n, size)
        rest -= count
    raise AssertionError("unreachable")


def code_from_subset(indices: Iterable[int], n: int) -> int:
    """Graded-lexicographic code of a set of 0-based indices (the empty set is -1)."""
    subset = sorted(set(indices))
    if not subset:
        return EMPTY_CODE
    if subset[0] < 0 or subset[-1] >= n:
        raise ValueError(f"subset {subset} has indices outside 0..{n - 1}")
    size = len(subset)
    offset = sum(math.comb(n, k) for k in range(1, size))
    return offset + _rank_combination(subset, n)


def _rank_combination(subset: Sequence[int], n: int) -> int:
    """Position of a sorted k-combination in itertools.combinations(range(n), k) order."""
    k, rank, prev = len(subset), 0, -1
    for pos, value in enumerate(subset):
        for skipped in range(prev + 1, value):
            rank += math.comb(n - 1 - skipped, k - 1 - pos)
        prev = value
    return rank


def _unrank_combination(rank: int, n: int, k: int) -> tuple[int, ...]:
    """Inverse of _rank_combination."""
    out, start = [], 0
    for pos in range(k):
        for value in range(start, n):
            block = math.comb(n - 1 - value, k - 1 - pos)
            if rank < block:
                out.append(value)
                start = value + 1
                break
            rank -= block
    return tuple(out)


def all_subsets(n: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of range(n) in code order (used by tests as the definition)."""
    return [c for size in range(1, n + 1) for c in combinations(range(n), size)]
