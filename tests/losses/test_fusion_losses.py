"""ALBEF pre-training losses against float64 formulas, statistical tests of the samplers, and their
multi-device versions against one device on the concatenated batch."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax.losses.fusion import (
    IGNORE_INDEX,
    ITCOutput,
    ema_update,
    enqueue,
    init_queue,
    itc_loss,
    itm_accuracy,
    itm_loss,
    mask_tokens,
    mlm_accuracy,
    mlm_loss,
    sample_hard_negatives,
)

# Tolerances against float64: worst-case float32 error bounds, whatever the summation order (so on any
# CPU and thread count). U is the float32 unit roundoff; a sum of n terms errs by at most n·U times the
# sum of their magnitudes, a product or quotient by U of its size.
U = float(np.finfo(np.float32).eps) / 2
N_DEV = 8


def _f64(x):
    return np.asarray(x, np.float64)


def _unit(x):
    x = np.asarray(x, np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _randn(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _logsumexp(xs):
    xs = np.asarray(xs, np.float64)
    m = xs.max()
    return float(m + np.log(np.sum(np.exp(xs - m))))


def _mesh():
    return jax.sharding.Mesh(np.array(jax.devices()[:N_DEV]), ("data",))


# ---------------------------------------------------------------- ITC


def _itc_inputs(seed, b, q, d):
    """Online/momentum features of b pairs (momentum ≈ online, texts ≈ their images) and two queues."""
    img = _unit(_randn(seed, b, d))
    txt = _unit(img + _randn(seed + 1, b, d))
    img_m = _unit(img + 0.3 * _randn(seed + 2, b, d))
    txt_m = _unit(txt + 0.3 * _randn(seed + 3, b, d))
    return img, txt, img_m, txt_m, _unit(_randn(seed + 4, q, d)), _unit(_randn(seed + 5, q, d))


def ref_itc(img, txt, img_m, txt_m, q_img, q_txt, temp, alpha):
    """(loss, d/d img, d/d txt, d/d τ) by loops in float64, from ALBEF's formulas (targets constant)."""
    img, txt, img_m, txt_m, q_img, q_txt = map(_f64, (img, txt, img_m, txt_m, q_img, q_txt))
    b = len(img)

    def direction(q, q_m, keys):
        losses, grads, g_temp = [], [], 0.0
        for i in range(b):
            logits = np.array([q[i] @ keys[j] / temp for j in range(len(keys))])
            logits_m = np.array([q_m[i] @ keys[j] / temp for j in range(len(keys))])
            p_m = np.exp(logits_m - _logsumexp(logits_m))
            target = alpha * p_m + (1 - alpha) * (np.arange(len(keys)) == i)
            log_p = logits - _logsumexp(logits)
            losses.append(-np.sum(target * log_p))
            # d/dq_i of H(target, softmax(q_i·keys/τ)) = Σ_j (p_j − target_j)·keys_j / τ.
            grads.append(sum((np.exp(log_p[j]) - target[j]) * keys[j] for j in range(len(keys))) / temp)
            # and d/dτ of it, through the logits q_i·k_j/τ only: Σ_j (p_j − target_j)·(−logit_j/τ).
            g_temp -= np.sum((np.exp(log_p) - target) * logits) / temp
        return float(np.mean(losses)), np.array(grads) / b, g_temp / b

    l_i2t, g_img, gt_i2t = direction(img, img_m, np.concatenate([txt_m, q_txt]))
    l_t2i, g_txt, gt_t2i = direction(txt, txt_m, np.concatenate([img_m, q_img]))
    return 0.5 * (l_i2t + l_t2i), 0.5 * g_img, 0.5 * g_txt, 0.5 * (gt_i2t + gt_t2i)


