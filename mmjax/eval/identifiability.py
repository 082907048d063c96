"""Identifiability probes: standardisation, R² and linear / kernel-ridge / MLP regressors.

The identifiability evaluation of Cai et al. (arXiv 2504.10143).

Everything is float32, shape-static and free of host callbacks so the probes can run inside the
jitted, vmapped sweep. The non-linear probes re-implement scikit-learn's defaults (GridSearchCV over
an RBF ``KernelRidge``; ``MLPRegressor()``) so the numbers stay comparable with the paper's figures.

On CPU, XLA's eigh/svd call into scipy's OpenBLAS; its own thread pool can make them orders of
magnitude slower on small, loaded machines, so cap it (``threadpoolctl.threadpool_limits(1)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

Array = jax.Array

# Pairwise distances and the solves rely on cancellation; accelerators would otherwise be allowed
# to run float32 matmuls in TF32/bf16, which destroys |a|^2 + |b|^2 - 2ab.
_HI = lax.Precision.HIGHEST

# Relative singular-value cutoff for the min-norm least squares. Exactly collinear float32 columns
# leave singular values around 1e-7 * s_max; 1e-5 sits two decades above that noise floor while
# keeping genuinely (if badly) conditioned directions.
_LSTSQ_RCOND = 1e-5

# MLPRegressor's Adam defaults (beta_1, beta_2, epsilon); the paper never changed them.
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8

# The reference grid: tuple(np.logspace(-2, 2, 4)), hoisted so the default is built once.
_DEFAULT_GAMMAS = tuple(float(g) for g in np.logspace(-2, 2, 4))


def _f32(x) -> Array:
    return jnp.asarray(x, jnp.float32)


def _as_2d(y) -> Array:
    y = _f32(y)
    return y[:, None] if y.ndim == 1 else y


def _mask_or_ones(mask, k: int) -> Array:
    if mask is None:
        return jnp.ones((k,), jnp.float32)
    return _f32(mask).reshape(k)


def standardize(h_fit, h_test) -> tuple[Array, Array]:
    """Z-score both splits with fit-split statistics; (near-)constant columns become exactly 0."""
    h_fit, h_test = _f32(h_fit), _f32(h_test)
    # Shifting by the first row makes a constant column exactly zero, so its std is exactly 0
    # instead of rounding noise that the division would blow up into a fake feature.
    ref = h_fit[0]
    c_fit = h_fit - ref
    mean = jnp.mean(c_fit, axis=0)
    std = jnp.sqrt(jnp.mean((c_fit - mean) ** 2, axis=0))
    # Relative threshold: scale-free across representations, and catches columns whose variation
    # is only a few float32 ulps of a large offset.
    scale = jnp.maximum(jnp.max(std), jnp.abs(mean + ref))
    keep = std > 1e-6 * scale
    inv = jnp.where(keep, 1.0 / jnp.where(keep, std, 1.0), 0.0)
    z_fit = jnp.where(keep, (c_fit - mean) * inv, 0.0)
    z_test = jnp.where(keep, (h_test - ref - mean) * inv, 0.0)
    return z_fit, z_test


def _r2_per_output(y_true: Array, y_pred: Array, weights: Array | None = None) -> Array:
    w = jnp.ones(y_true.shape[:1], jnp.float32) if weights is None else weights
    w = w[:, None]
    # Shift by the first row so a constant target has an exactly-zero denominator, which is what
    # sklearn's force_finite branch keys on (the first row is always a real sample).
    yc = y_true - y_true[0]
    mean = jnp.sum(w * yc, axis=0) / jnp.sum(w)
    den = jnp.sum(w * (yc - mean) ** 2, axis=0)
    num = jnp.sum(w * (y_true - y_pred) ** 2, axis=0)
    safe_den = jnp.where(den > 0, den, 1.0)
    return jnp.where(den > 0, 1.0 - num / safe_den, jnp.where(num > 0, 0.0, 1.0))


def _masked_mean(values: Array, mask: Array) -> Array:
    # An all-zero mask yields NaN on purpose: there is nothing to score.
    return jnp.sum(jnp.where(mask > 0, values, 0.0), axis=-1) / jnp.sum(mask)


def r2_score(y_true, y_pred, mask=None) -> Array:
    """Uniform-average R² over (masked) outputs, as sklearn's r2_score with force_finite=True."""
    y_true, y_pred = _as_2d(y_true), _as_2d(y_pred)
    mask = _mask_or_ones(mask, y_true.shape[1])
    return _masked_mean(_r2_per_output(y_true, y_pred), mask)


