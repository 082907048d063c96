"""The paper's graded-lexicographic subset codes (0-based, -1 = empty; docs/design.md#subset-codes)."""

from itertools import combinations

import pytest

from mmjax.latent.codes import all_subsets, code_from_subset, subset_from_code

N = 10
# docs/design.md#subset-codes: the prefix sets {1}, [2], ..., [10] (1-based) have these codes for n_s = 10.
PREFIX_CODES = [0, 10, 55, 175, 385, 637, 847, 967, 1012, 1022]


@pytest.mark.parametrize("k, code", list(enumerate(PREFIX_CODES, start=1)))
def test_prefix_codes(k, code):
    prefix = tuple(range(k))  # [k] in 0-based indices
    assert code_from_subset(prefix, N) == code
    assert subset_from_code(code, N) == prefix


@pytest.mark.parametrize("code, subset_1based", [(0, {1}), (10, {1, 2}), (1012, set(range(1, 10)))])
def test_rho_codes(code, subset_1based):
    assert subset_from_code(code, N) == tuple(sorted(i - 1 for i in subset_1based))
    assert code_from_subset([i - 1 for i in subset_1based], N) == code


def test_round_trip_all_subsets_in_combinations_order():
    expected = [c for size in range(1, N + 1) for c in combinations(range(N), size)]
    assert len(expected) == 2**N - 1 == 1023
    assert all_subsets(N) == expected
    for code, subset in enumerate(expected):
        assert subset_from_code(code, N) == subset
        assert code_from_subset(subset, N) == code


def test_round_trip_small_n():
    for n in range(1, 6):
        subsets = [c for size in range(1, n + 1) for c in combinations(range(n), size)]
        assert [subset_from_code(i, n) for i in range(len(subsets))] == subsets
        assert [code_from_subset(s, n) for s in subsets] == list(range(len(subsets)))


def test_code_from_subset_ignores_order_and_duplicates():
    assert code_from_subset([1, 0], N) == code_from_subset((0, 1), N) == 10
    assert code_from_subset([2, 2, 0, 1], N) == 55


def test_empty_set():
    assert subset_from_code(-1, N) == ()
    assert code_from_subset([], N) == -1
    assert code_from_subset((), N) == -1


@pytest.mark.parametrize("code", [-2, 1023, 5000])
def test_out_of_range_code_raises(code):
    with pytest.raises(ValueError):
        subset_from_code(code, N)


@pytest.mark.parametrize("subset", [(10,), (-1, 2), (0, 11)])
def test_out_of_range_indices_raise(subset):
    with pytest.raises(ValueError):
        code_from_subset(subset, N)
