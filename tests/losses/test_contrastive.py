"""Contrastive losses against loop-based float64 numpy references, and their multi-device versions."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import mmjax.losses.contrastive as contrastive
from mmjax.losses.contrastive import (
    clip_loss,
    con_loss,
    lp_simclr_loss,
    lp_simclr_swapped_loss,
    pairwise_sq_dists,
    siglip_loss,
    simclr_cosine_loss,
)

B, D = 6, 3

# Tolerances against the float64 loops: worst-case float32 error bounds, whatever the summation order
# (so on any CPU and thread count). U is the float32 unit roundoff.
U = np.finfo(np.float32).eps / 2


def _infonce_atol(scale: float, n_keys: int, n_anchors: int = B, d: int = D) -> float:
    """|float32 − exact| for a mean over anchors of logsumexp_j(s·cos_ij) − s·cos_ii (s = scale, or 1/τ).

    A row normalised in float32 is off by (d + 3)·U per component, so a cosine of two by (3d + 6)·U (the
    dot adds d·U); a logit s·cos adds U·s for the product and (|log s| + 2)·U·s for s itself (log s
    rounded to float32, then exp). logsumexp over n keys (|lse| ≤ s + log n) adds (n + 2)·U·(1 + |lse|)
    on top of its inputs' error; a term is lse − logit_ii; the mean over m anchors adds (m − 1)·U per
    unit of its largest term, and the two or four directions' average one U more.
    """
    logit = scale * ((3 * d + 6) + 1 + abs(np.log(scale)) + 2) * U
    lse = scale + np.log(n_keys)
    term = 2 * logit + (n_keys + 2) * U * (1 + lse) + U * (lse + scale)
    return float(term + (n_anchors + 1) * U * (lse + scale))


def _gram_sq_dist_bound(a, b):
    """|Δ| of ‖a‖² + ‖b‖² − 2a·b in float32: (d + 2)·U·(‖a‖ + ‖b‖)² per pair (three d-term sums)."""
    na, nb = np.linalg.norm(_f64(a), axis=1), np.linalg.norm(_f64(b), axis=1)
    return (a.shape[1] + 2) * U * (na[:, None] + nb[None, :]) ** 2


def _lp_simclr_atol(a, b, a_neg, b_neg, tau):
    """|float32 − exact| of lp_simclr_loss: logits −d²/τ err by the Gram bound over τ (plus U of their
    size for the division), logsumexp over B + 1 of them adds (B + 3)·U·(1 + |lse|), each term
    2(α·pos/τ + (1 − α)·lme) at most twice that, the mean over B anchors (B + 1)·U of its largest term."""
    size = max(float(np.max((np.linalg.norm(_f64(x), axis=1)[:, None]
                             + np.linalg.norm(_f64(y), axis=1)[None, :]) ** 2))
               for x, y in ((a, b_neg), (b, a_neg), (a, b))) / tau
    logit = (D + 3) * U * size
    lse = size + np.log(B + 1)
    term = 2 * (2 * logit + (B + 3) * U * (1 + lse)) + U * 2 * (size + lse)
    return float(term + (B + 1) * U * 2 * (size + lse))


def _siglip_atol(scale, bias, n=B, d=D):
    """|float32 − exact| of siglip_loss = −(1/n)·Σ_ij log σ(z_ij(s·cos_ij + bias)): each argument errs
    by a logit's bound (see _infonce_atol) plus U·(s + |bias|), each log σ by that plus 3U of its size
    (≤ s + |bias| + log 2), and the n² terms' sum by (n² − 1)·U of their total, divided by n."""
    logit = scale * ((3 * d + 6) + 1 + abs(np.log(scale)) + 2) * U + U * (scale + abs(bias))
    size = scale + abs(bias) + np.log(2)
    return float(n * (logit + 3 * U * size) + n * n * U * size + U * n * size)


