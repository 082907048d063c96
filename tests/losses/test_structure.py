"""Structure regularizers against hand values and float64 numpy formulas, and their multi-device versions."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax.losses.contrastive import con_loss
from mmjax.losses.structure import bridge_loss, bridge_point, gc_loss, sep_loss, uniformity

B, D = 4, 3

# Tolerances against the float64 formulas: worst-case float32 bounds for any summation order (any CPU,
# any thread count); U is the float32 unit roundoff. A cosine of two float32-normalised rows errs by
# at most C = (3D + 6)·U ((D + 3)·U per normalised component, D·U for the dot).
U = np.finfo(np.float32).eps / 2
_C = (3 * D + 6) * U
# A mean over ≤ B² pairs of a squared difference of cosines (≤ 4): 2·2·2C + 3·4U per pair, plus the
# sum's (B² − 1)·U·4. The bridge term ‖z_a − μ‖² (≤ 4) of unit vectors is bounded the same way.
_SQ = 8 * _C + 12 * U + B * B * 4 * U
# In-modal InfoNCE at 1/τ ≤ 10: logits err by 10·C + 2U (the product, τ's rounding), logsumexp over B
# keys (|lse| ≤ 10 + log B) by (B + 2)·U·(1 + 10 + log B) more, lse − logit_ii twice a logit, the mean
# over B anchors (B + 1)·U·(20 + log B).
_NCE = 2 * (10 * _C + 2 * U) + (B + 2) * U * (11 + math.log(B)) + (B + 1) * U * (20 + math.log(B))
# Uniformity at t = 2: logits −t(2 − 2cos) err by 4C + 3U, logsumexp over B² of them (|lse| ≤ 8 + log B²)
# by (B² + 2)·U·(9 + log B²), and the final − log B² by U·(8 + log B²).
_UNIF = 4 * _C + 3 * U + (B * B + 2) * U * (9 + math.log(B * B)) + U * (8 + math.log(B * B))
_TERM_ATOL = {"orthogonality": 2 * _SQ, "infonce": 2 * _NCE, "uniformity": 2 * _UNIF,  # two modalities
              "symmetry": _SQ, "gram": _SQ, "aug_gram": 2 * _SQ, "aug_pair": _SQ, "bridge": _SQ}


def _total_atol(weights: dict) -> float:
    """Σ w·(bound of its term), plus the weighted sum's own rounding (≤ 4 terms of ≤ 2·20)."""
    return float(sum(abs(w) * _TERM_ATOL[k] for k, w in weights.items()) + 4 * 4 * U * 40)


