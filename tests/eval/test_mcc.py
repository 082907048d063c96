"""MCC against scikit-learn, and the MCC probes on separable and on uninformative features."""

import jax
import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from mmjax.eval.mcc import linear_mcc, mcc, mlp_mcc


@pytest.mark.parametrize("k, n", [(2, 50), (4, 200), (6, 30)])
def test_mcc_matches_sklearn(k, n):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, n)
    pred = np.where(rng.uniform(size=n) < 0.6, y, rng.integers(0, k, n))
    np.testing.assert_allclose(float(mcc(y, pred, k + 2)), matthews_corrcoef(y, pred), atol=1e-6)
    assert float(mcc(y, y, k)) == pytest.approx(1.0)
    assert float(mcc(y, np.zeros_like(y), k)) == 0.0  # constant prediction: undefined → 0, as sklearn


def test_probes_on_separable_and_noise_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 800)
    centres = rng.normal(size=(4, 3)) * 4
    x = centres[y] + rng.normal(size=(800, 3)) * 0.3
    noise = rng.normal(size=(800, 3))
    fit, test = slice(0, 400), slice(400, 800)
    assert float(linear_mcc(x[fit], y[fit], x[test], y[test], 6)) > 0.98
    assert float(mlp_mcc(jax.random.key(0), x[fit], y[fit], x[test], y[test], 6)) > 0.98
    assert abs(float(linear_mcc(noise[fit], y[fit], noise[test], y[test], 6))) < 0.15
    # XOR-like classes: no linear separation, an MLP separates them.
    z = rng.uniform(-1, 1, size=(800, 2))
    yx = ((z[:, 0] > 0) ^ (z[:, 1] > 0)).astype(int)
    assert abs(float(linear_mcc(z[fit], yx[fit], z[test], yx[test], 2))) < 0.2
    assert float(mlp_mcc(jax.random.key(1), z[fit], yx[fit], z[test], yx[test], 2)) > 0.8
