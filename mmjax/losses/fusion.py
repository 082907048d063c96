"""Pre-training losses of the ALBEF fusion model (Li et al. 2021, "Align before Fuse", arXiv 2107.07651).

Pure functions of features, in the conventions of `mmjax.losses.contrastive`: each takes the *local*
rows of a batch; with `axis_name=None` it is the single-device math, and with the name of a mapped
axis (inside `jax.shard_map`) it gathers what spans the batch and takes global means, so value and
gradients equal the single-device loss on the concatenated batch.

- `itc_loss` — image–text contrastive learning (ALBEF §3.2, ITC) against the global batch and a queue of
  momentum features (MoCo-style), with momentum distillation of its targets (§3.3, "Momentum
  Distillation": L^mod_itc). `enqueue` updates the queues, `init_queue` makes them, `ema_update` is the
  momentum-model update θ_m ← m·θ_m + (1 − m)·θ, and `check_queue_size` validates the queue size.
- `sample_hard_negatives` — ITM hard-negative mining (§3.2, "Image-Text Matching"): one negative per
  image and per text from the *global* batch, drawn ∝ the softmax of the contrastive similarities.
  `itm_loss` / `itm_accuracy` score the 2-way matched / not-matched head on the B positive and 2B negative
  pairs.
- `mask_tokens` — BERT masking for masked language modelling (§3.2, "Masked Language Modeling");
  `mlm_loss` (with the distilled term of §3.3, L^mod_mlm) and `mlm_accuracy` score the MLM head on
  the chosen positions.

Random draws (`sample_hard_negatives`, `mask_tokens`) use one key per *global* row, folded from the
caller's key with the row's index in the global batch: rows on different devices get different keys,
and the draws do not depend on how many devices the batch is split over.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mmjax.losses.contrastive import _gather, _mean, _row_offset

Array = jax.Array

IGNORE_INDEX = -100
"""Label of the positions `mlm_loss` ignores (as in BERT and ALBEF: PyTorch's cross-entropy default)."""


def _is_static(x) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


def _n_global(n_local: int, axis_name: str | None) -> int:
    return n_local if axis_name is None else n_local * lax.axis_size(axis_name)


def _row_keys(key: Array, n_local: int, axis_name: str | None) -> Array:
    """One key per local row: `key` folded with the row's index in the global batch."""
    rows = _row_offset(n_local, axis_name) + jnp.arange(n_local)
    return jax.vmap(lambda r: jax.random.fold_in(key, r))(rows)


# ---------------------------------------------------------------- ITC with a queue and distillation


class ITCOutput(NamedTuple):
    """What `itc_loss` returns; `sim_i2t`/`sim_t2i` feed `sample_hard_negatives`."""

    loss: Array  # (L_i2t + L_t2i) / 2
    loss_i2t: Array
    loss_t2i: Array
    sim_i2t: Array  # (local B, global B): s(I, T_m) of each local image to the batch's texts, no gradient
    sim_t2i: Array  # (local B, global B): s(T, I_m) of each local text to the batch's images, no gradient


def itc_loss(
    img_feat: Array,
    txt_feat: Array,
    img_feat_m: Array,
    txt_feat_m: Array,
    img_queue: Array,
    txt_queue: Array,
    *,
    temp: float | Array,
    alpha: float | Array = 0.4,
    axis_name: str | None = None,
) -> ITCOutput:
    """ALBEF's image–text contrastive loss with a momentum queue and momentum distillation.

    `img_feat`, `txt_feat` (local B × d) are the online model's projected, L2-normalised CLS features
    g_v(v_cls), g_w(w_cls); `img_feat_m`, `txt_feat_m` the momentum model's g'_v(v'_cls), g'_w(w'_cls)
    of the same rows; `img_queue`, `txt_queue` (Q × d) the momentum features of earlier batches (the
    same on every device). Rows are taken as they are: unit rows are the caller's job (the model
    normalises them), so the queue is never renormalised. `temp` is the learnable temperature τ (ALBEF
    initialises it at 0.07 and clamps it to [0.001, 0.5] after each step; clamp before calling).

    For image i the candidates are the momentum text features of the whole global batch followed by
    the text queue (§3.2): s(I, T_m) = g_v(v_cls)·g'_w(w'_cls) / τ, p^i2t = softmax(s). The targets are
    momentum-distilled (§3.3, L^mod_itc):  y^i2t = α·softmax(s(I_m, T_m)) + (1 − α)·y^i2t_onehot, the
    one-hot on its own caption (its global index), and L_i2t = mean_i H(y^i2t, p^i2t); L_t2i likewise
    with the roles swapped, and the loss is (L_i2t + L_t2i) / 2. With α = 0 it is the plain ITC. (ALBEF
    ramps α from 0 over the first epoch; that is the caller's schedule.)

    Gradients reach `img_feat`, `txt_feat` and `temp` only: the momentum features, the queues and the
    targets are constants (stop_gradient).
    """
    if _is_static(alpha) and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}: the distillation weight must be in [0, 1]")
    if _is_static(temp) and not temp > 0.0:
        raise ValueError(f"temp={temp}: the ITC temperature must be > 0")
    sg = lax.stop_gradient
    img_m, txt_m, q_img, q_txt = (sg(x) for x in (img_feat_m, txt_feat_m, img_queue, txt_queue))
    n = img_feat.shape[0]
    all_img_m, all_txt_m = _gather(img_m, axis_name), _gather(txt_m, axis_name)
    n_global = all_img_m.shape[0]
    pos = _row_offset(n, axis_name) + jnp.arange(n)  # global index of each local row's pair

    def direction(q: Array, q_m: Array, keys: Array) -> tuple[Array, Array]:
        sim = q @ keys.T / temp
        sim_m = q_m @ keys.T / sg(temp)
        onehot = jax.nn.one_hot(pos, keys.shape[0], dtype=sim.dtype)
        target = sg(alpha * jax.nn.softmax(sim_m, axis=1) + (1.0 - alpha) * onehot)
        loss = -jnp.sum(target * jax.nn.log_softmax(sim, axis=1), axis=1)
        return _mean(loss, axis_name), sg(sim[:, :n_global])

    loss_i2t, sim_i2t = direction(img_feat, img_m, jnp.concatenate([all_txt_m, q_txt], 0))
    loss_t2i, sim_t2i = direction(txt_feat, txt_m, jnp.concatenate([all_img_m, q_img], 0))
    return ITCOutput(0.5 * (loss_i2t + loss_t2i), loss_i2t, loss_t2i, sim_i2t, sim_t2i)