def _randn(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _f64(x):
    return np.asarray(x, np.float64)


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _logsumexp(xs):
    xs = np.asarray(xs, np.float64)
    m = xs.max()
    return float(m + np.log(np.sum(np.exp(xs - m))))


# ---------------------------------------------------------------- numpy references (float64, loops)


def ref_lp_simclr(a, b, a_neg, b_neg, tau=1.0, alpha=0.5):
    a, b, a_neg, b_neg = map(_f64, (a, b, a_neg, b_neg))

    def direction(anchor, positive, negatives):
        losses = []
        for i in range(len(anchor)):
            pos = float(np.sum((anchor[i] - positive[i]) ** 2))
            terms = [-float(np.sum((anchor[i] - negatives[j]) ** 2)) / tau
                     for j in range(len(negatives))]
            terms.append(-pos / tau)
            log_mean_exp = _logsumexp(terms) - math.log(len(terms))
            losses.append(2.0 * (alpha * pos / tau + (1.0 - alpha) * log_mean_exp))
        return float(np.mean(losses))

    return 0.5 * (direction(a, b, a_neg) + direction(b, a, b_neg))


def ref_simclr(a, b, tau=1.0):
    items = np.concatenate([_f64(a), _f64(b)], 0)
    n = len(a)
    losses = []
    for k in range(2 * n):
        pos = (k + n) % (2 * n)
        logits = {j: _cos(items[k], items[j]) / tau for j in range(2 * n) if j != k}
        losses.append(_logsumexp(list(logits.values())) - logits[pos])
    return float(np.mean(losses))


def ref_clip(a, b, log_scale, max_scale=100.0):
    a, b = _f64(a), _f64(b)
    scale = min(math.exp(log_scale), max_scale)
    n = len(a)
    logits = [[scale * _cos(a[i], b[j]) for j in range(n)] for i in range(n)]
    i2t = [_logsumexp(logits[i]) - logits[i][i] for i in range(n)]
    t2i = [_logsumexp([logits[i][j] for i in range(n)]) - logits[j][j] for j in range(n)]
    return 0.5 * (float(np.mean(i2t)) + float(np.mean(t2i)))


def ref_info_nce(q, k, scale):
    """Mean over anchors i of -log softmax_j(scale·cos(q_i, k_j)) at j = i."""
    q, k = _f64(q), _f64(k)
    n = len(q)
    return float(np.mean([_logsumexp([scale * _cos(q[i], k[j]) for j in range(n)])
                          - scale * _cos(q[i], k[i]) for i in range(n)]))


def ref_siglip(a, b, log_scale, bias):
    a, b = _f64(a), _f64(b)
    scale = math.exp(log_scale)
    n = len(a)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            x = z * (scale * _cos(a[i], b[j]) + bias)
            total += -math.log1p(math.exp(-x))  # log sigmoid(x)
    return -total / n


# ---------------------------------------------------------------- single-device values


def test_pairwise_sq_dists():
    a, b = _randn(0, B, D), _randn(1, B + 2, D)
    want = np.array([[np.sum((_f64(a[i]) - _f64(b[j])) ** 2) for j in range(B + 2)]
                     for i in range(B)])
    got = np.asarray(pairwise_sq_dists(a, b), np.float64)
    assert np.all(np.abs(got - want) <= _gram_sq_dist_bound(a, b))
    # Gram form cancels badly for large, nearly equal rows: the clamp keeps it non-negative.
    big = 1e3 + 1e-3 * _randn(2, B, D)
    assert np.all(np.asarray(pairwise_sq_dists(big, big)) >= 0.0)


@pytest.mark.parametrize("tau, alpha", [(1.0, 0.5), (0.5, 0.5), (2.0, 0.3)])
def test_lp_simclr_matches_reference(tau, alpha):
    a, b, a_neg, b_neg = (_randn(s, B, D) for s in range(4))
    got = lp_simclr_loss(a, b, a_neg, b_neg, tau=tau, alpha=alpha)
    np.testing.assert_allclose(float(got), ref_lp_simclr(a, b, a_neg, b_neg, tau, alpha), rtol=0,
                               atol=_lp_simclr_atol(a, b, a_neg, b_neg, tau))


def test_lp_simclr_uses_same_modality_negatives():
    a, b, a_neg, b_neg = (_randn(s, B, D) for s in range(4))
    base = float(lp_simclr_loss(a, b, a_neg, b_neg))
    # Swapping the roles of the negative batches changes the value (negatives are per modality).
    assert not np.isclose(base, float(lp_simclr_loss(a, b, b_neg, a_neg)))


def test_lp_simclr_floor():
    a = _randn(5, B, D)
    far = a + 100.0  # every negative is far from every anchor
    got = float(lp_simclr_loss(a, a, far, far))
    # Exact in float32 but for log(B + 1): the positives are at distance 0 and exp(−d²) of the
    # negatives (d² ≈ 3·10⁴) underflows to 0, so the loss is −log(B + 1) to a few ulp (1e-6 ≈ 8 ulp).
    np.testing.assert_allclose(got, -math.log(B + 1), rtol=1e-6)
    np.testing.assert_allclose(ref_lp_simclr(a, a, far, far), -math.log(B + 1), rtol=1e-6)
    # With alpha = 0.5 it is a lower bound for any input.
    for s in range(3):
        x = [_randn(10 * s + k, B, D) for k in range(4)]
        assert float(lp_simclr_loss(*x)) > -math.log(B + 1)


def _lp_simclr_dense(a, b, a_neg, b_neg, tau, alpha):
    """LpSimCLR with the whole B x (B + 1) logit matrix and jax's own autodiff (mmjax's loss before
    the fused form): the reference for the fused loss's values and gradients."""

    def direction(anchor, positive, negatives):
        pos = jnp.sum((anchor - positive) ** 2, -1)
        logits = jnp.concatenate([-pairwise_sq_dists(anchor, negatives), -pos[:, None]], 1) / tau
        lme = jax.nn.logsumexp(logits, 1) - jnp.log(logits.shape[1])
        return jnp.mean(2.0 * (alpha * pos / tau + (1.0 - alpha) * lme))

    return 0.5 * (direction(a, b, a_neg) + direction(b, a, b_neg))


U64 = np.finfo(np.float64).eps / 2
FUSED_B, FUSED_D = 96, 5


def _fused_inputs(seed):
    return [jnp.asarray(np.random.default_rng(seed + k).standard_normal((FUSED_B, FUSED_D)))
            for k in range(4)]


def _order_atol(xs, tau):
    """Two float64 evaluations of one formula in different summation orders (blocked or not, fused or
    not): every sum there has at most B + D + 1 terms, each of size ≤ S (the largest |logit|, with
    ‖x‖², ‖y‖² and 2x·y at most S·τ), so the two differ by ≤ 2(B + D + 1)·U·S per sum; a value or
    gradient entry passes through at most 4 such sums (distance, logsumexp, softmax weight, reduction
    over anchors), and its factors (2, 1/τ, α) scale the result by at most 4/τ."""
    norms = [np.linalg.norm(np.asarray(x), axis=1) for x in xs]
    size = max(float(np.max((u[:, None] + v[None, :]) ** 2)) for u in norms for v in norms) / tau
    return 4 * 2 * (FUSED_B + FUSED_D + 1) * U64 * size * 4 / tau


@pytest.mark.parametrize("block", [FUSED_B, 32])
@pytest.mark.parametrize("tau, alpha", [(1.0, 0.5), (0.4, 0.2)])
def test_fused_lp_simclr_equals_dense_in_float64(monkeypatch, block, tau, alpha):
    """Value and gradient (embeddings, τ, α) of the fused, row-blocked loss equal jax's autodiff of the
    dense formula; block 32 runs the 96 rows as a scan over 3 blocks."""
    monkeypatch.setattr(contrastive, "LSE_BLOCK", block)
    with jax.enable_x64(True):
        xs = _fused_inputs(10)
        args = (*xs, jnp.float64(tau), jnp.float64(alpha))
        fused = jax.jit(jax.value_and_grad(
            lambda *v: lp_simclr_loss(*v[:4], tau=v[4], alpha=v[5]), argnums=tuple(range(6))))
        dense = jax.jit(jax.value_and_grad(_lp_simclr_dense, argnums=tuple(range(6))))
        (v1, g1), (v2, g2) = fused(*args), dense(*args)
        atol = _order_atol(xs, tau)
        np.testing.assert_allclose(float(v1), float(v2), rtol=0, atol=atol)
        for k, (got, want) in enumerate(zip(g1, g2, strict=True)):
            assert np.abs(np.asarray(want)).max() > 0
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=atol,
                                       err_msg=f"gradient of argument {k}")


