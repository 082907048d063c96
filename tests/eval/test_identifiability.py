"""Parity tests of the JAX identifiability probes against scikit-learn on small generated data."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score as sk_r2_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mmjax.eval import identifiability as idf

N_FIT, N_TEST, D = 301, 300, 5  # 301 makes the CV folds uneven (101, 100, 100)
ALPHAS = (1.0, 0.1, 0.01, 0.001)
GAMMAS = tuple(np.logspace(-2, 2, 4))

mlp_r2_jit = jax.jit(idf.mlp_r2)
krr_jit = jax.jit(idf.kernel_ridge_r2)


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    # XLA:CPU's eigh/svd call into scipy's OpenBLAS, whose own threads make a 300x300 eigh take
    # ~1 s instead of ~5 ms on a loaded 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _targets(x, rng):
    """Three non-linear targets of the 5-d input, with noise."""
    y = np.stack(
        [
            np.sin(2.0 * x[:, 0]) + x[:, 1] * x[:, 2],
            np.tanh(x[:, 3]) + 0.5 * x[:, 4] ** 2,
            np.cos(x[:, 0] * x[:, 4]),
        ],
        axis=1,
    )
    return (y + 0.1 * rng.normal(size=y.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_FIT + N_TEST, D)).astype(np.float32)
    y = _targets(x, rng)
    xf, xt = idf.standardize(x[:N_FIT], x[N_FIT:])
    return np.asarray(xf), np.asarray(xt), y[:N_FIT], y[N_FIT:]


def test_standardize_matches_sklearn_and_zeroes_constant_columns():
    rng = np.random.default_rng(1)
    h = rng.normal(loc=3.0, scale=2.0, size=(400, 6)).astype(np.float32)
    h[:, 2] = 0.0  # unused representation dim
    h[:, 4] = 7.25  # constant non-zero column
    zf, zt = idf.standardize(h[:200], h[200:])
    scaler = StandardScaler().fit(h[:200].astype(np.float64))
    live = [0, 1, 3, 5]
    np.testing.assert_allclose(zf[:, live], scaler.transform(h[:200])[:, live], atol=1e-5)
    np.testing.assert_allclose(zt[:, live], scaler.transform(h[200:])[:, live], atol=1e-5)
    for z in (zf, zt):
        assert np.all(np.asarray(z)[:, [2, 4]] == 0.0)


def test_r2_score_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(100, 4)).astype(np.float32)
    p = (y + rng.normal(scale=0.7, size=y.shape)).astype(np.float32)
    p[:, 3] = rng.normal(size=100)  # one output with negative R²
    assert abs(float(idf.r2_score(y, p)) - sk_r2_score(y, p)) < 1e-5
    assert abs(float(idf.r2_score(y[:, 0], p[:, 0])) - sk_r2_score(y[:, 0], p[:, 0])) < 1e-5
    mask = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    keep = mask > 0
    assert abs(float(idf.r2_score(y, p, mask)) - sk_r2_score(y[:, keep], p[:, keep])) < 1e-5


def test_r2_score_constant_target_is_force_finite():
    rng = np.random.default_rng(3)
    y = np.stack([np.full(50, 0.3), np.full(50, -2.0), rng.normal(size=50)], 1).astype(np.float32)
    p = y.copy()
    p[:, 1] += 0.1  # constant target, imperfect prediction -> 0.0
    p[:, 2] += 0.5 * rng.normal(size=50).astype(np.float32)
    expected = sk_r2_score(y, p, multioutput="raw_values")
    assert expected[0] == 1.0 and expected[1] == 0.0
    per_output = idf._r2_per_output(jnp.asarray(y), jnp.asarray(p))
    np.testing.assert_allclose(per_output, expected, atol=1e-5)
    assert abs(float(idf.r2_score(y, p)) - sk_r2_score(y, p)) < 1e-5


@pytest.mark.parametrize("variant", ["plain", "zero_column", "duplicated_column"])
def test_linear_r2_matches_sklearn(data, variant):
    xf, xt, yf, yt = data
    if variant == "zero_column":
        xf, xt = (np.concatenate([a, np.zeros((len(a), 1), np.float32)], 1) for a in (xf, xt))
    elif variant == "duplicated_column":
        xf, xt = (np.concatenate([a, a[:, 1:2]], 1) for a in (xf, xt))
    ref = LinearRegression().fit(xf.astype(np.float64), yf[:, 0]).score(xt, yt[:, 0])
    assert abs(float(idf.linear_r2(xf, yf[:, 0], xt, yt[:, 0])) - ref) < 1e-4
    ref = LinearRegression().fit(xf.astype(np.float64), yf).score(xt, yt)
    assert abs(float(idf.linear_r2(xf, yf, xt, yt)) - ref) < 1e-4
    mask = np.array([0.0, 1.0, 1.0], np.float32)
    ref = LinearRegression().fit(xf.astype(np.float64), yf[:, 1:]).score(xt, yt[:, 1:])
    assert abs(float(idf.linear_r2(xf, yf, xt, yt, mask)) - ref) < 1e-4


@pytest.mark.parametrize("n", [9, 10, 11, 301, 1024])
def test_kfold_bounds_match_sklearn(n):
    ref = [(int(te[0]), int(te[-1]) + 1) for _, te in KFold(3).split(np.zeros(n))]
    assert idf._kfold_bounds(n, 3) == ref


@pytest.mark.parametrize(
    "cols, mask",
    [([0], None), ([0, 1, 2], None), ([0, 2], np.array([1.0, 0.0, 1.0], np.float32))],
    ids=["single", "multi", "masked"],
)
def test_kernel_ridge_r2_matches_gridsearch(data, cols, mask):
    xf, xt, yf, yt = data
    search = GridSearchCV(
        KernelRidge(kernel="rbf"), {"alpha": list(ALPHAS), "gamma": list(GAMMAS)}, cv=KFold(3)
    ).fit(xf.astype(np.float64), yf[:, cols].astype(np.float64))
    ref = search.score(xt.astype(np.float64), yt[:, cols])
    if mask is None:
        ours = krr_jit(xf, yf[:, cols], xt, yt[:, cols])
    else:
        ours = krr_jit(xf, yf, xt, yt, mask)
    assert abs(float(ours) - ref) < 1e-3, (search.best_params_, ref, float(ours))


@pytest.mark.parametrize("n, mask", [(450, None), (1000, None), (450, [1.0, 0.0])])
def test_mlp_training_matches_sklearn_step_for_step(n, mask):
    """Same init and batch order (shuffle=False): loss curve and stopping epoch match sklearn."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (x @ rng.normal(size=(D, 2)) + 0.3 * rng.normal(size=(n, 2))).astype(np.float32)
    mask = np.ones(2, np.float32) if mask is None else np.asarray(mask, np.float32)
    keep = mask > 0
    y_ref = y[:, keep] if keep.sum() > 1 else y[:, keep][:, 0]
    params = idf._mlp_init(jax.random.PRNGKey(1), D, 100, 2, jnp.sum(mask))
    ref = MLPRegressor(shuffle=False, max_iter=1, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(x, y_ref)  # allocates sklearn's state; then swap in our initial weights
    ref.coefs_ = [np.array(params["w1"]), np.array(params["w2"])[:, keep]]
    ref.intercepts_ = [np.array(params["b1"]), np.array(params["b2"])[keep]]
    ref.best_loss_, ref._no_improvement_count, ref.loss_curve_, ref.t_ = np.inf, 0, [], 0
    ref.max_iter = 200
    ref.fit(x, y_ref)
    fitted, losses, n_epochs = idf._mlp_train(
        params,
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.asarray(mask),
        jax.random.PRNGKey(2),
        lr=1e-3,
        l2=1e-4,
        batch_size=200,
        max_epochs=200,
        tol=1e-4,
        n_iter_no_change=10,
        shuffle=False,
    )
    assert ref.n_iter_ < 200  # the plateau criterion fired
    assert int(n_epochs) == ref.n_iter_
    np.testing.assert_allclose(np.asarray(losses)[: ref.n_iter_], ref.loss_curve_, atol=1e-4)
    assert np.all(np.isnan(np.asarray(losses)[ref.n_iter_ :]))
    np.testing.assert_allclose(np.asarray(fitted["w2"])[:, keep], ref.coefs_[1], atol=1e-3)


def test_mlp_r2_matches_sklearn_default(data):
    xf, xt, yf, yt = data
    seeds = range(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = [MLPRegressor(random_state=s).fit(xf, yf[:, 1]).score(xt, yt[:, 1]) for s in seeds]
    ours = [float(mlp_r2_jit(jax.random.PRNGKey(s), xf, yf[:, 1], xt, yt[:, 1])) for s in seeds]
    assert 0.3 < np.mean(ref) < 0.99
    assert abs(np.mean(ours) - np.mean(ref)) <= 0.05, (ref, ours)


def test_mlp_r2_uninformative_and_linear_targets(data):
    xf, xt, _, _ = data
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(N_FIT + N_TEST, 1)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    assert float(mlp_r2_jit(key, xf, noise[:N_FIT], xt, noise[N_FIT:])) <= 0.05
    w = rng.normal(size=(D, 1)).astype(np.float32)
    lin = np.concatenate([xf, xt]) @ w + 0.05 * noise
    assert float(mlp_r2_jit(key, xf, lin[:N_FIT], xt, lin[N_FIT:])) >= 0.95


def test_vmap_over_targets_matches_separate_calls(data):
    xf, xt, yf, yt = data
    key = jax.random.PRNGKey(0)
    ys_fit, ys_test = jnp.asarray(yf.T), jnp.asarray(yt.T)  # 3 different scalar targets

    def mlp(y_fit, y_test):
        # tol=1e-3 makes the plateau fire at different epochs per target (about 160, 90, 75), so
        # the vmapped run has to freeze finished members while others keep training.
        return idf.mlp_r2(key, xf, y_fit, xt, y_test, tol=1e-3)

    def krr(y_fit, y_test):
        return idf.kernel_ridge_r2(xf, y_fit, xt, y_test)

    for fn in (mlp, krr):
        batched = jax.jit(jax.vmap(fn))(ys_fit, ys_test)
        separate = [float(jax.jit(fn)(a, b)) for a, b in zip(ys_fit, ys_test, strict=True)]
        np.testing.assert_allclose(np.asarray(batched), separate, atol=1e-4)


def test_vmap_over_models_matches_separate_calls(data):
    xf, xt, yf, yt = data
    hf = jnp.stack([xf, np.tanh(xf), xf[:, ::-1]])
    ht = jnp.stack([xt, np.tanh(xt), xt[:, ::-1]])
    # Batched and single float32 eigh round differently; alpha=1e-3 amplifies that to ~1e-4.
    for fn, atol in ((idf.linear_r2, 1e-4), (idf.kernel_ridge_r2, 1e-3)):
        batched = jax.jit(jax.vmap(fn, in_axes=(0, None, 0, None)))(hf, yf, ht, yt)
        separate = [float(jax.jit(fn)(a, yf, b, yt)) for a, b in zip(hf, ht, strict=True)]
        np.testing.assert_allclose(np.asarray(batched), separate, atol=atol)


def test_aggregate_over_seeds():
    r2 = np.array([[0.5, -0.2, -0.1], [0.3, -0.4, 0.3]], np.float32)
    np.testing.assert_allclose(idf.aggregate_over_seeds(r2), [0.4, 0.0, 0.1], atol=1e-7)
    np.testing.assert_allclose(idf.aggregate_over_seeds(r2.T, axis=1), [0.4, 0.0, 0.1], atol=1e-7)