def _itc_bounds(temp, n_keys, n_anchors, d, alpha):
    """(loss, feature-gradient, τ-gradient) atol of float32 itc_loss against the exact values.

    A logit q·k/τ errs by δ = (d + 1)·U·r²·s (s = 1/τ: the d-term dot, then the quotient); |logit| ≤
    M = r²·s, so a log-softmax entry (|·| ≤ L = 2M + log n over n keys) errs by
    E_ls = 2δ + (n + 2)·U·(1 + M + log n) + U·L, and a softmax probability by the relative
    E_p = 2(2δ + 2M·U) + (n + 3)·U (shifted logits, exp, the n-term sum, the quotient). The targets
    α·p + (1 − α)·onehot then err by E_t = α·E_p + 5U in total (α and 1 − α rounded too); a row's loss
    −Σ_j t_j·log p_j by E_t·L + E_ls + (n + 1)·U·L; the mean over the anchors adds (m + 1)·U·L and the
    average of the two directions U·L. The gradient of image i, (0.5/m)·Σ_j (p_j − t_j)·k_j/τ, errs by
    (0.5/m)·s·r·(E_p + E_ls + E_t + 2(n + 3)·U) (p from exp(log p), the n-term backward sum) =: (0.5/m)·s·r·X.
    d/dτ = −(0.5/m)·s·Σ over 2m rows of Σ_j (p_j − t_j)·logit_j errs per row by X·M + 2δ (|logit| ≤ M,
    Σ_j |p_j − t_j| ≤ 2), so in all by s·(X·M + 2δ) plus the 2m-row sum's and the quotient rule's
    rounding, (2m + 4)·U·s·2M.
    """
    r = 1.0 + 4 * U * d  # float32-normalised rows
    s = 1.0 / temp
    big_m = r * r * s
    lse = big_m + math.log(n_keys)
    big_l = 2 * big_m + math.log(n_keys)
    delta = (d + 1) * U * r * r * s
    e_ls = 2 * delta + (n_keys + 2) * U * (1 + lse) + U * big_l
    e_p = 2 * (2 * delta + 2 * big_m * U) + (n_keys + 3) * U
    e_t = alpha * e_p + 5 * U
    row = e_t * big_l + e_ls + (n_keys + 1) * U * big_l
    loss = row + (n_anchors + 2) * U * big_l
    x = e_p + e_ls + e_t + 2 * (n_keys + 3) * U
    grad = 0.5 / n_anchors * s * r * x
    grad_temp = s * (x * big_m + 2 * delta) + (2 * n_anchors + 4) * U * s * 2 * big_m
    return float(loss), float(grad), float(grad_temp)


@pytest.mark.parametrize("temp, alpha", [(0.07, 0.0), (0.07, 0.4), (0.5, 0.4)])
def test_itc_matches_reference(temp, alpha):
    b, q, d = 4, 8, 6
    args = _itc_inputs(0, b, q, d)
    temp32 = np.float32(temp)
    want, g_img, g_txt, g_temp = ref_itc(*args, float(temp32), alpha)
    loss_atol, grad_atol, temp_atol = _itc_bounds(float(temp32), b + q, b, d, alpha)

    def f(*a):
        out = itc_loss(*a[:6], temp=a[6], alpha=alpha)
        return out.loss, out

    (got, out), grads = jax.jit(jax.value_and_grad(f, argnums=tuple(range(7)), has_aux=True))(
        *map(jnp.asarray, args), temp32)
    np.testing.assert_allclose(float(got), want, rtol=0, atol=loss_atol)
    np.testing.assert_allclose(float(out.loss_i2t + out.loss_t2i) / 2, float(got), rtol=0, atol=4 * U * want)
    np.testing.assert_allclose(np.asarray(grads[0], np.float64), g_img, rtol=0, atol=grad_atol)
    np.testing.assert_allclose(np.asarray(grads[1], np.float64), g_txt, rtol=0, atol=grad_atol)
    np.testing.assert_allclose(float(grads[6]), g_temp, rtol=0, atol=temp_atol)
    for k in range(2, 6):  # momentum features and queues: constants
        assert not np.any(np.asarray(grads[k])), f"gradient reached argument {k}"
    # The hard-negative similarities: online image · momentum texts of the batch, over τ (their error
    # is a logit's δ; see _itc_bounds).
    img, txt, img_m, txt_m = map(_f64, args[:4])
    delta = (d + 2) * U / float(temp32)
    np.testing.assert_allclose(np.asarray(out.sim_i2t), img @ txt_m.T / float(temp32), rtol=0, atol=delta)
    np.testing.assert_allclose(np.asarray(out.sim_t2i), txt @ img_m.T / float(temp32), rtol=0, atol=delta)