def _randn(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _logsumexp(xs):
    xs = np.asarray(xs, np.float64)
    m = xs.max()
    return float(m + np.log(np.sum(np.exp(xs - m))))


# ---------------------------------------------------------------- numpy references (float64)


def ref_uniformity(u, t=2.0):
    u = _unit(u)
    n = len(u)
    return math.log(np.mean([[math.exp(-t * np.sum((u[j] - u[k]) ** 2)) for k in range(n)]
                             for j in range(n)]))


def ref_in_modal_nce(q, k, tau):
    q, k = _unit(q), _unit(k)
    n = len(q)
    return float(np.mean([_logsumexp([q[i] @ k[j] / tau for j in range(n)]) - q[i] @ k[i] / tau
                          for i in range(n)]))


def ref_sep(zv, zt, uv, ut, uv2, ut2, tau, t=2.0):
    zv, zt, uv, ut = map(_unit, (zv, zt, uv, ut))
    orth = float(np.mean([(zv[j] @ uv[j]) ** 2 + (zt[j] @ ut[j]) ** 2 for j in range(len(zv))]))
    nce = ref_in_modal_nce(uv, uv2, tau) + ref_in_modal_nce(ut, ut2, tau)
    unif = ref_uniformity(uv, t) + ref_uniformity(ut, t)
    return {"orthogonality": orth, "infonce": nce, "uniformity": unif}


def ref_bridge(zv, zt, zva, t):
    zv, zt, zva = map(_unit, (zv, zt, zva))
    t = np.broadcast_to(np.asarray(t, np.float64), (len(zv),))
    mu = _unit(t[:, None] * zv + (1 - t[:, None]) * zt)
    return float(np.mean(np.sum((zva - mu) ** 2, -1)))


def ref_gc(zv, zt, zva, zta):
    zv, zt, zva, zta = map(_unit, (zv, zt, zva, zta))
    n = len(zv)
    sym = gram = aug_gram = 0.0
    for j in range(n):
        for k in range(n):
            sym += (zv[j] @ zt[k] - zv[k] @ zt[j]) ** 2
            gram += (zv[j] @ zv[k] - zt[j] @ zt[k]) ** 2
            aug_gram += (zv[j] @ zv[k] - zva[j] @ zva[k]) ** 2 + (zt[j] @ zt[k] - zta[j] @ zta[k]) ** 2
    aug_pair = sum((zv[j] @ zt[j] - zva[j] @ zta[j]) ** 2 for j in range(n))
    return {"symmetry": sym / n, "gram": gram / n, "aug_gram": aug_gram / n, "aug_pair": aug_pair / n}


def _assert_terms(got, want):
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(float(got[name]), want[name], rtol=0, atol=_TERM_ATOL[name], err_msg=name)


# ---------------------------------------------------------------- L_Sep


def test_uniformity_hand_value():
    # Two orthogonal unit vectors: distances 0 (twice, j = k) and 2 (twice); scale is irrelevant.
    # The rows normalise exactly, so only exp, the sum and log round: a few ulp (1e-6 is 17 U).
    u = np.array([[3.0, 0.0], [0.0, 0.5]], np.float32)
    want = math.log((2.0 + 2.0 * math.exp(-4.0)) / 4.0)
    np.testing.assert_allclose(float(uniformity(u)), want, rtol=1e-6)
    np.testing.assert_allclose(float(uniformity(u, t=0.5)), math.log((2 + 2 * math.exp(-1)) / 4), rtol=1e-6)
    # All rows equal: every distance is 0, the maximum value log 1 = 0. (1, 1)/√2 is inexact, so each
    # squared distance 2 − 2cos is only within 2C of 0, and the value within t·2C = 4C (t = 2).
    np.testing.assert_allclose(float(uniformity(np.ones((3, 2), np.float32))), 0.0, atol=4 * (3 * 2 + 6) * U)


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_sep_matches_reference(tau):
    args = [_randn(s, B, D) for s in range(6)]
    total, terms = sep_loss(*args, tau=tau, w_orth=0.5, w_nce=2.0, w_unif=0.3)
    want = ref_sep(*args, tau=tau)
    _assert_terms(terms, want)
    np.testing.assert_allclose(
        float(total), 0.5 * want["orthogonality"] + 2.0 * want["infonce"] + 0.3 * want["uniformity"],
        rtol=0, atol=_total_atol({"orthogonality": 0.5, "infonce": 2.0, "uniformity": 0.3}))


def test_sep_orthogonality_hand_value_and_zero():
    # Rows that normalise exactly or to (1, ±1)/√2: with C2 = 12U (C for d = 2) each cos errs by at
    # most C2, each cos² (|cos| ≤ 1) by 2·C2 + U, the mean of the two rows' sums by twice that + 3U.
    # An exactly orthogonal pair gives |cos| ≤ C2, so cos² ≤ C2² ≈ 5e-13.
    c2 = (3 * 2 + 6) * U
    zv = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    uv = np.array([[1.0, 1.0], [0.0, -1.0]], np.float32)  # cos² = 1/2, then 1
    zt = np.array([[0.0, 1.0], [1.0, 1.0]], np.float32)
    ut = np.array([[5.0, 0.0], [1.0, -1.0]], np.float32)  # orthogonal: cos² = 0
    _, terms = sep_loss(zv, zt, uv, ut, uv, ut)
    np.testing.assert_allclose(float(terms["orthogonality"]), 0.75, rtol=0, atol=2 * (2 * c2 + U) + 3 * U)
    _, terms = sep_loss(zt, zt, ut, ut, ut, ut)
    np.testing.assert_allclose(float(terms["orthogonality"]), 0.0, atol=1e-7)


def test_sep_infonce_hand_value():
    # Two orthogonal independent features, augmented views identical, tau = 1: per anchor
    # logsumexp(1, 0) − 1 = log(1 + e^{-1}); image and text terms add. Exact inputs: only exp, log and
    # the sums round, a few ulp (1e-6 is 17 U).
    u = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    _, terms = sep_loss(u, u, u, u, u, u, tau=1.0)
    np.testing.assert_allclose(float(terms["infonce"]), 2 * math.log1p(math.exp(-1.0)), rtol=1e-6)


# ---------------------------------------------------------------- L_Br


def test_bridge_hand_value():
    zv = np.array([[1.0, 0.0]], np.float32)
    zt = np.array([[0.0, 2.0]], np.float32)
    # μ = normalize(0.25·e1 + 0.75·e2); ‖e1 − μ‖² = 2 − 2·0.25/√0.625.
    want = 2.0 - 2.0 * 0.25 / math.sqrt(0.25**2 + 0.75**2)
    np.testing.assert_allclose(float(bridge_loss(zv, zt, zv)), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bridge_point(zv, zt)), _unit([[0.25, 0.75]]), rtol=1e-6)