@pytest.mark.parametrize("block", [FUSED_B, 32])
def test_swapped_lp_simclr_is_both_halves(monkeypatch, block):
    """lp_simclr_swapped_loss (each distance matrix once, as rows and as columns) equals the mean of
    the two lp_simclr_loss calls with the batches' roles swapped, value and gradients, in float64."""
    monkeypatch.setattr(contrastive, "LSE_BLOCK", block)
    with jax.enable_x64(True):
        xs = _fused_inputs(20)
        args = (*xs, jnp.float64(0.7), jnp.float64(0.5))

        def two_calls(a, b, a2, b2, tau, alpha):
            one = partial(lp_simclr_loss, tau=tau, alpha=alpha)
            return 0.5 * (one(a, b, a2, b2) + one(a2, b2, a, b))

        swapped = jax.jit(jax.value_and_grad(
            lambda *v: lp_simclr_swapped_loss(*v[:4], tau=v[4], alpha=v[5]), argnums=tuple(range(6))))
        separate = jax.jit(jax.value_and_grad(two_calls, argnums=tuple(range(6))))
        (v1, g1), (v2, g2) = swapped(*args), separate(*args)
        atol = _order_atol(xs, 0.7)
        np.testing.assert_allclose(float(v1), float(v2), rtol=0, atol=atol)
        for k, (got, want) in enumerate(zip(g1, g2, strict=True)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=atol,
                                       err_msg=f"gradient of argument {k}")