def test_itc_alpha_one_is_pure_distillation():
    # α = 1 drops the one-hot: with momentum = online features the target is the model's own softmax,
    # so each direction is the mean entropy of its p (float64 both: 1e-9 ≈ 10⁷ ulp of two orderings).
    img, txt, _, _, q_img, q_txt = _itc_inputs(3, 4, 8, 6)
    temp = float(np.float32(0.1))
    want = ref_itc(img, txt, img, txt, q_img, q_txt, temp, 1.0)[0]

    def mean_entropy(q, keys):
        logits = _f64(q) @ _f64(keys).T / temp
        log_p = logits - np.log(np.sum(np.exp(logits), 1, keepdims=True))
        return float(np.mean(-np.sum(np.exp(log_p) * log_p, 1)))

    entropy = 0.5 * (mean_entropy(img, np.concatenate([txt, q_txt]))
                     + mean_entropy(txt, np.concatenate([img, q_img])))
    assert entropy > 0.1
    np.testing.assert_allclose(want, entropy, rtol=1e-9)
    got = itc_loss(*map(jnp.asarray, (img, txt, img, txt, q_img, q_txt)), temp=np.float32(0.1), alpha=1.0)
    np.testing.assert_allclose(float(got.loss), want, rtol=0, atol=_itc_bounds(temp, 12, 4, 6, 1.0)[0])


def test_itc_rejects_bad_alpha_and_temp():
    args = [jnp.asarray(a) for a in _itc_inputs(0, 4, 8, 6)]
    with pytest.raises(ValueError, match=r"^alpha=1.5: .*\[0, 1\]"):
        itc_loss(*args, temp=0.07, alpha=1.5)
    with pytest.raises(ValueError, match=r"^temp=0.0: "):
        itc_loss(*args, temp=0.0, alpha=0.4)


@pytest.mark.needs_8_devices
def test_itc_shard_map_matches_single_device():
    gb, q, d, temp, alpha = 16, 32, 6, np.float32(0.07), 0.4
    args = tuple(jnp.asarray(a) for a in _itc_inputs(10, gb, q, d))

    def value(fn):
        def f(img, txt, temp, *rest):
            out = fn(img, txt, *rest, temp=temp, alpha=alpha)
            return out.loss, out
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

    def sharded_call(img, txt, img_m, txt_m, qi, qt, *, temp, alpha):
        # shard_map maps positional arrays: the temperature travels as a replicated one.
        fn = jax.shard_map(
            lambda *a: itc_loss(*a[:6], temp=a[6], alpha=alpha, axis_name="data"), mesh=_mesh(),
            in_specs=(P("data"),) * 4 + (P(), P(), P()),
            out_specs=ITCOutput(P(), P(), P(), P("data"), P("data")))
        return fn(img, txt, img_m, txt_m, qi, qt, temp)

    img, txt, img_m, txt_m, qi, qt = args
    (v1, o1), g1 = value(itc_loss)(img, txt, temp, img_m, txt_m, qi, qt)
    (v8, o8), g8 = value(sharded_call)(img, txt, temp, img_m, txt_m, qi, qt)
    # Both are within the float32 bound of the exact value, so within twice it of each other.
    loss_atol, grad_atol, temp_atol = _itc_bounds(float(temp), gb + q, gb, d, alpha)
    np.testing.assert_allclose(float(v8), float(v1), rtol=0, atol=2 * loss_atol)
    for k in range(2):
        assert np.abs(np.asarray(g1[k])).max() > 0
        np.testing.assert_allclose(np.asarray(g8[k]), np.asarray(g1[k]), rtol=0, atol=2 * grad_atol)
    np.testing.assert_allclose(float(g8[2]), float(g1[2]), rtol=0, atol=2 * temp_atol)
    s = 1 / float(temp)
    # The similarity rows each device returns are its rows of the single-device matrices.
    for name in ("sim_i2t", "sim_t2i"):
        np.testing.assert_allclose(np.asarray(getattr(o8, name)), np.asarray(getattr(o1, name)), rtol=0,
                                   atol=2 * (d + 2) * U * s)