def _lstsq_min_norm(x: Array, y: Array) -> Array:
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    keep = s > _LSTSQ_RCOND * s[0]
    s_inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    uty = jnp.matmul(u.T, y, precision=_HI)
    return jnp.matmul(vt.T, s_inv[:, None] * uty, precision=_HI)


def linear_r2(h_fit, y_fit, h_test, y_test, mask=None) -> Array:
    """Test R² of least squares with intercept (min-norm, as sklearn LinearRegression)."""
    h_fit, h_test = _f32(h_fit), _f32(h_test)
    y_fit, y_test = _as_2d(y_fit), _as_2d(y_test)
    # Centering absorbs the intercept exactly, as LinearRegression(fit_intercept=True) does.
    x_mean, y_mean = jnp.mean(h_fit, axis=0), jnp.mean(y_fit, axis=0)
    coef = _lstsq_min_norm(h_fit - x_mean, y_fit - y_mean)
    pred = jnp.matmul(h_test - x_mean, coef, precision=_HI) + y_mean
    return r2_score(y_test, pred, mask)


def _sq_dists(a: Array, b: Array) -> Array:
    sq = (
        jnp.sum(a**2, axis=1)[:, None]
        + jnp.sum(b**2, axis=1)[None, :]
        - 2.0 * jnp.matmul(a, b.T, precision=_HI)
    )
    return jnp.maximum(sq, 0.0)