def test_bridge_matches_reference_and_zero_on_the_bridge():
    zv, zt, za = (_randn(s, B, D) for s in range(3))
    for t in (0.25, 0.7):
        np.testing.assert_allclose(float(bridge_loss(zv, zt, za, t=t)), ref_bridge(zv, zt, za, t),
                                   rtol=0, atol=_TERM_ATOL["bridge"])
    t_rows = np.array([0.1, 0.4, 0.6, 0.9], np.float32)
    np.testing.assert_allclose(float(bridge_loss(zv, zt, za, t=t_rows)), ref_bridge(zv, zt, za, t_rows),
                               rtol=0, atol=_TERM_ATOL["bridge"])
    # An augmented feature on the bridge (any positive scale) costs nothing.
    on_bridge = 3.0 * np.asarray(bridge_point(zv, zt, 0.25))
    np.testing.assert_allclose(float(bridge_loss(zv, zt, on_bridge)), 0.0, atol=1e-6)


def test_bridge_sampled_t():
    zv, zt, za = (_randn(s, B, D) for s in range(3))
    key = jax.random.key(3)
    t = np.asarray(jax.random.uniform(key, (B,)))
    assert len(np.unique(t)) == B and np.all((t >= 0) & (t < 1))
    np.testing.assert_allclose(float(bridge_loss(zv, zt, za, key=key)), ref_bridge(zv, zt, za, t),
                               rtol=0, atol=_TERM_ATOL["bridge"])


def test_bridge_stop_gradient():
    zv, zt, za = (jnp.asarray(_randn(s, B, D)) for s in range(3))
    g_free = jax.grad(bridge_loss, argnums=(0, 1, 2))(zv, zt, za)
    g_stop = jax.grad(partial(bridge_loss, stop_gradient_bridge=True), argnums=(0, 1, 2))(zv, zt, za)
    assert np.abs(np.asarray(g_free[1])).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(g_stop[1]), 0.0)
    np.testing.assert_array_equal(np.asarray(g_stop[0]), 0.0)
    # The augmented feature's gradient is unchanged.
    np.testing.assert_allclose(np.asarray(g_stop[2]), np.asarray(g_free[2]), rtol=1e-6)
    np.testing.assert_allclose(float(bridge_loss(zv, zt, za, stop_gradient_bridge=True)),
                               float(bridge_loss(zv, zt, za)), rtol=1e-7)


# ---------------------------------------------------------------- L_GC + L^a_GC


def test_gc_matches_reference():
    args = [_randn(10 + s, B, D) for s in range(4)]
    total, terms = gc_loss(*args, w_sym=0.5, w_gram=0.25, w_aug=2.0)
    want = ref_gc(*args)
    _assert_terms(terms, want)
    np.testing.assert_allclose(
        float(total),
        0.5 * want["symmetry"] + 0.25 * want["gram"] + 2.0 * (want["aug_gram"] + want["aug_pair"]),
        rtol=0, atol=_total_atol({"symmetry": 0.5, "gram": 0.25, "aug_gram": 2.0, "aug_pair": 2.0}))
    # Without augmented features only L_GC is computed.
    total, terms = gc_loss(*args[:2])
    assert set(terms) == {"symmetry", "gram"}
    np.testing.assert_allclose(float(total), 0.25 * (want["symmetry"] + want["gram"]), rtol=0,
                               atol=_total_atol({"symmetry": 0.25, "gram": 0.25}))