# ---------------------------------------------------------------- queue, EMA


def test_enqueue_is_fifo_and_keeps_the_newest():
    q_size, b, d = 12, 4, 3
    step = jax.jit(enqueue)
    queue, ptr = jnp.zeros((q_size, d)), jnp.int32(0)
    batches = [np.full((b, d), k + 1, np.float32) + np.arange(b, dtype=np.float32)[:, None] / 10
               for k in range(5)]
    for k, feats in enumerate(batches):
        queue, ptr = step(queue, ptr, jnp.asarray(feats))
        assert int(ptr) == ((k + 1) * b) % q_size
        # Row block j holds the newest batch written there: batch k' with k' ≡ j (mod 3), k' ≤ k.
        for j in range(q_size // b):
            written = [kk for kk in range(k + 1) if kk % (q_size // b) == j]
            want = batches[written[-1]] if written else np.zeros((b, d), np.float32)
            np.testing.assert_array_equal(np.asarray(queue[j * b:(j + 1) * b]), want)
    # After 5 batches of 4 in a queue of 12, the queue holds exactly the newest 3 batches (2, 3, 4).
    held = {float(x) for x in np.asarray(queue)[:, 0].round()}
    assert held == {3.0, 4.0, 5.0}
    assert int(ptr) == 8


def test_enqueue_and_init_reject_bad_queue_size():
    with pytest.raises(ValueError, match=r"^queue_size=10: must be a positive multiple of the global batch "
                                         r"size 4"):
        enqueue(jnp.zeros((10, 3)), jnp.int32(0), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^queue_size=2: "):
        init_queue(jax.random.key(0), 2, 3, global_batch=4)
    queue, ptr = init_queue(jax.random.key(0), 8, 3, global_batch=4)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(queue), axis=1), 1.0, rtol=4 * U * 3)
    assert int(ptr) == 0 and queue.shape == (8, 3)


@pytest.mark.needs_8_devices
def test_enqueue_shard_map_same_queue_on_every_device():
    q_size, gb, d = 48, 16, 3
    feats = [jnp.asarray(_randn(20 + k, gb, d)) for k in range(4)]

    def sharded(queue, ptr, f):
        new, new_ptr = enqueue(queue, ptr, f, axis_name="data")
        return new[None], new_ptr[None]  # every device's copy

    fn = jax.jit(jax.shard_map(sharded, mesh=_mesh(), in_specs=(P(), P(), P("data")),
                               out_specs=(P("data"), P("data"))))
    q1, p1 = jnp.zeros((q_size, d)), jnp.int32(0)
    q8, p8 = q1, p1
    for f in feats:
        q1, p1 = enqueue(q1, p1, f)
        copies, ptrs = fn(q8, p8, f)
        for dev in range(N_DEV):  # a copy moves data only: bit-equal
            np.testing.assert_array_equal(np.asarray(copies[dev]), np.asarray(q1))
            assert int(ptrs[dev]) == int(p1)
        q8, p8 = copies[0], ptrs[0]


def test_ema_update_matches_formula():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": {"c": rng.standard_normal(5)
                                                                      .astype(np.float32)}}
    params_m = jax.tree.map(lambda x: (x + rng.standard_normal(x.shape)).astype(np.float32), params)
    for m in (0.995, 0.5, 0.0):
        got = jax.jit(ema_update)(params_m, params, m)
        for leaf_got, pm, p in zip(jax.tree.leaves(got), jax.tree.leaves(params_m), jax.tree.leaves(params),
                                   strict=True):
            want = m * _f64(pm) + (1 - m) * _f64(p)
            # m rounded to float32 (m·U absolute, also in 1 − m), two products, one sum: ≤ 6U·(|θ_m| + |θ|).
            atol = 6 * U * (np.abs(_f64(pm)) + np.abs(_f64(p)))
            assert leaf_got.dtype == np.float32
            assert np.all(np.abs(np.asarray(leaf_got, np.float64) - want) <= atol)
    # m = 0 copies the online parameters exactly.
    np.testing.assert_array_equal(np.asarray(ema_update(params_m, params, 0.0)["a"]), params["a"])
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"^momentum={bad}: .*\[0, 1\)"):
            ema_update(params_m, params, bad)


