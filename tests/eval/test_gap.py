"""Modality-gap metrics on constructed embeddings with answers worked out by hand."""

import jax
import numpy as np
import pytest

from mmjax.eval import gap


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_l2_normalize_unit_rows_and_zero_row_stays_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(gap.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_identical_modalities_have_no_gap():
    x = _random(16, 8, 0)
    # Scaling a row does not move its normalised embedding.
    y = x * np.linspace(0.5, 3.0, 16, dtype=np.float32)[:, None]
    assert float(gap.centroid_distance(x, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(gap.mean_paired_distance(x, y)) == pytest.approx(0.0, abs=1e-3)
    assert float(gap.alignment(x, y)) == pytest.approx(0.0, abs=1e-6)


def test_antipodal_clusters():
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
    two = np.array([[2.0, 0.0], [0.0, 0.5]], np.float32)  # orthogonal: squared distance 2
    assert float(gap.uniformity(two)) == pytest.approx(-4.0, abs=1e-5)
    assert float(gap.uniformity(two, t=1.0)) == pytest.approx(-2.0, abs=1e-5)
    three = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)  # squared distances 2, 2, 4
    expected = np.log((2 * np.exp(-4.0) + np.exp(-8.0)) / 3.0)
    assert float(gap.uniformity(three)) == pytest.approx(expected, abs=1e-5)


def test_mean_cosine_values():
    assert float(gap.mean_cosine(np.tile([[1.0, 2.0, 2.0]], (5, 1)))) == pytest.approx(1.0, abs=1e-6)
    assert float(gap.mean_cosine(np.eye(5, dtype=np.float32))) == pytest.approx(0.0, abs=1e-7)
    x = _random(20, 6, 1)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = z @ z.T
    brute = (cos.sum() - np.trace(cos)) / (20 * 19)
    assert float(gap.mean_cosine(x)) == pytest.approx(brute, abs=1e-5)


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