def test_gc_hand_value():
    # zv = (e1, e2), zt = (e1, e1): ⟨zv_j, zt_k⟩ = [[1, 1], [0, 0]], asymmetric off the diagonal by 1
    # twice; Gram matrices [[1, 0], [0, 1]] vs all-ones differ by 1 twice. (1/N)·2 = 1 each.
    zv = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    zt = np.array([[1.0, 0.0], [2.0, 0.0]], np.float32)
    _, terms = gc_loss(zv, zt, zv, zt)
    _assert_terms(terms, {"symmetry": 1.0, "gram": 1.0, "aug_gram": 0.0, "aug_pair": 0.0})
    # Augmenting the second image onto the first: its Gram rows change by 1 twice, its pair sim by 1.
    _, terms = gc_loss(zv, zt, zv[[0, 0]], zt)
    np.testing.assert_allclose(float(terms["aug_gram"]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(terms["aug_pair"]), 0.5, rtol=1e-6)


def test_gc_zero_for_identical_towers():
    z = _randn(20, B, D)
    # 2z normalises to z within 2(D + 3)·U per component: each cosine difference is O(C), each squared
    # one O(C²) ≈ 1e-12, far inside 1e-6.
    total, terms = gc_loss(z, 2.0 * z, z, z)
    np.testing.assert_allclose(float(total), 0.0, atol=1e-6)
    for v in terms.values():
        np.testing.assert_allclose(float(v), 0.0, atol=1e-6)


# ---------------------------------------------------------------- 8 devices vs one

N_DEV, GLOBAL_B, GLOBAL_D = 8, 16, 4


def _total(fn):
    """The scalar of a loss that may return (total, terms), with the terms as aux."""

    def wrapped(*args):
        out = fn(*args)
        return out if isinstance(out, tuple) else (out, {})

    return wrapped


# (loss, number of sharded embedding args, pass a replicated key, keyword args)
CASES = {
    "uniformity": (uniformity, 1, False, {"t": 2.0}),
    "sep": (sep_loss, 6, False, {"tau": 0.5}),
    "bridge": (bridge_loss, 3, False, {}),
    "bridge_sampled_t": (lambda a, b, c, key, **kw: bridge_loss(a, b, c, key=key, **kw), 3, True, {}),
    "gc": (gc_loss, 4, False, {"w_aug": 0.5}),
}


@pytest.mark.needs_8_devices
@pytest.mark.parametrize("name", list(CASES))
def test_shard_map_matches_single_device(name):
    loss, n_emb, with_key, kwargs = CASES[name]
    embs = [jnp.asarray(_randn(100 + k, GLOBAL_B, GLOBAL_D)) for k in range(n_emb)]
    extra = (jax.random.key(7),) if with_key else ()
    argnums = tuple(range(n_emb))

    single = _total(partial(loss, **kwargs))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:N_DEV]), ("data",))
    sharded = jax.shard_map(
        _total(partial(loss, axis_name="data", **kwargs)),
        mesh=mesh,
        in_specs=(P("data"),) * n_emb + (P(),) * len(extra),
        out_specs=P(),
    )

    (v1, t1), g1 = jax.jit(jax.value_and_grad(single, argnums=argnums, has_aux=True))(*embs, *extra)
    (v8, t8), g8 = jax.jit(jax.value_and_grad(sharded, argnums=argnums, has_aux=True))(*embs, *extra)
    np.testing.assert_allclose(float(v8), float(v1), rtol=1e-5)
    for term in t1:
        np.testing.assert_allclose(float(t8[term]), float(t1[term]), rtol=1e-5, atol=1e-7, err_msg=term)
    for k, (got, want) in enumerate(zip(g8, g1, strict=True)):
        assert got.shape == want.shape
        assert np.abs(np.asarray(want)).max() > 0
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5,
                                   err_msg=f"{name}: gradient of argument {k}")


def test_combined_losses_finite():
    zv, zt, zv2, zt2, uv, ut, uv2, ut2 = (jnp.asarray(_randn(30 + k, 8, 5)) for k in range(8))
    log_scale = jnp.float32(math.log(1 / 0.07))

    def total(zv, zt, zv2, zt2, uv, ut, uv2, ut2):
        sep, _ = sep_loss(zv, zt, uv, ut, uv2, ut2)
        gc, _ = gc_loss(zv, zt, zv2, zt2)
        br = bridge_loss(zv, zt, zv2, key=jax.random.key(0), stop_gradient_bridge=True)
        return con_loss(zv, zt, zv2, zt2, log_scale) + 0.1 * sep + br + gc

    value, grads = jax.jit(jax.value_and_grad(total, argnums=tuple(range(8))))(
        zv, zt, zv2, zt2, uv, ut, uv2, ut2)
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