# ---------------------------------------------------------------- ITM hard negatives

# χ² critical values for df = 6 (7 candidate negatives) at a family-wise level of 1e-3 over 16 rows
# (Bonferroni: 1 − 1e-3/16), and for df = 95 at 1e-3: scipy.stats.chi2.ppf, quoted.
CHI2_DF6_BONFERRONI_16 = 28.938
CHI2_DF95_1E3 = 143.344


def _chi2(counts, probs):
    expected = probs * counts.sum()
    return float(np.sum((counts - expected) ** 2 / expected))


def test_hard_negatives_follow_the_softmax_without_the_positive():
    # 8 pairs; each row's own pair is by far the most similar, so a sampler that kept it would mostly
    # pick it. 20 000 independent draws (one key each) per row; the statistic is deterministic for the
    # fixed seed, and a correct sampler passes at family-wise level 1e-3.
    b, n_draws = 8, 20_000
    sims = [_randn(30, b, b) + 8.0 * np.eye(b, dtype=np.float32), _randn(31, b, b) + 8.0 * np.eye(b)]
    sims = [s.astype(np.float32) for s in sims]
    keys = jax.random.split(jax.random.key(0), n_draws)
    draws = jax.jit(jax.vmap(lambda k: sample_hard_negatives(k, *sims)))(keys)
    for sim, drawn in zip(sims, draws, strict=True):
        drawn = np.asarray(drawn)
        assert drawn.shape == (n_draws, b)
        for i in range(b):
            assert not np.any(drawn[:, i] == i), f"row {i} drew its own pair"
            others = [j for j in range(b) if j != i]
            logits = _f64(sim[i, others])
            probs = np.exp(logits - _logsumexp(logits))
            assert probs.min() * n_draws >= 5  # χ² is valid: every expected count ≥ 5
            counts = np.array([np.sum(drawn[:, i] == j) for j in others], np.float64)
            assert counts.sum() == n_draws
            assert _chi2(counts, probs) < CHI2_DF6_BONFERRONI_16, f"row {i}: frequencies off the softmax"
            # The test has power: the same counts reject a uniform choice among the negatives.
            assert _chi2(counts, np.full(len(others), 1 / len(others))) > CHI2_DF6_BONFERRONI_16
    # One key gives one answer.
    a = sample_hard_negatives(keys[0], *sims)
    b_ = sample_hard_negatives(keys[0], *sims)
    for x, y in zip(a, b_, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.needs_8_devices
def test_hard_negatives_shard_map_matches_single_device():
    gb = 16
    # Equal similarities everywhere: the draw is uniform over the 15 others and only the keys tell rows
    # apart, so equal draws in every row would mean one key for all.
    flat = jnp.zeros((gb, gb))
    sims = (jnp.asarray(_randn(40, gb, gb)), flat)
    fn = jax.jit(jax.shard_map(partial(sample_hard_negatives, axis_name="data"), mesh=_mesh(),
                               in_specs=(P(), P("data"), P("data")), out_specs=(P("data"), P("data"))))
    single = jax.jit(sample_hard_negatives)
    same_as_row0 = 0
    for seed in range(50):
        key = jax.random.key(seed)
        got, want = fn(key, *sims), single(key, *sims)
        for x, y in zip(got, want, strict=True):
            # Each global row draws with the key folded from its index, so devices draw what the single
            # device draws for their rows.
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
            assert np.all(np.asarray(x) != np.arange(gb))
        neg_img = np.asarray(got[1])
        same_as_row0 += int(np.sum(neg_img[1:] == neg_img[0]))
    # 15 rows × 50 keys; with independent uniform draws over 15 a row matches row 0's draw with
    # probability ≤ 1/14 (mean ≤ 54, sd ≈ 7); the bound 150 is > 13 sd away, one shared key would give ~700.
    assert same_as_row0 < 150


def test_hard_negatives_reject_a_batch_of_one():
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(jax.random.key(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)))


def ref_itm(pos, neg_img, neg_txt):
    rows = [(x, 1) for x in _f64(pos)] + [(x, 0) for x in _f64(neg_img)] + [(x, 0) for x in _f64(neg_txt)]
    return float(np.mean([_logsumexp(x) - x[y] for x, y in rows]))


