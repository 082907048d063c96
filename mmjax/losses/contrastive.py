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
    """

    def direction(anchor: Array, positive: Array, negatives: Array) -> Array:
        pos = jnp.sum((anchor - positive) ** 2, -1)
        neg = pairwise_sq_dists(anchor, _gather(negatives, axis_name))
        logits = jnp.concatenate([-neg, -pos[:, None]], axis=1) / tau
        log_mean_exp = jax.nn.logsumexp(logits, axis=1) - jnp.log(logits.shape[1])
        return 2.0 * (alpha * pos / tau + (1.0 - alpha) * log_mean_exp)

    return 0.5 * (
        _mean(direction(a, b, a_neg), axis_name) + _mean(direction(b, a, b_neg), axis_name)
    )


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
