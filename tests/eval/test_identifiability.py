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

# Tolerances: float32 unit roundoff U, and the worst case over every summation order, so they hold on
# any CPU and thread count: a sum of n terms errs by at most (n - 1)·U·Σ|terms| (Higham, Accuracy and
# Stability of Numerical Algorithms, 2nd ed., eq. 4.4).
U = float(np.finfo(np.float32).eps) / 2


def _r2_tol(y, p, mask=None):
    """|R²_float32 − R²_exact| for (masked, averaged) outputs of y and predictions p.

    SSR = Σ(y − p)² and SST = Σ(y − ȳ)² each carry a relative error of at most (n + 3)·U (a rounded
    difference, a rounded square, the n-term sum of non-negative terms; the mean's error enters SST only
    to second order, as Σ(y − ȳ) = 0), so R² = 1 − SSR/SST errs by at most 2(n + 3)·U·|1 − R²|.
    """
    y, p = np.asarray(y, np.float64).reshape(len(y), -1), np.asarray(p, np.float64).reshape(len(y), -1)
    one_minus = 1 - sk_r2_score(y, p, multioutput="raw_values")
    keep = np.ones(y.shape[1], bool) if mask is None else np.asarray(mask) > 0
    return float(np.mean(2 * (len(y) + 3) * U * np.abs(one_minus[keep])))


def _linear_r2_tol(xf, yf, xt, yt, mask=None):
    """|linear_r2 (float32) − LinearRegression (float64)|, from the conditioning of the fit.

    Least squares by SVD is backward stable: the float32 coefficients solve exactly a problem with
    ‖ΔA‖ ≤ m·k·U·‖A‖ (m rows, k columns; Higham Thm 20.3), so ‖Δβ‖ ≤ m·k·U·(κ‖β‖ + κ²‖r‖/‖A‖) with κ
    over the directions the min-norm solve keeps (Higham Thm 20.1). The test predictions move by at most
    ‖X_test‖·‖Δβ‖, which moves R² by at most 2‖r_test‖·‖Δpred‖/SST_test; the R² sums add _r2_tol.
    """
    xf, xt = (np.asarray(a, np.float64) for a in (xf, xt))
    yf, yt = (np.asarray(a, np.float64).reshape(len(a), -1) for a in (yf, yt))
    mean = xf.mean(0)
    a, at = xf - mean, xt - mean
    sv = np.linalg.svd(a, compute_uv=False)
    kept = sv[sv > 1e-5 * sv[0]]  # identifiability._LSTSQ_RCOND
    kappa, m, k = kept[0] / kept[-1], a.shape[0], a.shape[1]
    beta = np.linalg.lstsq(a, yf - yf.mean(0), rcond=1e-5)[0]
    resid = (yf - yf.mean(0)) - a @ beta
    pred = at @ beta + yf.mean(0)
    keep = np.ones(yf.shape[1], bool) if mask is None else np.asarray(mask) > 0
    bounds = []
    for j in np.flatnonzero(keep):
        d_beta = m * k * U * (kappa * np.linalg.norm(beta[:, j])
                              + kappa**2 * np.linalg.norm(resid[:, j]) / kept[0])
        d_pred = np.linalg.norm(at, 2) * d_beta
        sst = np.sum((yt[:, j] - yt[:, j].mean()) ** 2)
        bounds.append(2 * np.linalg.norm(yt[:, j] - pred[:, j]) * d_pred / sst)
    return float(np.mean(bounds)) + _r2_tol(yt, pred, mask)


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
    # z = (h − h_0 − m)/s in float32, with c = h − h_0: c rounds by U|c|, the mean m of n = 200 values
    # errs by (n − 1)·U·mean|c| + U|m|, s = sqrt(mean((c − m)²)) by (n + 3)·U/2 + U relative, and the
    # subtraction and division by U each: |Δz| ≤ U·[(|c| + n·mean|c| + |c − m|)/s + (n/2 + 4)·|z|].
    n = 200
    c_fit = h[:200, live].astype(np.float64) - h[0, live]
    mean_abs, m, sd = np.abs(c_fit).mean(0), c_fit.mean(0), c_fit.std(0)
    for rows, got in ((h[:200], zf), (h[200:], zt)):
        want = scaler.transform(rows)[:, live]
        c = rows[:, live].astype(np.float64) - h[0, live]
        bound = U * ((np.abs(c) + n * mean_abs + np.abs(c - m)) / sd + (n / 2 + 4) * np.abs(want))
        assert np.all(np.abs(np.asarray(got)[:, live] - want) <= bound)
    for z in (zf, zt):
        assert np.all(np.asarray(z)[:, [2, 4]] == 0.0)