def _two_way_atol(logits, n_rows):
    """2-term log-softmax of float32 logits: 4U·(1 + |lse|) + U·|result| per row (|·| ≤ L = spread +
    log 2); the mean over n rows adds (n + 1)·U·L."""
    big_l = float(np.max(logits) - np.min(logits)) + math.log(2)
    lse = float(np.max(np.abs(logits))) + math.log(2)
    return 4 * U * (1 + lse) + U * big_l + (n_rows + 1) * U * big_l


def test_itm_loss_and_accuracy_match_reference():
    b = 5
    pos, neg_img, neg_txt = (3 * _randn(50 + k, b, 2) for k in range(3))
    got = float(itm_loss(pos, neg_img, neg_txt))
    np.testing.assert_allclose(got, ref_itm(pos, neg_img, neg_txt), rtol=0,
                               atol=_two_way_atol(np.concatenate([pos, neg_img, neg_txt]), 3 * b))
    right = (np.sum(pos[:, 1] > pos[:, 0]) + np.sum(neg_img[:, 0] >= neg_img[:, 1])
             + np.sum(neg_txt[:, 0] >= neg_txt[:, 1]))
    assert float(itm_accuracy(pos, neg_img, neg_txt)) == pytest.approx(right / (3 * b), abs=2 * U)


# ---------------------------------------------------------------- MLM

PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 100
CONTROL_IDS = (CLS, SEP, MASK)
N_WORDS = VOCAB - 4  # ids 4 … 99 may replace a chosen token