def check_queue_size(queue_size: int, global_batch: int) -> None:
    """Raise a one-line ValueError unless `queue_size` is a positive multiple of the global batch."""
    if global_batch < 1:
        raise ValueError(f"global batch size {global_batch}: must be at least 1")
    if queue_size < global_batch or queue_size % global_batch:
        raise ValueError(f"queue_size={queue_size}: must be a positive multiple of the global batch size "
                         f"{global_batch} (e.g. {global_batch * max(1, queue_size // global_batch)})")


def init_queue(key: Array, queue_size: int, dim: int, *, global_batch: int) -> tuple[Array, Array]:
    """A queue of `queue_size` random unit rows (as ALBEF starts it) and its pointer 0."""
    check_queue_size(queue_size, global_batch)
    q = jax.random.normal(key, (queue_size, dim), jnp.float32)
    return q / jnp.linalg.norm(q, axis=1, keepdims=True), jnp.zeros((), jnp.int32)


def enqueue(
    queue: Array, ptr: Array, feats: Array, *, axis_name: str | None = None
) -> tuple[Array, Array]:
    """FIFO queue update: the newest batch overwrites rows ptr … ptr + B − 1; returns (queue, (ptr + B) % Q).

    `feats` is the global batch (B × d) — or, with `axis_name`, the local rows, which are gathered
    first — so every device holds the same queue. Q must be a multiple of B (checked here, statically),
    which keeps every write inside the queue and the pointer on multiples of B. Call it with the same
    `ptr` for the image and the text queue: both return the same new pointer. No gradient flows.
    """
    feats = lax.stop_gradient(_gather(feats, axis_name))
    q_size, b = queue.shape[0], feats.shape[0]
    check_queue_size(q_size, b)
    if feats.shape[1:] != queue.shape[1:]:
        raise ValueError(f"feature shape {feats.shape[1:]} does not match the queue's rows {queue.shape[1:]}")
    ptr = jnp.asarray(ptr, jnp.int32)
    new = lax.dynamic_update_slice(queue, feats.astype(queue.dtype), (ptr, jnp.int32(0)))
    return new, (ptr + b) % q_size


