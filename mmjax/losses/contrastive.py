"""Contrastive losses as pure functions of embeddings.

`lp_simclr_loss` (alignment + entropy on negative squared distances) and `simclr_cosine_loss` are the
objectives of Cai et al. (arXiv 2504.10143) for its numeric and image–text experiments; `clip_loss` and
`siglip_loss` are the CLIP and SigLIP objectives; `con_loss` is L_Con of Jiang et al. (arXiv 2303.05952).

Each loss takes the *local* rows of a batch. With `axis_name=None` it is the single-device math; with
the name of a mapped axis (inside `jax.shard_map`) it gathers the other devices' rows with
`lax.all_gather`, scores its local anchors against the global batch and averages over devices, so the
value and gradients equal the single-device loss on the concatenated batch.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _gather(x: Array, axis_name: str | None) -> Array:
    """Rows of every device along `axis_name` (or x itself without one)."""
    if axis_name is None:
        return x
    return lax.all_gather(x, axis_name, axis=0, tiled=True)


def _mean(x: Array, axis_name: str | None) -> Array:
    """Global mean of per-device means (devices hold equal-size shards)."""
    m = jnp.mean(x)
    return m if axis_name is None else lax.pmean(m, axis_name)


def _row_offset(n_local: int, axis_name: str | None) -> Array:
    """Index of this device's first row in the gathered batch."""
    return 0 if axis_name is None else lax.axis_index(axis_name) * n_local


def pairwise_sq_dists(a: Array, b: Array) -> Array:
    """‖a_i − b_j‖² in Gram form, clamped at 0 (never a B×B×d broadcast)."""
    sq = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(sq, 0.0)


def _dist_logits(x: Array, y: Array) -> tuple[Array, Array]:
    """(−‖x_i − y_j‖², a mask of the unclamped entries) for a block of rows x against all of y."""
    raw = jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :] - 2.0 * x @ y.T
    return -jnp.maximum(raw, 0.0), raw > 0.0


