"""Modality-gap metrics on constructed embeddings with answers worked out by hand."""

import jax
import numpy as np
import pytest

from mmjax.eval import gap

# float32 unit roundoff. A row normalised in float32 is off by at most (d + 3)·U per component: d·U
# from its sum of squares, 2U from the square root (even XLA's rsqrt-plus-Newton is within 1 ulp), U
# from the division. A sum of n terms errs by at most (n - 1)·U·Σ|terms| (Higham, Accuracy and
# Stability of Numerical Algorithms, eq. 4.4). The bounds below are built from these two facts.
U = float(np.finfo(np.float32).eps) / 2


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_l2_normalize_unit_rows_and_zero_row_stays_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(gap.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], rtol=0, atol=(2 + 3) * U)


def test_identical_modalities_have_no_gap():
    n, d = 16, 8
    x = _random(n, d, 0)
    # Scaling a row does not move its normalised embedding.
    y = x * np.linspace(0.5, 3.0, n, dtype=np.float32)[:, None]
    # In float32 the two normalised rows differ by at most (2d + 7)·U per component (y's own rounding,
    # then two normalisations); averaging n rows adds 2(n - 1)·U per component (unit-norm rows).
    per_row = np.sqrt(d) * (2 * d + 7) * U
    centroid = np.sqrt(d) * (2 * d + 7 + 2 * (n - 1)) * U
    assert float(gap.centroid_distance(x, y)) == pytest.approx(0.0, abs=centroid)
    assert float(gap.mean_paired_distance(x, y)) == pytest.approx(0.0, abs=per_row)
    assert float(gap.alignment(x, y)) == pytest.approx(0.0, abs=per_row**2)


def test_antipodal_clusters():
    # Every row is an integer multiple of e1: normalising, averaging and the distances are exact in
    # float32 up to the final log/exp, so 1e-6 (about 8 ulp of the values 2 and 4) is ample.
    e1 = np.zeros((1, 4), np.float32)
    e1[0, 0] = 1.0
    scales = np.arange(1, 7, dtype=np.float32)[:, None]
    img, txt = scales * e1, -2.0 * scales * e1
    assert float(gap.centroid_distance(img, txt)) == pytest.approx(2.0, abs=1e-6)
    assert float(gap.mean_paired_distance(img, txt)) == pytest.approx(2.0, abs=1e-6)
    assert float(gap.alignment(img, txt)) == pytest.approx(4.0, abs=1e-5)
    assert float(gap.alignment(img, txt, alpha=1.0)) == pytest.approx(2.0, abs=1e-6)
    # A cluster is a single direction: every pair has cosine 1 and distance 0.
    assert float(gap.mean_cosine(img)) == pytest.approx(1.0, abs=1e-6)
    assert float(gap.uniformity(img)) == pytest.approx(0.0, abs=1e-6)


def test_alignment_of_orthogonal_pairs():
    # ‖e_i − e_j‖ = √2 for i ≠ j, so alignment is 2 and the paired distance √2.
    eye = np.eye(6, dtype=np.float32)
    shifted = np.roll(eye, 1, axis=0)
    assert float(gap.alignment(eye, shifted)) == pytest.approx(2.0, abs=1e-6)
    assert float(gap.mean_paired_distance(eye, shifted)) == pytest.approx(np.sqrt(2), abs=1e-6)


def test_uniformity_by_hand():
    # Exact inputs (unit rows after normalisation, squared distances 2 and 4); the only rounding is in
    # exp, logsumexp and log, a few ulp of values up to 8: 1e-5 is over 10 ulp (ulp(8) = 9.5e-7).
    two = np.array([[2.0, 0.0], [0.0, 0.5]], np.float32)  # orthogonal: squared distance 2
    assert float(gap.uniformity(two)) == pytest.approx(-4.0, abs=1e-5)
    assert float(gap.uniformity(two, t=1.0)) == pytest.approx(-2.0, abs=1e-5)
    three = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)  # squared distances 2, 2, 4
    expected = np.log((2 * np.exp(-4.0) + np.exp(-8.0)) / 3.0)
    assert float(gap.uniformity(three)) == pytest.approx(expected, abs=1e-5)


def test_mean_cosine_values():
    assert float(gap.mean_cosine(np.tile([[1.0, 2.0, 2.0]], (5, 1)))) == pytest.approx(1.0, abs=1e-6)
    assert float(gap.mean_cosine(np.eye(5, dtype=np.float32))) == pytest.approx(0.0, abs=1e-7)
    n, d = 20, 6
    x = _random(n, d, 1)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = z @ z.T
    brute = (cos.sum() - np.trace(cos)) / (n * (n - 1))
    # mean_cosine forms ‖Σ z_i‖² − Σ‖z_i‖² from unit rows: each of the two sums errs by at most
    # (n - 1 + d + 3)·U·n² relative to its size ≤ n² (for d components); divided by n(n - 1). The float32
    # brute force adds the same order again, hence the factor 2.
    bound = 2 * 2 * (n + d + 2) * U * n**2 / (n * (n - 1))
    assert float(gap.mean_cosine(x)) == pytest.approx(brute, abs=bound)


def test_gap_metrics_bundles_every_metric():
    img, txt = _random(12, 5, 2), _random(12, 5, 3)
    out = gap.gap_metrics(img, txt)
    expected = {
        "centroid_distance": gap.centroid_distance(img, txt),
        "mean_paired_distance": gap.mean_paired_distance(img, txt),
        "alignment": gap.alignment(img, txt),
        "uniformity_img": gap.uniformity(img),
        "uniformity_txt": gap.uniformity(txt),
        "cone_img": gap.mean_cosine(img),
        "cone_txt": gap.mean_cosine(txt),
    }
    assert set(out) == set(expected)
    for name, value in expected.items():
        assert isinstance(out[name], float)
        assert out[name] == pytest.approx(float(value), abs=1e-5), name


def test_gap_metrics_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="paired"):
        gap.gap_metrics(np.ones((3, 2)), np.ones((4, 2)))


def test_metrics_are_jittable():
    x, y = _random(8, 4, 4), _random(8, 4, 5)
    assert float(jax.jit(gap.uniformity)(x)) == pytest.approx(float(gap.uniformity(x)), abs=1e-6)
    assert float(jax.jit(gap.alignment)(x, y)) == pytest.approx(float(gap.alignment(x, y)), abs=1e-6)