def ema_update(params_m, params, momentum: float | Array = 0.995):
    """Momentum-model update θ_m ← m·θ_m + (1 − m)·θ on every leaf (§3.3; m = 0.995 in ALBEF)."""
    if _is_static(momentum) and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum}: the EMA momentum must be in [0, 1)")

    def update(pm: Array, p: Array) -> Array:
        return (momentum * pm + (1.0 - momentum) * lax.stop_gradient(p)).astype(pm.dtype)

    return jax.tree.map(update, params_m, params)


# ---------------------------------------------------------------- ITM with hard negatives


def sample_hard_negatives(
    key: Array, sim_i2t: Array, sim_t2i: Array, *, axis_name: str | None = None
) -> tuple[Array, Array]:
    """One hard negative per image and per text from the global batch (§3.2, ITM).

    `sim_i2t`, `sim_t2i` (local B × global B) are the contrastive similarities of `ITCOutput`. Image i's
    negative text j ≠ pos(i) is drawn with probability softmax(sim_i2t[i])_j renormalised without its own
    caption (a categorical draw on the row with −inf at the positive); likewise a negative image per text.
    Returns (neg_txt, neg_img): global batch indices (local B,) of each image's negative text and each
    text's negative image. Each global row draws with its own key (see the module docstring).
    """
    n, n_global = sim_i2t.shape
    if n_global < 2:
        raise ValueError(f"global batch size {n_global}: hard-negative mining needs at least 2 pairs")
    if sim_t2i.shape != sim_i2t.shape:
        raise ValueError(f"sim_t2i shape {sim_t2i.shape} does not match sim_i2t shape {sim_i2t.shape}")
    if _n_global(n, axis_name) != n_global:
        raise ValueError(f"similarities have {n_global} columns for a global batch of "
                         f"{_n_global(n, axis_name)} rows")
    pos = _row_offset(n, axis_name) + jnp.arange(n)
    own = jnp.arange(n_global)[None, :] == pos[:, None]
    k_txt, k_img = jax.random.split(key)

    def draw(k: Array, sim: Array) -> Array:
        logits = jnp.where(own, -jnp.inf, lax.stop_gradient(sim).astype(jnp.float32))
        return jax.vmap(lambda kr, row: jax.random.categorical(kr, row))(_row_keys(k, n, axis_name), logits)

    return draw(k_txt, sim_i2t), draw(k_img, sim_t2i)


def _binary_ce(logits: Array, label: int) -> Array:
    return -jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[..., label]


def itm_loss(
    logits_pos: Array, logits_neg_img: Array, logits_neg_txt: Array, *, axis_name: str | None = None
) -> Array:
    """ITM cross-entropy over B positive pairs (label 1) and 2B hard-negative pairs (label 0) (§3.2).

    Each argument is the 2-way ITM head's logits (local B × 2; column 1 = matched) on the fusion CLS of
    the positive pairs, of each text with its hard-negative image, and of each image with its
    hard-negative text. The loss is the mean over all 3B pairs of the global batch.
    """
    per_pair = jnp.concatenate([_binary_ce(logits_pos, 1), _binary_ce(logits_neg_img, 0),
                                _binary_ce(logits_neg_txt, 0)])
    return _mean(per_pair, axis_name)


def itm_accuracy(
    logits_pos: Array, logits_neg_img: Array, logits_neg_txt: Array, *, axis_name: str | None = None
) -> Array:
    """Fraction of the 3B pairs of `itm_loss` whose argmax is their label (a tie counts as 'not matched')."""
    right = jnp.concatenate([jnp.argmax(logits_pos, -1) == 1, jnp.argmax(logits_neg_img, -1) == 0,
                             jnp.argmax(logits_neg_txt, -1) == 0])
    return _mean(right.astype(jnp.float32), axis_name)


# ---------------------------------------------------------------- MLM


def _random_token_ids(vocab_size: int, excluded) -> np.ndarray:
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(sorted(excluded), np.int64))
    if allowed.size == 0:
        raise ValueError(f"vocab_size={vocab_size}: no ids left for random replacement once the special, "
                         "padding and mask ids are excluded")
    return allowed.astype(np.int32)


