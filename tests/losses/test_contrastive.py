"""Contrastive losses against loop-based float64 numpy references, and their multi-device versions."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax.losses.contrastive import (
    clip_loss,
    con_loss,
    lp_simclr_loss,
    pairwise_sq_dists,
    siglip_loss,
    simclr_cosine_loss,
)

B, D = 6, 3


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
    np.testing.assert_allclose(np.asarray(pairwise_sq_dists(a, b)), want, rtol=1e-5, atol=1e-5)
    # Gram form cancels badly for large, nearly equal rows: the clamp keeps it non-negative.
    big = 1e3 + 1e-3 * _randn(2, B, D)
    assert np.all(np.asarray(pairwise_sq_dists(big, big)) >= 0.0)


@pytest.mark.parametrize("tau, alpha", [(1.0, 0.5), (0.5, 0.5), (2.0, 0.3)])
def test_lp_simclr_matches_reference(tau, alpha):
    a, b, a_neg, b_neg = (_randn(s, B, D) for s in range(4))
    got = lp_simclr_loss(a, b, a_neg, b_neg, tau=tau, alpha=alpha)
    np.testing.assert_allclose(float(got), ref_lp_simclr(a, b, a_neg, b_neg, tau, alpha), rtol=1e-5)


def test_lp_simclr_uses_same_modality_negatives():
    a, b, a_neg, b_neg = (_randn(s, B, D) for s in range(4))
    base = float(lp_simclr_loss(a, b, a_neg, b_neg))
    # Swapping the roles of the negative batches changes the value (negatives are per modality).
    assert not np.isclose(base, float(lp_simclr_loss(a, b, b_neg, a_neg)))


def test_lp_simclr_floor():
    a = _randn(5, B, D)
    far = a + 100.0  # every negative is far from every anchor
    got = float(lp_simclr_loss(a, a, far, far))
    np.testing.assert_allclose(got, -math.log(B + 1), rtol=1e-6)
    np.testing.assert_allclose(ref_lp_simclr(a, a, far, far), -math.log(B + 1), rtol=1e-6)
    # With alpha = 0.5 it is a lower bound for any input.
    for s in range(3):
        x = [_randn(10 * s + k, B, D) for k in range(4)]
        assert float(lp_simclr_loss(*x)) > -math.log(B + 1)


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_simclr_cosine_matches_reference(tau):
    a, b = _randn(0, B, D), _randn(1, B, D)
    np.testing.assert_allclose(float(simclr_cosine_loss(a, b, tau=tau)), ref_simclr(a, b, tau),
                               rtol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.1, 0.02])
def test_simclr_cosine_without_in_modal_negatives_is_clip_at_fixed_tau(tau):
    a, b = _randn(0, B, D), _randn(1, B, D)
    got = float(simclr_cosine_loss(a, b, tau=tau, in_modal=False))
    np.testing.assert_allclose(got, ref_clip(a, b, math.log(1 / tau)), rtol=1e-5)
    # A traced 0/1 flag gives the same values as the Python bool.
    traced = jax.jit(lambda f: simclr_cosine_loss(a, b, tau=tau, in_modal=f))
    np.testing.assert_allclose(float(traced(jnp.float32(0.0))), got, rtol=1e-6)
    np.testing.assert_allclose(float(traced(jnp.float32(1.0))), ref_simclr(a, b, tau), rtol=1e-5)


@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07), math.log(30.0)])
def test_clip_matches_reference(log_scale):
    a, b = _randn(0, B, D), _randn(1, B, D)
    got = clip_loss(a, b, jnp.float32(log_scale))
    np.testing.assert_allclose(float(got), ref_clip(a, b, log_scale), rtol=1e-5)


def test_clip_scale_clamped_at_100():
    a, b = _randn(0, B, D), _randn(1, B, D)
    at_100 = float(clip_loss(a, b, jnp.float32(math.log(100.0))))
    above = float(clip_loss(a, b, jnp.float32(math.log(1000.0))))
    np.testing.assert_allclose(above, ref_clip(a, b, math.log(1000.0)), rtol=1e-5)
    np.testing.assert_allclose(above, ref_clip(a, b, math.log(100.0)), rtol=1e-5)
    np.testing.assert_allclose(above, at_100, rtol=1e-6)
    unclamped = ref_clip(a, b, math.log(1000.0), max_scale=math.inf)
    assert not np.isclose(above, unclamped, rtol=1e-3)
    # The clamp is a knob too.
    got = float(clip_loss(a, b, jnp.float32(math.log(50.0)), max_scale=20.0))
    np.testing.assert_allclose(got, ref_clip(a, b, math.log(20.0)), rtol=1e-5)
    # No gradient flows to the temperature while it is clamped.
    g = jax.grad(lambda ls: clip_loss(a, b, ls))(jnp.float32(math.log(1000.0)))
    assert float(g) == 0.0


@pytest.mark.parametrize("log_scale, bias", [(0.0, 0.0), (math.log(10.0), -10.0), (1.0, 2.5)])
def test_siglip_matches_reference(log_scale, bias):
    a, b = _randn(0, B, D), _randn(1, B, D)
    got = siglip_loss(a, b, jnp.float32(log_scale), jnp.float32(bias))
    np.testing.assert_allclose(float(got), ref_siglip(a, b, log_scale, bias), rtol=1e-5)


@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07)])
def test_con_loss_matches_reference(log_scale):
    a, b, a2, b2 = (_randn(k, B, D) for k in range(4))
    scale = math.exp(log_scale)
    want = 0.25 * (ref_info_nce(a, b, scale) + ref_info_nce(b, a, scale)
                   + ref_info_nce(a, a2, scale) + ref_info_nce(b, b2, scale))
    got = float(con_loss(a, b, a2, b2, jnp.float32(log_scale)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The cross-modal half is CLIP's loss.
    np.testing.assert_allclose(0.5 * (ref_info_nce(a, b, scale) + ref_info_nce(b, a, scale)),
                               ref_clip(a, b, log_scale), rtol=1e-9)


# ---------------------------------------------------------------- 8 devices vs one

N_DEV, GLOBAL_B, GLOBAL_D = 8, 16, 4

# (loss, number of sharded embedding args, scalar args, keyword args)
CASES = {
    "lp_simclr": (lp_simclr_loss, 4, (), {"tau": 0.7, "alpha": 0.5}),
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