def _captions(seed, rows, length):
    """[CLS] words… [SEP] [PAD]…, with some special ids scattered among the words."""
    rng = np.random.default_rng(seed)
    tokens = np.full((rows, length), PAD, np.int32)
    for r in range(rows):
        n = int(rng.integers(length // 4, length - 1))
        words = rng.integers(4, VOCAB, n - 1)
        words[rng.random(n - 1) < 0.05] = rng.choice(CONTROL_IDS)
        tokens[r, :n + 1] = [CLS, *words, SEP]
    return tokens


def _binomial_ok(k, n, p, sigmas=5.0):
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("mask_prob", [0.15, 0.4])
def test_mask_tokens_ratios_and_labels(mask_prob):
    tokens = _captions(0, 128, 256)
    masked, labels = jax.jit(partial(mask_tokens, vocab_size=VOCAB, special_ids=CONTROL_IDS, pad_id=PAD,
                                     mask_id=MASK, mask_prob=mask_prob))(jax.random.key(1), tokens)
    masked, labels = np.asarray(masked), np.asarray(labels)
    eligible = ~np.isin(tokens, (PAD, *CONTROL_IDS))
    chosen = labels != IGNORE_INDEX
    # Special and padding tokens are never chosen; labels are the original ids exactly where chosen;
    # what is not chosen is left alone.
    assert not np.any(chosen & ~eligible)
    np.testing.assert_array_equal(labels[chosen], tokens[chosen])
    np.testing.assert_array_equal(masked[~chosen], tokens[~chosen])
    # Fixed seed, so deterministic: each count within 5 binomial sd of its mean (a correct sampler fails
    # that with probability < 6e-7 per count).
    n_eligible, n_chosen = int(eligible.sum()), int(chosen.sum())
    assert _binomial_ok(n_chosen, n_eligible, mask_prob)
    to_mask = chosen & (masked == MASK)
    changed = chosen & (masked != MASK) & (masked != tokens)
    kept = chosen & (masked == tokens)
    assert int(to_mask.sum() + changed.sum() + kept.sum()) == n_chosen
    # A random replacement is one of the N_WORDS ids, the token itself with probability 1/N_WORDS.
    assert _binomial_ok(int(to_mask.sum()), n_chosen, 0.8)
    assert _binomial_ok(int(changed.sum()), n_chosen, 0.1 * (1 - 1 / N_WORDS))
    assert _binomial_ok(int(kept.sum()), n_chosen, 0.1 + 0.1 / N_WORDS)
    assert np.all(masked[changed] >= 4) and np.all(masked[changed] < VOCAB)


def test_mask_tokens_random_ids_are_uniform_over_words():
    # Almost every word chosen: ~0.1 × 51 000 random replacements over 96 ids (expected ~53 each).
    tokens = _captions(1, 256, 256)
    masked, labels = jax.jit(partial(mask_tokens, vocab_size=VOCAB, special_ids=CONTROL_IDS, pad_id=PAD,
                                     mask_id=MASK, mask_prob=0.99))(jax.random.key(2), tokens)
    masked, labels = np.asarray(masked), np.asarray(labels)
    chosen = labels != IGNORE_INDEX
    # The replacement id is uniform over the N_WORDS ids and independent of the original token (and of
    # which chosen positions are replaced); it is visible only where it differs from the original, so
    # among the visible replacements id j has probability ∝ (number of chosen tokens other than j).
    changed = chosen & (masked != MASK) & (masked != tokens)
    counts = np.bincount(masked[changed], minlength=VOCAB)[4:].astype(np.float64)
    orig = np.bincount(tokens[chosen], minlength=VOCAB)[4:].astype(np.float64)
    weights = (chosen.sum() - orig) / chosen.sum()
    probs = weights / weights.sum()
    assert probs.min() * counts.sum() >= 5
    assert _chi2(counts, probs) < CHI2_DF95_1E3


def test_mask_tokens_deterministic_and_rejects_bad_prob():
    tokens = _captions(2, 4, 32)
    kw = dict(vocab_size=VOCAB, special_ids=CONTROL_IDS, pad_id=PAD, mask_id=MASK)
    fn = jax.jit(partial(mask_tokens, **kw))
    a, b = fn(jax.random.key(3), tokens), fn(jax.random.key(3), tokens)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"^mask_prob={bad}: .*\(0, 1\)"):
            mask_tokens(jax.random.key(0), tokens, mask_prob=bad, **kw)


@pytest.mark.needs_8_devices
def test_mask_tokens_shard_map_matches_single_device():
    tokens = jnp.asarray(_captions(3, 16, 32))
    kw = dict(vocab_size=VOCAB, special_ids=CONTROL_IDS, pad_id=PAD, mask_id=MASK)
    fn = jax.jit(jax.shard_map(partial(mask_tokens, axis_name="data", **kw), mesh=_mesh(),
                               in_specs=(P(), P("data")), out_specs=(P("data"), P("data"))))
    single = jax.jit(partial(mask_tokens, **kw))
    for x, y in zip(fn(jax.random.key(4), tokens), single(jax.random.key(4), tokens), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def ref_mlm(logits, labels, soft, alpha):
    logits, soft = _f64(logits), None if soft is None else _f64(soft)
    losses = []
    for idx in np.ndindex(labels.shape):
        if labels[idx] == IGNORE_INDEX:
            continue
        log_p = logits[idx] - _logsumexp(logits[idx])
        ce = -log_p[labels[idx]]
        if soft is not None:
            ce = (1 - alpha) * ce + alpha * -np.sum(soft[idx] * log_p)
        losses.append(ce)
    return float(np.mean(losses))


def _mlm_atol(logits, n_tokens):
    """Per position: log-softmax over V of float32 logits errs by (V + 2)·U·(1 + |lse|) + U·L (L = spread
    + log V bounds |log p|); the soft term −Σ_j q_j·log p_j (Σ q ≈ 1) adds V·U·L, the α-mix 3U·L; the sum
    over n positions (n + 1)·U·L and the division U·L."""
    v = logits.shape[-1]
    big_l = float(np.max(logits) - np.min(logits)) + math.log(v)
    lse = float(np.max(np.abs(logits))) + math.log(v)
    return (v + 2) * U * (1 + lse) + U * big_l + (v + 3) * U * big_l + (n_tokens + 2) * U * big_l


def _mlm_inputs(seed, b, length, v):
    rng = np.random.default_rng(seed)
    logits = (2 * rng.standard_normal((b, length, v))).astype(np.float32)
    labels = rng.integers(0, v, (b, length)).astype(np.int32)
    labels[rng.random((b, length)) < 0.6] = IGNORE_INDEX
    soft = np.asarray(jax.nn.softmax(jnp.asarray(rng.standard_normal((b, length, v)), jnp.float32)))
    return logits, labels, soft


@pytest.mark.parametrize("alpha, distill", [(0.0, False), (0.4, True), (1.0, True)])
def test_mlm_loss_matches_reference(alpha, distill):
    logits, labels, soft = _mlm_inputs(0, 3, 5, 7)
    n = int(np.sum(labels != IGNORE_INDEX))
    got = float(mlm_loss(logits, labels, soft_targets=soft if distill else None, alpha=alpha))
    want = ref_mlm(logits, labels, soft if distill else None, alpha)
    np.testing.assert_allclose(got, want, rtol=0, atol=_mlm_atol(logits, n))
    pred = logits.argmax(-1)
    chosen = labels != IGNORE_INDEX
    assert float(mlm_accuracy(logits, labels)) == pytest.approx(np.mean(pred[chosen] == labels[chosen]),
                                                                abs=2 * U)
    # No chosen position: 0, not NaN.
    assert float(mlm_loss(logits, np.full_like(labels, IGNORE_INDEX))) == 0.0
    with pytest.raises(ValueError, match=r"^alpha=2: "):
        mlm_loss(logits, labels, soft_targets=soft, alpha=2)


@pytest.mark.needs_8_devices
def test_mlm_and_itm_shard_map_match_single_device():
    gb = 16
    logits, labels, soft = _mlm_inputs(1, gb, 5, 7)
    labels[:2] = IGNORE_INDEX  # device 0 has no chosen position, the others a varying number: the mean
    labels[2:4, :] = 1         # is over tokens of all devices, not a mean of per-device means
    n = int(np.sum(labels != IGNORE_INDEX))

    def mlm(lg, lb, sf, axis_name=None):
        return mlm_loss(lg, lb, soft_targets=sf, alpha=0.4, axis_name=axis_name)

    sharded = jax.shard_map(partial(mlm, axis_name="data"), mesh=_mesh(), in_specs=(P("data"),) * 3,
                            out_specs=P())
    v1, g1 = jax.jit(jax.value_and_grad(mlm))(logits, labels, soft)
    v8, g8 = jax.jit(jax.value_and_grad(sharded))(logits, labels, soft)
    atol = _mlm_atol(logits, n)
    np.testing.assert_allclose(float(v1), ref_mlm(logits, labels, soft, 0.4), rtol=0, atol=atol)
    np.testing.assert_allclose(float(v8), float(v1), rtol=0, atol=2 * atol)
    # ∂/∂logit = ((1 − α)(p − onehot) + α(p − q))/n: entries ≤ 2/n, each off by p's relative error
    # (the log-softmax bound) and the rounding of a few products.
    assert np.abs(np.asarray(g1)).max() > 0
    np.testing.assert_allclose(np.asarray(g8), np.asarray(g1), rtol=0, atol=2 * 2 / n * atol)
    acc = jax.shard_map(partial(mlm_accuracy, axis_name="data"), mesh=_mesh(), in_specs=(P("data"),) * 2,
                        out_specs=P())
    want_acc = float(mlm_accuracy(logits, labels))
    assert float(jax.jit(acc)(logits, labels)) == pytest.approx(want_acc, abs=4 * U)

    pos, neg_img, neg_txt = (jnp.asarray(3 * _randn(60 + k, gb, 2)) for k in range(3))
    itm8 = jax.shard_map(partial(itm_loss, axis_name="data"), mesh=_mesh(), in_specs=(P("data"),) * 3,
                         out_specs=P())
    atol = _two_way_atol(np.concatenate([pos, neg_img, neg_txt]), 3 * gb)
    np.testing.assert_allclose(float(jax.jit(itm8)(pos, neg_img, neg_txt)), ref_itm(pos, neg_img, neg_txt),
                               rtol=0, atol=atol)
    acc8 = jax.shard_map(partial(itm_accuracy, axis_name="data"), mesh=_mesh(), in_specs=(P("data"),) * 3,
                         out_specs=P())
    assert float(jax.jit(acc8)(pos, neg_img, neg_txt)) == pytest.approx(
        float(itm_accuracy(pos, neg_img, neg_txt)), abs=4 * U)