def mask_tokens(
    key: Array,
    tokens: Array,
    *,
    vocab_size: int,
    special_ids,
    pad_id: int,
    mask_id: int,
    mask_prob: float = 0.15,
    axis_name: str | None = None,
) -> tuple[Array, Array]:
    """BERT masking for MLM (§3.2): returns (masked tokens, labels) for `tokens` (local B × L ids).

    Each token that is neither padding (`pad_id`) nor special (`special_ids`, e.g. [CLS], [SEP], and
    `mask_id` itself) is chosen with probability `mask_prob`; a chosen token becomes `mask_id` with
    probability 0.8, a random id with probability 0.1 (uniform over the vocabulary less the special,
    padding and mask ids, so it may be the token itself) and stays itself otherwise. Labels are the
    original id where chosen and `IGNORE_INDEX` elsewhere. Each global row draws with its own key.
    """
    if _is_static(mask_prob) and not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob={mask_prob}: the MLM mask probability must be in (0, 1)")
    if tokens.ndim != 2:
        raise ValueError(f"tokens of shape {tokens.shape}: expected (batch, length)")
    excluded = {int(i) for i in special_ids} | {int(pad_id), int(mask_id)}
    allowed = jnp.asarray(_random_token_ids(vocab_size, excluded))
    eligible = ~jnp.isin(tokens, jnp.asarray(sorted(excluded), tokens.dtype))

    def row(k: Array, length: int) -> tuple[Array, Array, Array]:
        k_choose, k_kind, k_word = jax.random.split(k, 3)
        return (jax.random.uniform(k_choose, (length,)), jax.random.uniform(k_kind, (length,)),
                jax.random.randint(k_word, (length,), 0, allowed.shape[0]))

    u_choose, u_kind, word = jax.vmap(row, in_axes=(0, None))(
        _row_keys(key, tokens.shape[0], axis_name), tokens.shape[1])
    chosen = eligible & (u_choose < mask_prob)
    to_mask = chosen & (u_kind < 0.8)
    to_random = chosen & (u_kind >= 0.8) & (u_kind < 0.9)
    masked = jnp.where(to_mask, jnp.asarray(mask_id, tokens.dtype), tokens)
    masked = jnp.where(to_random, allowed[word].astype(tokens.dtype), masked)
    labels = jnp.where(chosen, tokens, jnp.asarray(IGNORE_INDEX, tokens.dtype))
    return masked, labels


def _masked_mean(per_token: Array, valid: Array, axis_name: str | None) -> Array:
    """Σ over the valid positions of every device / their global count (0 when there are none)."""
    total = jnp.sum(jnp.where(valid, per_token, 0.0))
    count = jnp.sum(valid.astype(jnp.float32))
    if axis_name is not None:
        total, count = lax.psum(total, axis_name), lax.psum(count, axis_name)
    return total / jnp.maximum(count, 1.0)


def mlm_loss(
    logits: Array,
    labels: Array,
    *,
    soft_targets: Array | None = None,
    alpha: float | Array = 0.0,
    axis_name: str | None = None,
) -> Array:
    """MLM cross-entropy averaged over the masked tokens of the global batch, with optional distillation.

    `logits` (… × V) are the MLM head's outputs, `labels` (…) the ids of `mask_tokens` (`IGNORE_INDEX`
    where not chosen). With `soft_targets` (… × V: the momentum model's softmax predictions) the loss
    is the distilled L^mod_mlm of §3.3, (1 − α)·H(y_mask, p) + α·H(q_m, p). The mean is over the chosen
    positions of all devices together (Σ losses / Σ counts), as ALBEF averages over masked tokens; a
    batch without any is 0.
    """
    if _is_static(alpha) and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}: the distillation weight must be in [0, 1]")
    valid = labels != IGNORE_INDEX
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    per_token = -jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
    if soft_targets is not None:
        q = lax.stop_gradient(soft_targets).astype(jnp.float32)
        per_token = (1.0 - alpha) * per_token + alpha * -jnp.sum(q * log_p, axis=-1)
    return _masked_mean(per_token, valid, axis_name)


def mlm_accuracy(logits: Array, labels: Array, *, axis_name: str | None = None) -> Array:
    """Fraction of the chosen positions (labels ≠ `IGNORE_INDEX`) of the global batch predicted right."""
    valid = labels != IGNORE_INDEX
    return _masked_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), valid, axis_name)