def test_r2_score_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(100, 4)).astype(np.float32)
    p = (y + rng.normal(scale=0.7, size=y.shape)).astype(np.float32)
    p[:, 3] = rng.normal(size=100)  # one output with negative R²
    # scikit-learn computes in float32 too on float32 input: twice the float32 bound.
    assert abs(float(idf.r2_score(y, p)) - sk_r2_score(y, p)) <= 2 * _r2_tol(y, p)
    assert abs(float(idf.r2_score(y[:, 0], p[:, 0])) - sk_r2_score(y[:, 0], p[:, 0])) <= 2 * _r2_tol(
        y[:, 0], p[:, 0])
    mask = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    keep = mask > 0
    assert abs(float(idf.r2_score(y, p, mask)) - sk_r2_score(y[:, keep], p[:, keep])) <= 2 * _r2_tol(
        y, p, mask)


def test_r2_score_constant_target_is_force_finite():
    rng = np.random.default_rng(3)
    y = np.stack([np.full(50, 0.3), np.full(50, -2.0), rng.normal(size=50)], 1).astype(np.float32)
    p = y.copy()
    p[:, 1] += 0.1  # constant target, imperfect prediction -> 0.0
    p[:, 2] += 0.5 * rng.normal(size=50).astype(np.float32)
    expected = sk_r2_score(y, p, multioutput="raw_values")
    assert expected[0] == 1.0 and expected[1] == 0.0
    per_output = idf._r2_per_output(jnp.asarray(y), jnp.asarray(p))
    # Constant targets: exactly 1 and 0 (no rounding reaches them); the third output as in _r2_tol.
    np.testing.assert_allclose(per_output, expected, rtol=0, atol=2 * _r2_tol(y[:, 2:], p[:, 2:]))
    assert abs(float(idf.r2_score(y, p)) - sk_r2_score(y, p)) <= 2 * _r2_tol(y[:, 2:], p[:, 2:]) / 3


@pytest.mark.parametrize("variant", ["plain", "zero_column", "duplicated_column"])
def test_linear_r2_matches_sklearn(data, variant):
    xf, xt, yf, yt = data
    if variant == "zero_column":
        xf, xt = (np.concatenate([a, np.zeros((len(a), 1), np.float32)], 1) for a in (xf, xt))
    elif variant == "duplicated_column":
        xf, xt = (np.concatenate([a, a[:, 1:2]], 1) for a in (xf, xt))
    ref = LinearRegression().fit(xf.astype(np.float64), yf[:, 0]).score(xt, yt[:, 0])
    tol = _linear_r2_tol(xf, yf[:, 0], xt, yt[:, 0])
    assert abs(float(idf.linear_r2(xf, yf[:, 0], xt, yt[:, 0])) - ref) <= tol
    ref = LinearRegression().fit(xf.astype(np.float64), yf).score(xt, yt)
    assert abs(float(idf.linear_r2(xf, yf, xt, yt)) - ref) <= _linear_r2_tol(xf, yf, xt, yt)
    mask = np.array([0.0, 1.0, 1.0], np.float32)
    ref = LinearRegression().fit(xf.astype(np.float64), yf[:, 1:]).score(xt, yt[:, 1:])
    assert abs(float(idf.linear_r2(xf, yf, xt, yt, mask)) - ref) <= _linear_r2_tol(xf, yf, xt, yt, mask)
    assert tol < 1e-3  # κ ≈ 1.5 here: the bound stays far below the R² differences a wrong fit makes


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
    # No a-priori bound helps here: at the selected alpha = 0.01, κ(K + αI) ≈ 7e3 and the normwise
    # bound ‖K_test (K + αI)⁻¹‖·‖ΔK‖·‖dual‖ on the predictions gives |ΔR²| up to 0.06-0.09 (the measured
    # float32 error is 5e-6 on 1 thread and on 2). The tolerance is 200× the measured error, and the
    # grid search is only comparable while float32 picks the same (alpha, gamma): the runner-up's CV
    # score must trail the best by far more than the tolerance, or a rounding could pick another cell.
    scores = np.sort(search.cv_results_["mean_test_score"])
    assert scores[-1] - scores[-2] > 10 * 1e-3, scores[-2:]
    assert abs(float(ours) - ref) < 1e-3, (search.best_params_, ref, float(ours))


def _plateau_stop(curve, dtype=np.float64, tol=1e-4, n_iter_no_change=10):
    """The epoch MLPRegressor stops at: after more than n_iter_no_change epochs with loss > best − tol."""
    best, count = dtype(np.inf), 0
    for epoch, loss in enumerate(curve, 1):
        count = count + 1 if dtype(loss) > best - dtype(tol) else 0
        best = min(best, dtype(loss))
        if count > n_iter_no_change:
            return epoch
    return len(curve)


