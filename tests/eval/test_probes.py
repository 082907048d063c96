"""Probes on frozen features: scikit-learn parity of the linear probe, k-shot sampling and its errors."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mmjax.eval import probes
from mmjax.eval.identifiability import standardize

N_TRAIN, N_TEST, D, N_CLASSES = 300, 200, 8, 4


def _blobs(seed: int, spread: float):
    """Overlapping Gaussian classes on badly scaled, offset features (a well-posed, non-separable task)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CLASSES, D))
    y = rng.integers(0, N_CLASSES, N_TRAIN + N_TEST)
    x = centres[y] + spread * rng.normal(size=(N_TRAIN + N_TEST, D))
    x = (x * rng.uniform(0.5, 5.0, D) + 3.0 * rng.normal(size=D)).astype(np.float32)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


@pytest.mark.parametrize("c", [0.05, 1.0])
def test_linear_probe_matches_sklearn(c):
    x_tr, y_tr, x_te, y_te = _blobs(0, spread=1.5)
    scaler = StandardScaler().fit(x_tr)
    # float64 so that scikit-learn's own solution is the exact reference.
    x_tr64, x_te64 = scaler.transform(x_tr.astype(np.float64)), scaler.transform(x_te.astype(np.float64))
    clf = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x_tr64, y_tr)
    l2 = 1.0 / (c * N_TRAIN)  # the documented C <-> l2 mapping

    z_tr, z_te = standardize(x_tr, x_te)
    params = probes.fit_logistic_regression(z_tr, y_tr, N_CLASSES, l2=l2)
    np.testing.assert_allclose(probes.logistic_proba(params, z_te), clf.predict_proba(x_te64), atol=1e-4)
    acc = probes.linear_probe(x_tr, y_tr, x_te, y_te, N_CLASSES, l2=l2)
    assert abs(float(acc) - clf.score(x_te64, y_te)) <= 0.02


def test_sample_k_shot_draws_k_distinct_per_class():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 6)
    idx = np.asarray(probes.sample_k_shot(jax.random.key(0), labels, 3, 3))
    assert len(set(idx.tolist())) == 9
    np.testing.assert_array_equal(labels[idx], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    again = np.asarray(probes.sample_k_shot(jax.random.key(0), labels, 3, 3))
    np.testing.assert_array_equal(idx, again)
    draws = {tuple(np.asarray(probes.sample_k_shot(jax.random.key(s), labels, 3, 2))) for s in range(8)}
    assert len(draws) > 1


def test_k_shot_error_names_k_and_smallest_count():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 6)
    feats = np.zeros((14, 2), np.float32)
    with pytest.raises(ValueError, match=r"k=4 but the smallest class count is 3 \(class 1\)"):
        probes.k_shot_probe(jax.random.key(0), feats, labels, feats, labels, 3, 4)


def test_k_shot_probe_on_separated_classes():
    rng = np.random.default_rng(1)
    centres = 5.0 * np.eye(N_CLASSES, D)
    y_pool, y_te = np.repeat(np.arange(N_CLASSES), 100), rng.integers(0, N_CLASSES, N_TEST)
    x_pool = (centres[y_pool] + 0.3 * rng.normal(size=(y_pool.size, D))).astype(np.float32)
    x_te = (centres[y_te] + 0.3 * rng.normal(size=(N_TEST, D))).astype(np.float32)
    for method in ("linear", "ncm"):
        acc = probes.k_shot_probe(jax.random.key(2), x_pool, y_pool, x_te, y_te, N_CLASSES, 5, method=method)
        assert float(acc) == 1.0, method


def test_nearest_class_mean_by_hand():
    train = np.array([[1.0, 0.0], [3.0, 0.2], [0.0, 2.0], [-0.1, 1.0]], np.float32)
    test = np.array([[1.0, 0.9], [0.9, 1.0], [-1.0, 0.1]], np.float32)
    # Class means point along ~e0 and ~e1: the first test point is closer to e0, the others to e1.
    acc = probes.nearest_class_mean_accuracy(train, [0, 0, 1, 1], test, [0, 1, 0], 2)
    assert float(acc) == pytest.approx(2 / 3)