def test_row_blocks():
    assert contrastive._row_blocks(6144, 512) == 12
    assert contrastive._row_blocks(1000, 512) == 2  # two blocks of 500
    assert contrastive._row_blocks(96, 512) == 1
    assert contrastive._row_blocks(6143, 512) == 1  # prime: no split into blocks of 256..512 rows


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_simclr_cosine_matches_reference(tau):
    a, b = _randn(0, B, D), _randn(1, B, D)
    np.testing.assert_allclose(float(simclr_cosine_loss(a, b, tau=tau)), ref_simclr(a, b, tau),
                               rtol=0, atol=_infonce_atol(1 / tau, 2 * B - 1, 2 * B))


@pytest.mark.parametrize("tau", [1.0, 0.1, 0.02])
def test_simclr_cosine_without_in_modal_negatives_is_clip_at_fixed_tau(tau):
    a, b = _randn(0, B, D), _randn(1, B, D)
    got = float(simclr_cosine_loss(a, b, tau=tau, in_modal=False))
    np.testing.assert_allclose(got, ref_clip(a, b, math.log(1 / tau)), rtol=0, atol=_infonce_atol(1 / tau, B))
    # A traced 0/1 flag gives the same values as the Python bool: the same float32 operations (the
    # flag only masks logits), jitted instead of eager, so a few ulp of fusion difference at most.
    traced = jax.jit(lambda f: simclr_cosine_loss(a, b, tau=tau, in_modal=f))
    np.testing.assert_allclose(float(traced(jnp.float32(0.0))), got, rtol=1e-6)
    np.testing.assert_allclose(float(traced(jnp.float32(1.0))), ref_simclr(a, b, tau), rtol=0,
                               atol=_infonce_atol(1 / tau, 2 * B - 1, 2 * B))


@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07), math.log(30.0)])
def test_clip_matches_reference(log_scale):
    a, b = _randn(0, B, D), _randn(1, B, D)
    got = clip_loss(a, b, jnp.float32(log_scale))
    np.testing.assert_allclose(float(got), ref_clip(a, b, log_scale), rtol=0,
                               atol=_infonce_atol(math.exp(log_scale), B))


def test_clip_scale_clamped_at_100():
    a, b = _randn(0, B, D), _randn(1, B, D)
    at_100 = float(clip_loss(a, b, jnp.float32(math.log(100.0))))
    above = float(clip_loss(a, b, jnp.float32(math.log(1000.0))))
    tol = _infonce_atol(100.0, B)
    np.testing.assert_allclose(above, ref_clip(a, b, math.log(1000.0)), rtol=0, atol=tol)
    np.testing.assert_allclose(above, ref_clip(a, b, math.log(100.0)), rtol=0, atol=tol)
    # The clamp gives exactly 100; exp(float32(log 100)) is 100 to (|log 100| + 2)·U relative, which
    # moves every logit (|cos| ≤ 1) and so each lse − logit_ii term by at most twice that times 100.
    np.testing.assert_allclose(above, at_100, rtol=0, atol=2 * (math.log(100.0) + 2) * U * 100 + tol)
    unclamped = ref_clip(a, b, math.log(1000.0), max_scale=math.inf)
    assert not np.isclose(above, unclamped, rtol=1e-3)
    # The clamp is a knob too.
    got = float(clip_loss(a, b, jnp.float32(math.log(50.0)), max_scale=20.0))
    np.testing.assert_allclose(got, ref_clip(a, b, math.log(20.0)), rtol=0, atol=_infonce_atol(20.0, B))
    # No gradient flows to the temperature while it is clamped.
    g = jax.grad(lambda ls: clip_loss(a, b, ls))(jnp.float32(math.log(1000.0)))
    assert float(g) == 0.0