def _plateau_stops_within(curve, slack, tol=1e-4):
    """Stopping epochs of `curve` with each single near-tie (|best − loss − tol| < slack) flipped."""
    curve = np.asarray(curve, np.float64)
    best = np.minimum.accumulate(np.concatenate([[np.inf], curve[:-1]]))
    near = np.flatnonzero(np.abs(best - curve - tol) < slack)
    stops = {_plateau_stop(curve)}
    for i in near:
        nudged = curve.copy()
        nudged[i] = best[i] - tol + (1e-9 if curve[i] <= best[i] - tol else -1e-9)  # just across
        stops.add(_plateau_stop(nudged))
    return stops


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
    # Two float32 trainings that sum in different orders drift apart over ~100 epochs; there is no
    # a-priori bound on that drift, so atol = 1e-4 on the loss curve is ~10× the measured drift
    # (9e-6, the same on 1 and 2 threads), still ~100× below the loss changes of a wrong update.
    curve = np.asarray(losses)
    atol = 1e-4
    np.testing.assert_allclose(curve[: ref.n_iter_], ref.loss_curve_, atol=atol)
    # The stopping rule is exact on our own curve (float32, as _mlp_train applies it) ...
    assert int(n_epochs) == _plateau_stop(curve[: int(n_epochs)], np.float32)
    assert np.all(np.isnan(curve[int(n_epochs):]))
    # ... and equals sklearn's wherever the two curves cannot disagree: an epoch whose improvement is
    # within 2·atol of tol may go either way (sklearn's curve here has one within 1.3e-7), so the
    # stopping epoch is one of those reachable by flipping such near-ties.
    assert int(n_epochs) in _plateau_stops_within(ref.loss_curve_, 2 * atol)
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

    # The same float32 computations batched or not (no reordering across members); measured agreement
    # 1e-6 or better, and a member that failed to freeze at its own plateau would be off by ≫ 1e-4.
    for fn in (mlp, krr):
        batched = jax.jit(jax.vmap(fn))(ys_fit, ys_test)
        separate = [float(jax.jit(fn)(a, b)) for a, b in zip(ys_fit, ys_test, strict=True)]
        np.testing.assert_allclose(np.asarray(batched), separate, atol=1e-4)