def _row_blocks(n: int, block: int) -> int:
    """The number of equal row blocks of at most `block` rows, and at least half that many; 1 (all
    rows at once) where no such split exists, e.g. for a prime n."""
    least = -(-n // block)
    for k in range(least, 2 * least + 1):
        if n % k == 0 and n // k * 2 >= min(block, n):
            return k
    return 1


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _lse_both_ways(x, y, extra_row, extra_col, cols: bool, block: int):
    """Row and column log-sum-exp of the logits L_ij = −‖x_i − y_j‖², each with one extra logit:
    row_i = log(Σ_j e^{L_ij} + e^{extra_row_i}), col_j = log(Σ_i e^{L_ij} + e^{extra_col_j}).

    The (R, C) logits exist one block of `block` rows at a time: the forward pass keeps only the
    row results and a running (max, sum) per column, the backward pass recomputes each block's
    logits for its softmax weights (so memory is O(block x C), not O(R x C) per saved intermediate).
    `cols=False` skips the column half (its result is then meaningless). A temperature enters
    through the inputs (x/√τ, y/√τ), so that its gradient is plain autodiff outside this rule.
    """
    return _lse_fwd(x, y, extra_row, extra_col, cols, block)[0]


def _lse_fwd(x, y, extra_row, extra_col, cols, block):
    n_blocks = _row_blocks(x.shape[0], block)

    def body(carry, inp):
        c_max, c_sum = carry
        xi, ei = inp
        logits, _ = _dist_logits(xi, y)
        r_max = jnp.maximum(jnp.max(logits, 1), ei)
        row = r_max + jnp.log(jnp.sum(jnp.exp(logits - r_max[:, None]), 1) + jnp.exp(ei - r_max))
        if cols:  # online log-sum-exp over the row blocks, started from the extra logit
            new_max = jnp.maximum(c_max, jnp.max(logits, 0))
            c_sum = c_sum * jnp.exp(c_max - new_max) + jnp.sum(jnp.exp(logits - new_max[None, :]), 0)
            c_max = new_max
        return (c_max, c_sum), row

    init = (extra_col, jnp.ones_like(extra_col))
    if n_blocks == 1:
        (c_max, c_sum), row = body(init, (x, extra_row))
    else:
        blocks = (x.reshape(n_blocks, -1, x.shape[1]), extra_row.reshape(n_blocks, -1))
        (c_max, c_sum), row = lax.scan(body, init, blocks)
    row = row.reshape(-1)
    col = c_max + jnp.log(c_sum)
    return (row, col), (x, y, extra_row, extra_col, row, col)


def _lse_bwd(cols, block, res, cot):
    x, y, extra_row, extra_col, row, col = res
    g_row, g_col = cot
    n_blocks = _row_blocks(x.shape[0], block)
    split = lambda v: v.reshape(n_blocks, -1, *v.shape[1:])

    def body(g_y, inp):
        xi, ri, gi = inp
        logits, unclamped = _dist_logits(xi, y)
        w = gi[:, None] * jnp.exp(logits - ri[:, None])  # d/dL_ij of Σ g_row·row (+ Σ g_col·col)
        if cols:
            w = w + g_col[None, :] * jnp.exp(logits - col[None, :])
        g_d = jnp.where(unclamped, -w, 0.0)  # L = −D; the clamp at 0 passes nothing
        g_xi = 2.0 * (xi * jnp.sum(g_d, 1)[:, None] - g_d @ y)
        return g_y + 2.0 * (y * jnp.sum(g_d, 0)[:, None] - g_d.T @ xi), g_xi

    if n_blocks == 1:
        g_y, g_x = body(jnp.zeros_like(y), (x, row, g_row))
    else:
        g_y, g_x = lax.scan(body, jnp.zeros_like(y), (split(x), split(row), split(g_row)))
    g_extra_row = g_row * jnp.exp(extra_row - row)
    g_extra_col = g_col * jnp.exp(extra_col - col) if cols else jnp.zeros_like(extra_col)
    return g_x.reshape(x.shape), g_y, g_extra_row, g_extra_col


_lse_both_ways.defvjp(_lse_fwd, _lse_bwd)


# Rows per block of the fused LpSimCLR logits (see _lse_both_ways): at B = 6144 one block of 512 x 6144
# float32 logits is 12 MB, where the whole matrix and its autodiff intermediates would be 150 MB each.
LSE_BLOCK = 512


def _lp_terms(anchor_pos: Array, lse: Array, n_neg: int, tau, alpha) -> Array:
    """Per-anchor 2·(α·pos/τ + (1 − α)·log-mean-exp) from the squared positive distances and the
    log-sum-exp over the anchor's n_neg negatives and its positive."""
    return 2.0 * (alpha * anchor_pos / tau + (1.0 - alpha) * (lse - jnp.log(n_neg + 1.0)))


def lp_simclr_loss(
    a: Array,
    b: Array,
    a_neg: Array,
    b_neg: Array,
    *,
    tau: float | Array = 1.0,
    alpha: float | Array = 0.5,
    axis_name: str | None = None,
) -> Array:
    """Alignment + entropy loss of the paper's numeric study (negative squared distance similarity).

    `a`, `b` are paired image/text embeddings; `a_neg`, `b_neg` come from an independent second batch
    and serve as same-modality negatives. Each anchor's B negatives and its positive form B + 1 terms.
    The B x B logits are never held whole (`_lse_both_ways`, blocks of LSE_BLOCK rows, own VJP).
    """
    tau = jnp.asarray(tau, a.dtype)
    scale = lax.rsqrt(tau)
    pos = jnp.sum((a - b) ** 2, -1)

    def direction(anchor: Array, negatives: Array) -> Array:
        negatives = _gather(negatives, axis_name)
        lse, _ = _lse_both_ways(anchor * scale, negatives * scale, -pos / tau,
                                jnp.zeros(negatives.shape[:1], a.dtype), False, LSE_BLOCK)
        return _mean(_lp_terms(pos, lse, negatives.shape[0], tau, alpha), axis_name)

    return 0.5 * (direction(a, a_neg) + direction(b, b_neg))


def lp_simclr_swapped_loss(
    a: Array,
    b: Array,
    a2: Array,
    b2: Array,
    *,
    tau: float | Array = 1.0,
    alpha: float | Array = 0.5,
    axis_name: str | None = None,
) -> Array:
    """`lp_simclr_loss` with both independent batches as anchors in turn:
    0.5·(lp_simclr_loss(a, b, a2, b2) + lp_simclr_loss(a2, b2, a, b)).

    The second half's logits are the transpose of the first's, so on one device each of the two
    B x B distance matrices is computed once and serves as rows and as columns.
    """
    if axis_name is not None:  # local anchors against gathered rows: the two halves differ in shape
        one = partial(lp_simclr_loss, tau=tau, alpha=alpha, axis_name=axis_name)
        return 0.5 * (one(a, b, a2, b2) + one(a2, b2, a, b))
    tau = jnp.asarray(tau, a.dtype)
    scale = lax.rsqrt(tau)
    pos, pos2 = jnp.sum((a - b) ** 2, -1), jnp.sum((a2 - b2) ** 2, -1)
    total = 0.0
    for x, y in ((a, a2), (b, b2)):
        lse, lse2 = _lse_both_ways(x * scale, y * scale, -pos / tau, -pos2 / tau, True, LSE_BLOCK)
        total = total + jnp.mean(_lp_terms(pos, lse, y.shape[0], tau, alpha)) + jnp.mean(
            _lp_terms(pos2, lse2, x.shape[0], tau, alpha))
    return 0.25 * total


def _normalize(x: Array, eps: float = 1e-12) -> Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def simclr_cosine_loss(
    a: Array,
    b: Array,
    *,
    tau: float | Array = 1.0,
    in_modal: bool | Array = True,
    axis_name: str | None = None,
) -> Array:
    """SimCLR-style cosine InfoNCE over 2B anchors: the pair is positive, all other items negative.

    With `in_modal` false (a Python bool or a traced 0/1) the same-modality items are dropped from the
    negatives, which leaves CLIP's symmetric cross-modal InfoNCE at a fixed temperature.
    """
    za, zb = _normalize(a), _normalize(b)
    n = a.shape[0]
    all_a, all_b = _gather(za, axis_name), _gather(zb, axis_name)
    keys = jnp.concatenate([all_a, all_b], 0)
    n_global = all_a.shape[0]
    rows = _row_offset(n, axis_name) + jnp.arange(n)
    cols = jnp.arange(2 * n_global)
    col_a = cols < n_global  # key columns holding the first modality

    def anchors(q: Array, self_col: Array, pos_col: Array) -> Array:
        logits = q @ keys.T / tau
        same = col_a == (self_col[:, None] < n_global)  # keys of the anchor's own modality
        drop = (cols[None, :] == self_col[:, None]) | (same & ~jnp.asarray(in_modal, bool))
        logits = jnp.where(drop, -jnp.inf, logits)
        pos = jnp.take_along_axis(logits, pos_col[:, None], axis=1)[:, 0]
        return jax.nn.logsumexp(logits, axis=1) - pos

    loss_a = anchors(za, rows, rows + n_global)
    loss_b = anchors(zb, rows + n_global, rows)
    return 0.5 * (_mean(loss_a, axis_name) + _mean(loss_b, axis_name))


def clamped_scale(log_scale: Array, max_scale: float = 100.0) -> Array:
    """exp(log_scale) clamped at `max_scale` (CLIP's learnable inverse temperature)."""
    return jnp.minimum(jnp.exp(log_scale), max_scale)


def _info_nce(q: Array, keys: Array, scale: Array, axis_name: str | None) -> Array:
    """Per-anchor InfoNCE of unit rows `q` against gathered `keys`; the positive is the same row."""
    logits = scale * q @ _gather(keys, axis_name).T
    rows = _row_offset(q.shape[0], axis_name) + jnp.arange(q.shape[0])
    pos = jnp.take_along_axis(logits, rows[:, None], axis=1)[:, 0]
    return jax.nn.logsumexp(logits, axis=1) - pos


def clip_loss(
    a: Array,
    b: Array,
    log_scale: Array,
    *,
    max_scale: float = 100.0,
    axis_name: str | None = None,
) -> Array:
    """Symmetric CLIP InfoNCE with in-batch cross-modal negatives and a clamped learnable scale."""
    za, zb = _normalize(a), _normalize(b)
    scale = clamped_scale(log_scale, max_scale)
    return 0.5 * (_mean(_info_nce(za, zb, scale, axis_name), axis_name)
                  + _mean(_info_nce(zb, za, scale, axis_name), axis_name))


def con_loss(
    a: Array,
    b: Array,
    a_aug: Array,
    b_aug: Array,
    log_scale: Array,
    *,
    max_scale: float = 100.0,
    axis_name: str | None = None,
) -> Array:
    """L_Con = ¼(L_V2T + L_T2V + L_V2V + L_T2T), in-modal terms against the augmented views.

    The base objective of Jiang et al. (arXiv 2303.05952).

    `a_aug`, `b_aug` embed a second augmented view of each image and caption; in L_V2V an image's
    positive is its own augmented view and the other rows' augmented views are the negatives.
    """
    za, zb, za2, zb2 = (_normalize(x) for x in (a, b, a_aug, b_aug))
    scale = clamped_scale(log_scale, max_scale)
    terms = [_info_nce(za, zb, scale, axis_name), _info_nce(zb, za, scale, axis_name),
             _info_nce(za, za2, scale, axis_name), _info_nce(zb, zb2, scale, axis_name)]
    return 0.25 * sum(_mean(t, axis_name) for t in terms)


def siglip_loss(
    a: Array,
    b: Array,
    log_scale: Array,
    bias: Array,
    *,
    axis_name: str | None = None,
) -> Array:
    """SigLIP pairwise sigmoid loss: −Σ_j log σ(±(s·a_i·b_j + bias)) per image, averaged over images."""
    za, zb = _normalize(a), _normalize(b)
    logits = jnp.exp(log_scale) * za @ _gather(zb, axis_name).T + bias
    rows = _row_offset(a.shape[0], axis_name) + jnp.arange(a.shape[0])
    labels = jnp.where(jnp.arange(logits.shape[1])[None, :] == rows[:, None], 1.0, -1.0)
    return _mean(-jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=1), axis_name)