@pytest.mark.parametrize("log_scale, bias", [(0.0, 0.0), (math.log(10.0), -10.0), (1.0, 2.5)])
def test_siglip_matches_reference(log_scale, bias):
    a, b = _randn(0, B, D), _randn(1, B, D)
    got = siglip_loss(a, b, jnp.float32(log_scale), jnp.float32(bias))
    np.testing.assert_allclose(float(got), ref_siglip(a, b, log_scale, bias), rtol=0,
                               atol=_siglip_atol(math.exp(log_scale), bias))


@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07)])
def test_con_loss_matches_reference(log_scale):
    a, b, a2, b2 = (_randn(k, B, D) for k in range(4))
    scale = math.exp(log_scale)
    want = 0.25 * (ref_info_nce(a, b, scale) + ref_info_nce(b, a, scale)
                   + ref_info_nce(a, a2, scale) + ref_info_nce(b, b2, scale))
    got = float(con_loss(a, b, a2, b2, jnp.float32(log_scale)))
    np.testing.assert_allclose(got, want, rtol=0, atol=_infonce_atol(scale, B))  # a mean of 4 InfoNCEs
    # The cross-modal half is CLIP's loss (both float64: 1e-9 is ~10⁷ ulp of float64).
    np.testing.assert_allclose(0.5 * (ref_info_nce(a, b, scale) + ref_info_nce(b, a, scale)),
                               ref_clip(a, b, log_scale), rtol=1e-9)


# ---------------------------------------------------------------- 8 devices vs one

N_DEV, GLOBAL_B, GLOBAL_D = 8, 16, 4

# (loss, number of sharded embedding args, scalar args, keyword args)
CASES = {
    "lp_simclr": (lp_simclr_loss, 4, (), {"tau": 0.7, "alpha": 0.5}),
    "lp_simclr_swapped": (lp_simclr_swapped_loss, 4, (), {"tau": 0.7, "alpha": 0.5}),
    "simclr_cosine": (simclr_cosine_loss, 2, (), {"tau": 0.5}),
    "simclr_cross": (simclr_cosine_loss, 2, (), {"tau": 0.5, "in_modal": False}),
    "clip": (clip_loss, 2, (math.log(1 / 0.07),), {}),
    "siglip": (siglip_loss, 2, (math.log(10.0), -10.0), {}),
    "con": (con_loss, 4, (math.log(1 / 0.07),), {}),
}


@pytest.mark.needs_8_devices
@pytest.mark.parametrize("name", list(CASES))
def test_shard_map_matches_single_device(name):
    loss, n_emb, scalars, kwargs = CASES[name]
    embs = [jnp.asarray(_randn(100 + k, GLOBAL_B, GLOBAL_D)) for k in range(n_emb)]
    scalars = [jnp.float32(s) for s in scalars]
    args = (*embs, *scalars)
    argnums = tuple(range(len(args)))  # embeddings (and the learnable scalars)

    single = partial(loss, **kwargs)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:N_DEV]), ("data",))
    sharded = jax.shard_map(
        partial(loss, axis_name="data", **kwargs),
        mesh=mesh,
        in_specs=(P("data"),) * n_emb + (P(),) * len(scalars),
        out_specs=P(),
    )

    v1, g1 = jax.jit(jax.value_and_grad(single, argnums=argnums))(*args)
    v8, g8 = jax.jit(jax.value_and_grad(sharded, argnums=argnums))(*args)
    np.testing.assert_allclose(float(v8), float(v1), rtol=1e-5)
    for k, (got, want) in enumerate(zip(g8, g1, strict=True)):
        assert got.shape == want.shape
        assert np.abs(np.asarray(want)).max() > 0 or k >= n_emb
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5,
                                   err_msg=f"{name}: gradient of argument {k}")