def test_vmap_over_models_matches_separate_calls(data):
    xf, xt, yf, yt = data
    hf = jnp.stack([xf, np.tanh(xf), xf[:, ::-1]])
    ht = jnp.stack([xt, np.tanh(xt), xt[:, ::-1]])
    # Linear: two float32 fits of the same problem, each within _linear_r2_tol of the exact R².
    linear_tol = [2 * _linear_r2_tol(a, yf, b, yt) for a, b in zip(hf, ht, strict=True)]
    # Kernel ridge: batched and single float32 eigh round differently, and no a-priori bound is
    # useful (see test_kernel_ridge_r2_matches_gridsearch); measured 1.5e-4 (alpha = 1e-3 amplifies the
    # eigh rounding), on 1 thread and on 2.
    for fn, atols in ((idf.linear_r2, linear_tol), (idf.kernel_ridge_r2, [1e-3] * 3)):
        batched = jax.jit(jax.vmap(fn, in_axes=(0, None, 0, None)))(hf, yf, ht, yt)
        separate = [float(jax.jit(fn)(a, yf, b, yt)) for a, b in zip(hf, ht, strict=True)]
        for got, want, atol in zip(np.asarray(batched), separate, atols, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_aggregate_over_seeds():
    r2 = np.array([[0.5, -0.2, -0.1], [0.3, -0.4, 0.3]], np.float32)
    np.testing.assert_allclose(idf.aggregate_over_seeds(r2), [0.4, 0.0, 0.1], atol=1e-7)
    np.testing.assert_allclose(idf.aggregate_over_seeds(r2.T, axis=1), [0.4, 0.0, 0.1], atol=1e-7)


def test_linear_r2_targets_equals_per_target_fits(data):
    """One SVD for targets of different widths (and a mask) gives each target's own linear_r2."""
    xf, xt, yf, yt = data
    ys_fit, ys_test = [yf[:, :1], yf[:, 1:], yf], [yt[:, :1], yt[:, 1:], yt]
    masks = [None, None, np.array([1.0, 0.0, 1.0], np.float32)]
    got = np.asarray(jax.jit(idf.linear_r2_targets)(xf, ys_fit, xt, ys_test,
                                                    [idf._mask_or_ones(m, y.shape[1])
                                                     for m, y in zip(masks, ys_fit, strict=True)]))
    for j, (a, b, m) in enumerate(zip(ys_fit, ys_test, masks, strict=True)):
        # Both are float32 fits of the same problem, each within _linear_r2_tol of the exact R².
        want = float(jax.jit(idf.linear_r2)(xf, a, xt, b, m))
        np.testing.assert_allclose(got[j], want, rtol=0, atol=2 * _linear_r2_tol(xf, a, xt, b, m))


def test_mlps_trained_together_equal_separate_trainings(data):
    """Members sharing the minibatch order (on one input or on two) keep their own training and their
    own plateau stop."""
    xf, xt, yf, _ = data
    xs = [jnp.asarray(xf), jnp.tanh(jnp.asarray(xf))]
    ys = [jnp.asarray(yf[:, :1]), jnp.asarray(yf[:, 1:2]), jnp.asarray(yf[:, 1:]), jnp.asarray(yf[:, :1])]
    input_of = [0, 0, 0, 1]  # the last member fits the first target from the second input
    masks = [jnp.ones((y.shape[1],), jnp.float32) for y in ys]
    params = [idf._mlp_init(k, D, 100, y.shape[1], y.shape[1])
              for k, y in zip(jax.random.split(jax.random.PRNGKey(3), len(ys)), ys, strict=True)]
    kw = dict(lr=1e-3, l2=1e-4, batch_size=200, max_epochs=200, tol=1e-3, n_iter_no_change=10)
    key = jax.random.PRNGKey(4)
    train = jax.jit(lambda p, x, t, m, inp: idf._mlps_train(p, x, t, m, key, input_of=inp, **kw),
                    static_argnums=4)
    together, _, stops = train(params, xs, ys, masks, tuple(input_of))
    for j, i in enumerate(input_of):
        alone, _, stop = train([params[j]], xs[i], ys[j:j + 1], masks[j:j + 1], None)
        assert int(stops[j]) == int(stop[0])
        # The same float32 operations per member (no reordering across members): measured ≤ 1e-6;
        # a member trained a different number of steps would be off by ≫ 1e-4.
        for name in ("w1", "w2"):
            np.testing.assert_allclose(np.asarray(together[j][name]), np.asarray(alone[0][name]),
                                       atol=1e-4, err_msg=f"member {j}: {name}")
    assert len({int(s) for s in stops}) > 1  # tol=1e-3: the targets stop at different epochs


def test_mlp_r2_encoders_rows_are_their_encoders_members(data):
    """Row e, column j is the member trained on encoder e's fit features for target j and scored on
    encoder e's test features: rebuilt here from `_mlps_train` with the documented key layout (member
    e * T + j initialised from split(key_init, E * T)), the same float32 program (measured equal; a
    row scored on the other encoder's features would be off by ≫ 1e-4)."""
    xf, xt, yf, yt = data
    hf, ht = np.stack([xf, np.tanh(xf)]), np.stack([xt, np.tanh(xt)])
    ys_fit, ys_test = [jnp.asarray(yf[:, :1]), jnp.asarray(yf[:, 1:])], [yt[:, :1], yt[:, 1:]]
    key = jax.random.PRNGKey(0)
    got = np.asarray(jax.jit(idf.mlp_r2_encoders)(key, hf, ys_fit, ht, ys_test))
    key_init, key_shuffle = jax.random.split(key)
    keys = jax.random.split(key_init, 4)
    params = [idf._mlp_init(keys[2 * e + j], D, 100, y.shape[1], y.shape[1])
              for e in range(2) for j, y in enumerate(ys_fit)]
    masks = [jnp.ones((y.shape[1],), jnp.float32) for y in ys_fit] * 2
    kw = dict(lr=1e-3, l2=1e-4, batch_size=200, max_epochs=200, tol=1e-4, n_iter_no_change=10)
    fitted, _, _ = jax.jit(lambda p: idf._mlps_train(p, [jnp.asarray(h) for h in hf], ys_fit * 2, masks,
                                                     key_shuffle, input_of=[0, 0, 1, 1], **kw))(params)
    want = [[float(idf.r2_score(yt_j, idf._mlp_apply(fitted[2 * e + j], jnp.asarray(ht[e]))))
             for j, yt_j in enumerate(ys_test)] for e in range(2)]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.all(got > 0.3), got  # both encodings carry the targets
    one = np.asarray(jax.jit(idf.mlp_r2_targets)(key, xf, ys_fit, xt, ys_test))
    assert one.shape == (2,) and np.all(one > 0.3), one
    with pytest.raises(ValueError, match=r"hs_fit, hs_test have shapes .*: expected \(E, n_fit, d\)"):
        idf.mlp_r2_encoders(key, xf, ys_fit, xt, ys_test)


def test_mlps_train_rejects_bad_input_of(data):
    xf = jnp.asarray(data[0])
    y = jnp.zeros((xf.shape[0], 1))
    p = [idf._mlp_init(jax.random.PRNGKey(0), D, 100, 1, 1.0)]
    with pytest.raises(ValueError, match=r"input_of=\[2\] is invalid: 1 indices into 2 inputs"):
        idf._mlps_train(p, [xf, xf], [y], [jnp.ones((1,))], jax.random.PRNGKey(0), input_of=[2], lr=1e-3,
                        l2=1e-4, batch_size=200, max_epochs=1, tol=1e-4, n_iter_no_change=10)


def _nystrom_reference(xf, yf, xt, yt, m, cutoff=1e-5):
    """The Nyström probe in float64 with scikit-learn's Ridge and KFold CV: features k(x, L) U λ^-1/2
    of the first m fit rows L (eigenvalues under cutoff·λ_max dropped), (alpha, gamma) by mean fold
    R² (first of ties, alpha outer), refit on all fit rows. Returns (test R², sorted CV scores)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics.pairwise import rbf_kernel
    from sklearn.model_selection import cross_val_score

    xf, xt, yf = (np.asarray(a, np.float64) for a in (xf, xt, yf))
    land = xf[:m]
    feats = {}
    for g in GAMMAS:
        lam, vec = np.linalg.eigh(rbf_kernel(land, land, gamma=g))
        keep = lam > cutoff * lam[-1]
        proj = vec[:, keep] / np.sqrt(lam[keep])
        feats[g] = (rbf_kernel(xf, land, gamma=g) @ proj, rbf_kernel(xt, land, gamma=g) @ proj)
    scores = {(a, g): cross_val_score(Ridge(alpha=a), feats[g][0], yf, cv=KFold(3), scoring="r2").mean()
              for a in ALPHAS for g in GAMMAS}
    best = max(scores, key=lambda c: (scores[c], -list(scores).index(c)))
    ridge = Ridge(alpha=best[0]).fit(feats[best[1]][0], yf)
    return ridge.score(feats[best[1]][1], yt), np.sort(list(scores.values()))


def test_nystrom_r2_matches_sklearn_ridge_on_the_same_features(data):
    """Two targets (widths 1 and 2) in one call, each against its own float64 reference."""
    xf, xt, yf, yt = data
    targets = [[0], [0, 1]]
    ours = np.asarray(jax.jit(partial_nystrom)(xf, [yf[:, c] for c in targets], xt,
                                               [yt[:, c] for c in targets]))
    for j, cols in enumerate(targets):
        ref, scores = _nystrom_reference(xf, yf[:, cols], xt, yt[:, cols], m=100)
        # As for kernel ridge, no a-priori bound is useful (λ^-1/2 down to the cutoff amplifies the
        # float32 rounding of the kernel by up to ~300 in the normwise bound); the measured float32
        # error here is ≤ 1e-7 and the tolerance 1e-4. The comparison holds only while both pick the
        # same (alpha, gamma), so the runner-up's CV score must trail the best by far more.
        assert scores[-1] - scores[-2] > 100 * 1e-4, scores[-2:]
        assert abs(ours[j] - ref) < 1e-4, (cols, ref, ours[j])


def partial_nystrom(xf, ys_fit, xt, ys_test):
    return idf.nystrom_r2_targets(xf, ys_fit, xt, ys_test, n_landmarks=100, alphas=ALPHAS, gammas=GAMMAS)


@pytest.mark.parametrize("n", [1, 2, 7, 200, 20_480, 65_536, 70_000])
def test_probe_shuffle_equals_jax_permutation(n):
    for seed in range(3):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(np.asarray(jax.jit(idf._permutation, static_argnums=1)(key, n)),
                                      np.asarray(jax.random.permutation(key, n)))


def test_stable_ranks_invert_a_stable_argsort_with_many_ties():
    rng = np.random.default_rng(0)
    for n, high in [(1, 1), (50, 3), (4096, 1000), (65_536, 2**32)]:
        keys = rng.integers(0, high, size=n, dtype=np.uint64).astype(np.uint32)
        ranks = np.asarray(jax.jit(idf._stable_ranks)(jnp.asarray(keys)))
        expect = np.empty(n, np.int64)
        expect[np.argsort(keys, kind="stable")] = np.arange(n)
        np.testing.assert_array_equal(ranks, expect)