def _kfold_bounds(n: int, n_folds: int) -> list[tuple[int, int]]:
    # sklearn KFold(shuffle=False): contiguous folds, the first n % k of them one sample longer.
    sizes = np.full(n_folds, n // n_folds, dtype=int)
    sizes[: n % n_folds] += 1
    stops = np.cumsum(sizes)
    return [(int(stop - size), int(stop)) for stop, size in zip(stops, sizes, strict=True)]


def _padded_folds(n: int, n_folds: int) -> tuple[np.ndarray, ...]:
    # Folds differ in size by one sample; padding them to a common shape (index 0, weight 0) lets a
    # single scan body handle every fold.
    bounds = _kfold_bounds(n, n_folds)
    n_te = max(hi - lo for lo, hi in bounds)
    n_tr = n - min(hi - lo for lo, hi in bounds)
    all_idx = np.arange(n)
    tr_idx = np.zeros((n_folds, n_tr), np.int32)
    te_idx = np.zeros((n_folds, n_te), np.int32)
    tr_w = np.zeros((n_folds, n_tr), np.float32)
    te_w = np.zeros((n_folds, n_te), np.float32)
    for f, (lo, hi) in enumerate(bounds):
        tr = np.concatenate([all_idx[:lo], all_idx[hi:]])
        tr_idx[f, : tr.size], tr_w[f, : tr.size] = tr, 1.0
        te_idx[f, : hi - lo], te_w[f, : hi - lo] = all_idx[lo:hi], 1.0
    return tr_idx, tr_w, te_idx, te_w


def _eigh_psd(kernel: Array) -> tuple[Array, Array]:
    lam, vec = jnp.linalg.eigh(kernel)
    # An RBF Gram matrix is PSD; float32 eigh can return slightly negative eigenvalues that would
    # make lambda + alpha vanish for the smallest alpha.
    return jnp.maximum(lam, 0.0), vec


def kernel_ridge_r2(
    h_fit,
    y_fit,
    h_test,
    y_test,
    mask=None,
    *,
    alphas=(1.0, 0.1, 0.01, 0.001),
    gammas=_DEFAULT_GAMMAS,
    n_folds=3,
) -> Array:
    """Test R² of RBF kernel ridge tuned like GridSearchCV(KernelRidge('rbf'), cv=3), then refit."""
    h_fit, h_test = _f32(h_fit), _f32(h_test)
    y_fit, y_test = _as_2d(y_fit), _as_2d(y_test)
    mask = _mask_or_ones(mask, y_fit.shape[1])
    alphas_arr, gammas_arr = _f32(alphas), _f32(gammas)
    n = h_fit.shape[0]
    d2_fit = _sq_dists(h_fit, h_fit)
    # sklearn's euclidean_distances(X, X) pins the self-distances to exactly 0.
    d2_fit = jnp.where(jnp.eye(n, dtype=bool), 0.0, d2_fit)

    def fold_scores(carry: None, fold: tuple[Array, ...]) -> tuple[None, Array]:
        tr_idx, tr_w, te_idx, te_w = fold
        d2_tr = d2_fit[tr_idx[:, None], tr_idx[None, :]]
        d2_te = d2_fit[te_idx[:, None], tr_idx[None, :]]
        y_tr = y_fit[tr_idx] * tr_w[:, None]
        y_te = y_fit[te_idx]
        # A padded train row is decoupled (zero off-diagonal, unit diagonal) and has a zero target,
        # so it leaves the real rows' solution unchanged.
        pair = tr_w[:, None] * tr_w[None, :]
        pad_diag = jnp.diag(1.0 - tr_w)

        def per_gamma(gamma: Array) -> Array:
            # One eigendecomposition serves every alpha: (K + aI)^-1 = V diag(1/(lam + a)) V^T.
            lam, vec = _eigh_psd(jnp.exp(-gamma * d2_tr) * pair + pad_diag)
            vty = jnp.matmul(vec.T, y_tr, precision=_HI)
            proj = jnp.matmul(jnp.exp(-gamma * d2_te) * tr_w, vec, precision=_HI)
            scaled = vty[None] / (lam[None, :, None] + alphas_arr[:, None, None])
            preds = jnp.einsum("tm,amk->atk", proj, scaled, precision=_HI)
            per_out = jax.vmap(_r2_per_output, in_axes=(None, 0, None))(y_te, preds, te_w)
            return _masked_mean(per_out, mask)

        return carry, jax.vmap(per_gamma)(gammas_arr)  # (n_gamma, n_alpha)

    # The folds run one after another on purpose: on XLA:CPU, several batched LAPACK eigh calls
    # executing concurrently (independent folds) can deadlock the intra-op thread pool.
    folds = tuple(jnp.asarray(a) for a in _padded_folds(n, n_folds))
    _, scores = lax.scan(fold_scores, None, folds)
    # ParameterGrid iterates sorted keys ('alpha' outer, 'gamma' inner) and GridSearchCV keeps the
    # first of tied candidates; argmax over that flattened order does the same.
    mean_scores = jnp.mean(scores, axis=0).T.reshape(-1)
    best = jnp.argmax(mean_scores)
    alpha = alphas_arr[best // gammas_arr.shape[0]]
    gamma = gammas_arr[best % gammas_arr.shape[0]]

    lam, vec = _eigh_psd(jnp.exp(-gamma * d2_fit))
    vty = jnp.matmul(vec.T, y_fit, precision=_HI)
    dual = jnp.matmul(vec, vty / (lam + alpha)[:, None], precision=_HI)
    k_test = jnp.exp(-gamma * _sq_dists(h_test, h_fit))
    pred = jnp.matmul(k_test, dual, precision=_HI)
    return r2_score(y_test, pred, mask)


def _mlp_init(key: Array, d: int, hidden: int, k: int, k_eff: Array) -> dict[str, Array]:
    # sklearn's Glorot-uniform variant: the same bound for weights and biases of a layer. The
    # output bound uses the number of unmasked outputs, i.e. what sklearn would see if it were
    # fitted on the masked target alone.
    k1, k2, k3, k4 = jax.random.split(key, 4)
    b_in = jnp.sqrt(6.0 / (d + hidden))
    b_out = jnp.sqrt(6.0 / (hidden + k_eff))
    uni = jax.random.uniform
    return {
        "w1": uni(k1, (d, hidden), jnp.float32, -1.0, 1.0) * b_in,
        "b1": uni(k2, (hidden,), jnp.float32, -1.0, 1.0) * b_in,
        "w2": uni(k3, (hidden, k), jnp.float32, -1.0, 1.0) * b_out,
        "b2": uni(k4, (k,), jnp.float32, -1.0, 1.0) * b_out,
    }


def _mlp_apply(params: dict[str, Array], x: Array) -> Array:
    hid = jax.nn.relu(x @ params["w1"] + params["b1"])
    return hid @ params["w2"] + params["b2"]


def _augment(x: Array) -> Array:
    """x with a column of ones: the first layer's bias becomes the last row of its weights, so its
    gradient comes out of the weight-gradient matmul instead of a separate reduction over the batch."""
    return jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)


def _stable_ranks(keys: Array) -> Array:
    """Where a stable sort puts each element of 1-D uint32 `keys` (n <= 2**16): argsort's inverse.

    Two single-operand sorts and two binary searches: XLA:CPU sorts one uint32 array several times
    faster than the key-value sort of an argsort. The first search gives each key the rank of its
    first equal key; packing that rank above the position makes every key unique and orders equal keys
    by position, so the second search gives the stable rank.
    """
    n = keys.shape[0]
    first = jnp.searchsorted(jnp.sort(keys), keys, side="left", method="scan").astype(jnp.uint32)
    packed = (first << 16) | jnp.arange(n, dtype=jnp.uint32)
    return jnp.searchsorted(jnp.sort(packed), packed, side="left", method="scan")


def _permutation(key: Array, n: int) -> Array:
    """``jax.random.permutation(key, n)``, equal element for element, in a third of its time on CPU.

    Same rounds of random 32-bit sort keys as jax's shuffle, each applied through `_stable_ranks`
    (a scatter) instead of a key-value sort; for n > 2**16 (ranks no longer fit 16 bits) jax's own.
    """
    if n > 1 << 16:
        return jax.random.permutation(key, n)
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    x = jnp.arange(n, dtype=jnp.int32)
    for _ in range(rounds):
        key, sub = jax.random.split(key)
        x = jnp.zeros_like(x).at[_stable_ranks(jax.random.bits(sub, (n,), jnp.uint32))].set(
            x, unique_indices=True)
    return x


def _mlps_train(
    params: list[dict[str, Array]],
    x: Array | Sequence[Array],
    ys: list[Array],
    masks: list[Array],
    key: Array,
    *,
    lr: float,
    l2: float,
    batch_size: int,
    max_epochs: int,
    tol: float,
    n_iter_no_change: int,
    shuffle: bool = True,
    input_of: Sequence[int] | None = None,
) -> tuple[list[dict[str, Array]], Array, Array]:
    """sklearn's Adam loop for T MLPs; member j fits ys[j] (n, k_j), masks[j] (k_j,) from one input.

    x is either one input (n, d) for every member, or a sequence of E inputs (n, d) with
    ``input_of[j]`` naming member j's (e.g. both encoders' features, so their trainings share one
    loop). All members see the same minibatches (one shuffle per epoch, so each member's batch order
    is still a uniform random permutation, as in sklearn) and each stops at its own plateau: a
    finished member's parameters are frozen while the others train on, and the epoch loop ends when
    every member has stopped. Each step gathers the batch rows of all inputs and targets at once and
    runs the members one after another on them: on CPU a member's activations (batch x hidden) stay
    in cache, where one wide layer for all members would stream T times as much through memory per
    pass (measured 2-3x slower). Returns the final params, the (max_epochs, T) loss curves (NaN once
    a member stopped) and the (T,) epoch counts.
    """
    n_members = len(ys)
    inputs = [x] if not isinstance(x, (list, tuple)) else list(x)
    input_of = [0] * n_members if input_of is None else list(input_of)
    if len(input_of) != n_members or any(not 0 <= i < len(inputs) for i in input_of):
        raise ValueError(f"input_of={input_of!r} is invalid: {n_members} indices into {len(inputs)} inputs")
    n = inputs[0].shape[0]
    # One (n, columns) block holding every input (with its ones column, see _augment) and every
    # distinct target: one gather per step instead of one per input and per member.
    distinct = {id(y): y for y in ys}
    blocks = [_augment(a) for a in inputs] + list(distinct.values())
    starts = np.cumsum([0] + [b.shape[1] for b in blocks])
    table = jnp.concatenate(blocks, axis=1)
    y_block = {key: len(inputs) + j for j, key in enumerate(distinct)}
    span = lambda blk: (int(starts[blk]), int(starts[blk + 1]))  # a block's columns in the table
    x_lo = [span(input_of[j]) for j in range(n_members)]
    y_lo = [span(y_block[id(y)]) for y in ys]
    bs = min(batch_size, n)
    n_batches = -(-n // bs)
    pad = n_batches * bs - n
    # Internally w1 carries b1 as its last row (see _augment); L2 applies to the weights only.
    aug = [{"w1": jnp.concatenate([p["w1"], p["b1"][None]], 0), "w2": p["w2"], "b2": p["b2"]}
           for p in params]

    def member_loss(p: dict[str, Array], xb: Array, yb: Array, wb: Array, mask: Array):
        n_b = jnp.sum(wb)
        out = jax.nn.relu(xb @ p["w1"]) @ p["w2"] + p["b2"]
        sq = jnp.sum(wb[:, None] * mask * (out - yb) ** 2)
        reg = 0.5 * l2 * (jnp.sum(p["w1"][:-1] ** 2) + jnp.sum((p["w2"] * mask) ** 2)) / n_b
        # sklearn reports the squared loss averaged over samples and outputs, but its gradient
        # (delta = pred - y) is that of the sum over outputs; mirror both.
        return 0.5 * sq / n_b + reg, 0.5 * sq / (n_b * jnp.sum(mask)) + reg

    grad_fn = jax.grad(member_loss, has_aux=True)

    # The members' parameters and Adam moments live in flat vectors: one Adam update per step for
    # all members, where per-leaf updates would be a dozen small kernels per member.
    flat, unravel = ravel_pytree(aug)
    owner = np.concatenate([np.full(ravel_pytree(p)[0].shape[0], j) for j, p in enumerate(aug)])

    def step(state, batch):
        p, m, v, t, active = state
        idx, wb = batch
        rows = table[idx]
        members = unravel(p)
        g, reported = [], []
        for j in range(n_members):
            (xa, xb), (ya, yb) = x_lo[j], y_lo[j]
            gj, rj = grad_fn(members[j], rows[:, xa:xb], rows[:, ya:yb], wb, masks[j])
            g.append(gj)
            reported.append(rj)
        g = ravel_pytree(g)[0]
        t = t + 1.0
        m = _ADAM_B1 * m + (1.0 - _ADAM_B1) * g
        v = _ADAM_B2 * v + (1.0 - _ADAM_B2) * g**2
        # sklearn folds the bias correction into the step size and adds eps to the raw sqrt(v).
        lr_t = lr * jnp.sqrt(1.0 - _ADAM_B2**t) / (1.0 - _ADAM_B1**t)
        p = jnp.where(active[owner], p - lr_t * m / (jnp.sqrt(v) + _ADAM_EPS), p)
        return (p, m, v, t, active), jnp.stack(reported) * jnp.sum(wb)

    # Padding the last batch with zero-weight rows keeps static shapes while every sample is used
    # once per epoch and the short batch is normalised by its true size, as in sklearn.
    weights = jnp.concatenate([jnp.ones((n,), jnp.float32), jnp.zeros((pad,), jnp.float32)])
    weights = weights.reshape(n_batches, bs)
    ekeys = jax.random.split(key, max_epochs)

    def epoch(carry):
        e, opt, best, count, done, curves = carry
        perm = _permutation(ekeys[e], n) if shuffle else jnp.arange(n)
        idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(n_batches, bs)
        (p, m, v, t, _), losses = lax.scan(step, (*opt, ~done), (idx, weights))
        loss = jnp.sum(losses, axis=0) / n
        # sklearn's plateau rule: the counter compares against the best loss minus tol, and the
        # best loss is tracked separately (so slow steady progress still counts as a plateau).
        count = jnp.where(done, count, jnp.where(loss > best - tol, count + 1, 0))
        best = jnp.where(done, best, jnp.minimum(best, loss))
        curves = curves.at[e].set(jnp.where(done, jnp.nan, loss))
        done = done | (count > n_iter_no_change)
        return e + 1, (p, m, v, t), best, count, done, curves

    def more(carry):
        e, _, _, _, done, _ = carry
        return (e < max_epochs) & ~jnp.all(done)

    zeros = jnp.zeros_like(flat)
    inf = jnp.full((n_members,), jnp.inf, jnp.float32)
    init = (0, (flat, zeros, zeros, jnp.float32(0.0)), inf, jnp.zeros((n_members,), jnp.int32),
            jnp.zeros((n_members,), bool), jnp.full((max_epochs, n_members), jnp.nan, jnp.float32))
    _, (flat, _, _, _), _, _, _, curves = lax.while_loop(more, epoch, init)
    fitted = [{"w1": p["w1"][:-1], "b1": p["w1"][-1], "w2": p["w2"], "b2": p["b2"]} for p in unravel(flat)]
    return fitted, curves, jnp.sum(~jnp.isnan(curves), axis=0)


def _mlp_train(params: dict[str, Array], x: Array, y: Array, mask: Array, key: Array, **kwargs):
    """`_mlps_train` for one MLP: final params, per-epoch loss (NaN once stopped), n_epochs."""
    fitted, curves, n_epochs = _mlps_train([params], x, [y], [mask], key, **kwargs)
    return fitted[0], curves[:, 0], n_epochs[0]


def _targets_2d(ys) -> list[Array]:
    return [_as_2d(y) for y in ys]


def _masks_for(masks, ys: list[Array]) -> list[Array]:
    if masks is None:
        return [jnp.ones((y.shape[1],), jnp.float32) for y in ys]
    return [_mask_or_ones(m, y.shape[1]) for m, y in zip(masks, ys, strict=True)]


def linear_r2_targets(h_fit, ys_fit, h_test, ys_test, masks=None) -> Array:
    """`linear_r2` of T targets on the same features with one SVD: sequences of (n, k_j) -> (T,)."""
    h_fit, h_test = _f32(h_fit), _f32(h_test)
    ys_fit, ys_test = _targets_2d(ys_fit), _targets_2d(ys_test)
    masks = _masks_for(masks, ys_fit)
    x_mean = jnp.mean(h_fit, axis=0)
    y_fit = jnp.concatenate(ys_fit, axis=1)
    y_mean = jnp.mean(y_fit, axis=0)
    # The min-norm solve is column-wise in y, so stacking the targets' columns changes no coefficient.
    coef = _lstsq_min_norm(h_fit - x_mean, y_fit - y_mean)
    pred = jnp.matmul(h_test - x_mean, coef, precision=_HI) + y_mean
    stops = np.cumsum([0] + [y.shape[1] for y in ys_fit])
    return jnp.stack([r2_score(y, pred[:, lo:hi], m)
                      for y, m, lo, hi in zip(ys_test, masks, stops[:-1], stops[1:], strict=True)])


def mlp_r2_targets(key, h_fit, ys_fit, h_test, ys_test, masks=None, **kwargs) -> Array:
    """`mlp_r2` of T targets on the same features, trained together: sequences of (n, k_j) -> (T,).

    Each target gets its own MLP (own initialisation, own plateau stop, as T separate sklearn
    ``MLPRegressor()`` fits); they share the minibatch order, so the batch is gathered once per
    step and the epoch loop runs until the last target has stopped. `mlp_r2_encoders` with one
    encoder; kwargs (hidden, lr, l2, batch_size, max_epochs, tol, n_iter_no_change) as there.
    """
    return mlp_r2_encoders(key, _f32(h_fit)[None], ys_fit, _f32(h_test)[None], ys_test, masks, **kwargs)[0]


def mlp_r2_encoders(
    key,
    hs_fit,
    ys_fit,
    hs_test,
    ys_test,
    masks=None,
    *,
    hidden=100,
    lr=1e-3,
    l2=1e-4,
    batch_size=200,
    max_epochs=200,
    tol=1e-4,
    n_iter_no_change=10,
) -> Array:
    """`mlp_r2_targets` on each of E feature sets (hs_fit (E, n, d)) for the same targets -> (E, T).

    The E x T MLPs train in one loop (each its own initialisation and plateau stop), so the
    per-step cost of the loop is paid once for all encoders instead of once per encoder.
    """
    hs_fit, hs_test = _f32(hs_fit), _f32(hs_test)
    if hs_fit.ndim != 3 or hs_test.ndim != 3 or hs_fit.shape[::2] != hs_test.shape[::2]:
        raise ValueError(f"hs_fit, hs_test have shapes {hs_fit.shape}, {hs_test.shape}: expected "
                         "(E, n_fit, d) and (E, n_test, d)")
    n_enc = hs_fit.shape[0]
    ys, ys_test = _targets_2d(ys_fit), _targets_2d(ys_test)
    masks = _masks_for(masks, ys)
    n_t = len(ys)
    key_init, key_shuffle = jax.random.split(key)
    keys = jax.random.split(key_init, n_enc * n_t)
    params = [_mlp_init(keys[e * n_t + j], hs_fit.shape[2], hidden, y.shape[1], jnp.sum(m))
              for e in range(n_enc) for j, (y, m) in enumerate(zip(ys, masks, strict=True))]
    params, _, _ = _mlps_train(params, list(hs_fit), ys * n_enc, masks * n_enc, key_shuffle,
                               input_of=[e for e in range(n_enc) for _ in ys], lr=lr, l2=l2,
                               batch_size=batch_size, max_epochs=max_epochs, tol=tol,
                               n_iter_no_change=n_iter_no_change)
    return jnp.stack([jnp.stack([r2_score(y, _mlp_apply(params[e * n_t + j], hs_test[e]), m)
                                 for j, (y, m) in enumerate(zip(ys_test, masks, strict=True))])
                      for e in range(n_enc)])


def mlp_r2(
    key,
    h_fit,
    y_fit,
    h_test,
    y_test,
    mask=None,
    *,
    hidden=100,
    lr=1e-3,
    l2=1e-4,
    batch_size=200,
    max_epochs=200,
    tol=1e-4,
    n_iter_no_change=10,
) -> Array:
    """Test R² of a JAX re-implementation of sklearn's default MLPRegressor (Adam, plateau stop)."""
    x, h_test = _f32(h_fit), _f32(h_test)
    y, y_test = _as_2d(y_fit), _as_2d(y_test)
    mask = _mask_or_ones(mask, y.shape[1])
    key_init, key_shuffle = jax.random.split(key)
    params = _mlp_init(key_init, x.shape[1], hidden, y.shape[1], jnp.sum(mask))
    params, _, _ = _mlp_train(
        params,
        x,
        y,
        mask,
        key_shuffle,
        lr=lr,
        l2=l2,
        batch_size=batch_size,
        max_epochs=max_epochs,
        tol=tol,
        n_iter_no_change=n_iter_no_change,
    )
    return r2_score(y_test, _mlp_apply(params, h_test), mask)


# Relative eigenvalue cutoff for the Nyström landmark kernel: float32 eigh leaves eigenvalues of a
# rank-deficient RBF Gram matrix near 1e-7 * lambda_max as noise, and lambda^-1/2 would amplify them
# into spurious features; 1e-5 sits two decades above that floor (as _LSTSQ_RCOND does for the SVD).
_NYSTROM_RCOND = 1e-5


def nystrom_r2_targets(
    h_fit,
    ys_fit,
    h_test,
    ys_test,
    masks=None,
    *,
    n_landmarks=512,
    alphas=(1.0, 0.1, 0.01, 0.001),
    gammas=_DEFAULT_GAMMAS,
    n_folds=3,
) -> Array:
    """Test R² of Nyström kernel ridge for T targets on the same features: sequences of (n, k_j) -> (T,).

    A fast stand-in for the MLP probe (and for `kernel_ridge_r2`, whose n x n eigendecomposition per
    candidate limits it to a few thousand fit rows). The RBF kernel is approximated through m
    landmarks, the first m fit rows (the fit rows are i.i.d., so this is a uniform subset):
    phi(x) = k(x, L) U diag(lambda)^-1/2 with W = k(L, L) = U diag(lambda) U^T, so phi(x) . phi(y)
    is the Nyström kernel k(x, L) W^+ k(L, y) (Williams & Seeger, 2001). On these m features it
    fits ridge regression with an unpenalised intercept, and selects (alpha, gamma) per target by
    contiguous `n_folds`-fold CV over the same grid as `kernel_ridge_r2` (mean fold R², first of
    ties in ParameterGrid order), then refits on all fit rows. The features are computed once per
    gamma and shared by all targets and folds; the CV needs only the m x m Gram matrix per fold.
    Cost per gamma: O(n m (m + d)) and n_folds + 2 eigendecompositions of m x m.
    """
    h_fit, h_test = _f32(h_fit), _f32(h_test)
    ys_fit, ys_test = _targets_2d(ys_fit), _targets_2d(ys_test)
    masks = _masks_for(masks, ys_fit)
    y = jnp.concatenate(ys_fit, axis=1)
    stops = np.cumsum([0] + [t.shape[1] for t in ys_fit])
    spans = list(zip(stops[:-1], stops[1:], strict=True))
    alphas_arr, gammas_arr = _f32(alphas), _f32(gammas)
    n = h_fit.shape[0]
    landmarks = h_fit[: min(n_landmarks, n)]
    d2_land = _sq_dists(landmarks, landmarks)
    d2_land = jnp.where(jnp.eye(landmarks.shape[0], dtype=bool), 0.0, d2_land)
    bounds = _kfold_bounds(n, n_folds)

    def ridge(gram: Array, phi_sum: Array, phi_y: Array, y_sum: Array, count) -> tuple[Array, ...]:
        # Centering phi and y with this training set's means gives the unpenalised intercept.
        mu, y_mean = phi_sum / count, y_sum / count
        gram = gram - count * jnp.outer(mu, mu)
        rhs = phi_y - count * jnp.outer(mu, y_mean)
        lam, vec = _eigh_psd(gram)
        vtr = jnp.matmul(vec.T, rhs, precision=_HI)
        coef = jnp.einsum("mj,ajk->amk", vec, vtr[None] / (lam[None, :, None] + alphas_arr[:, None, None]),
                          precision=_HI)  # (n_alpha, m, K)
        return coef, mu, y_mean

    def scores_by_target(y_true: Array, preds: Array) -> Array:  # preds (n_alpha, rows, K) -> (n_alpha, T)
        per_out = jax.vmap(_r2_per_output, in_axes=(None, 0))(y_true, preds)
        return jnp.stack([_masked_mean(per_out[:, lo:hi], m)
                          for (lo, hi), m in zip(spans, masks, strict=True)], axis=-1)

    def per_gamma(gamma: Array) -> tuple[Array, Array]:
        lam, vec = _eigh_psd(jnp.exp(-gamma * d2_land))
        keep = lam > _NYSTROM_RCOND * lam[-1]
        proj = vec * jnp.where(keep, lax.rsqrt(jnp.where(keep, lam, 1.0)), 0.0)
        feats = lambda h: jnp.matmul(jnp.exp(-gamma * _sq_dists(h, landmarks)), proj, precision=_HI)
        phi = feats(h_fit)
        parts = [(phi[lo:hi], y[lo:hi]) for lo, hi in bounds]
        stats = [(jnp.matmul(p.T, p, precision=_HI), jnp.sum(p, 0), jnp.matmul(p.T, t, precision=_HI),
                  jnp.sum(t, 0)) for p, t in parts]
        total = [sum(s[i] for s in stats) for i in range(4)]
        # Each fold's training statistics are the totals minus its own; the last problem is the refit.
        problems = [tuple(a - b for a, b in zip(total, s, strict=True)) + (n - (hi - lo),)
                    for s, (lo, hi) in zip(stats, bounds, strict=True)] + [(*total, n)]
        stacked = tuple(jnp.stack([jnp.asarray(p[i], jnp.float32) for p in problems]) for i in range(5))
        # One problem at a time (as in kernel_ridge_r2: concurrent LAPACK eigh calls on XLA:CPU).
        _, (coef, mu, y_mean) = lax.scan(lambda c, p: (c, ridge(*p)), None, stacked)
        cv = sum(scores_by_target(t, jnp.matmul(p - mu[f], coef[f], precision=_HI) + y_mean[f])
                 for f, (p, t) in enumerate(parts)) / n_folds
        test = jnp.matmul(feats(h_test) - mu[-1], coef[-1], precision=_HI) + y_mean[-1]
        return cv, test  # (n_alpha, T), (n_alpha, n_test, K)

    cv, test = lax.map(per_gamma, gammas_arr)
    # ParameterGrid order: 'alpha' outer, 'gamma' inner; argmax keeps the first of tied candidates.
    n_gamma = gammas_arr.shape[0]
    best = jnp.argmax(jnp.swapaxes(cv, 0, 1).reshape(-1, len(spans)), axis=0)
    return jnp.stack([r2_score(t, test[best[j] % n_gamma, best[j] // n_gamma][:, lo:hi], m)
                      for j, ((lo, hi), t, m) in enumerate(zip(spans, ys_test, masks, strict=True))])


NONLINEAR_PROBES = ("mlp", "nystrom", "kernel_ridge")


def nonlinear_r2_targets(
    probe: str,
    key,
    h_fit,
    ys_fit,
    h_test,
    ys_test,
    masks=None,
    *,
    max_epochs: int = 200,
    kernel_ridge_max: int = 2048,
    n_landmarks: int = 512,
) -> Array:
    """Test R² of T targets on the same features with one of NONLINEAR_PROBES -> (T,).

    "mlp": `mlp_r2_targets` (sklearn's MLPRegressor, `max_epochs` at most, the paper's probe);
    "nystrom": `nystrom_r2_targets` with `n_landmarks`; "kernel_ridge": exact `kernel_ridge_r2` on the
    first `kernel_ridge_max` fit rows, one target at a time (each holds an n x n kernel). `key` is
    used by the MLP only.
    """
    if probe == "mlp":
        return mlp_r2_targets(key, h_fit, ys_fit, h_test, ys_test, masks, max_epochs=max_epochs)
    if probe == "nystrom":
        return nystrom_r2_targets(h_fit, ys_fit, h_test, ys_test, masks, n_landmarks=n_landmarks)
    if probe != "kernel_ridge":
        raise ValueError(f"probe={probe!r} is not a non-linear probe: allowed {', '.join(NONLINEAR_PROBES)}")
    ys_fit, ys_test = _targets_2d(ys_fit), _targets_2d(ys_test)
    masks = _masks_for(masks, ys_fit)
    width = max(t.shape[1] for t in ys_fit)
    pad = lambda ys: jnp.stack([jnp.pad(t, ((0, 0), (0, width - t.shape[1]))) for t in ys])
    mask = jnp.stack([jnp.pad(m, (0, width - m.shape[0])) for m in masks])
    cap = min(kernel_ridge_max, h_fit.shape[0])
    h_fit = _f32(h_fit)[:cap]
    return lax.map(lambda a: kernel_ridge_r2(h_fit, a[0][:cap], h_test, a[1], a[2]),
                   (pad(ys_fit), pad(ys_test), mask))


def nonlinear_r2_encoders(probe: str, key, hs_fit, ys_fit, hs_test, ys_test, masks=None, **kwargs) -> Array:
    """`nonlinear_r2_targets` on each of E feature sets (hs_fit (E, n, d)) for the same targets -> (E, T).

    The MLP probe trains all E x T members in one loop (`mlp_r2_encoders`); the kernel probes, which
    have no sequential loop to share, run once per encoder. kwargs as for `nonlinear_r2_targets`.
    """
    if probe == "mlp":
        return mlp_r2_encoders(key, hs_fit, ys_fit, hs_test, ys_test, masks,
                               max_epochs=kwargs.get("max_epochs", 200))
    return jnp.stack([nonlinear_r2_targets(probe, key, a, ys_fit, b, ys_test, masks, **kwargs)
                      for a, b in zip(hs_fit, hs_test, strict=True)])


def aggregate_over_seeds(r2, axis=0) -> Array:
    """Paper-figure aggregation: mean of raw R² over seeds, then clipped at 0 from below."""
    return jnp.maximum(jnp.mean(_f32(r2), axis=axis), 0.0)
