"""Latent-modality-structure regularizers (Jiang et al., arXiv 2303.05952) as pure functions of embeddings.

`sep_loss` (deep feature separation), `bridge_loss` (Brownian bridge) and `gc_loss` (geometric
consistency, `L_GC + L^a_GC`) each stand alone and are added to `L_Con` with their own weights. Every
feature is L2-normalised first. Like the contrastive losses, each takes the *local* rows of a batch:
with `axis_name` (inside `jax.shard_map`) the terms that span the batch score local rows against the
gathered global batch, and every mean is global, so value and gradients equal the single-device loss on
the concatenated batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from mmjax.losses.contrastive import _gather, _info_nce, _mean, _normalize, _row_offset

Array = jax.Array


def _global_logsumexp(x: Array, axis_name: str | None) -> Array:
    """log Σ exp(x) over every entry on every device (stable: the shift carries no gradient)."""
    m = lax.stop_gradient(jnp.max(x))
    if axis_name is not None:
        m = lax.pmax(m, axis_name)
    s = jnp.sum(jnp.exp(x - m))
    if axis_name is not None:
        s = lax.psum(s, axis_name)
    return m + jnp.log(s)


def uniformity(u: Array, *, t: float | Array = 2.0, axis_name: str | None = None) -> Array:
    """Gaussian-potential uniformity log mean_{j,k} exp(−t‖u_j − u_k‖²) over all global pairs (j = k too)."""
    u = _normalize(u)
    all_u = _gather(u, axis_name)
    # Unit rows: ‖u_j − u_k‖² = 2 − 2⟨u_j, u_k⟩ (clamped at 0 against rounding).
    sq = jnp.maximum(2.0 - 2.0 * u @ all_u.T, 0.0)
    n_global = all_u.shape[0]
    return _global_logsumexp(-t * sq, axis_name) - 2.0 * jnp.log(n_global)


def sep_loss(
    z_img: Array,
    z_txt: Array,
    z_img_ind: Array,
    z_txt_ind: Array,
    z_img_ind_aug: Array,
    z_txt_ind_aug: Array,
    *,
    tau: float | Array = 0.07,
    uniformity_t: float | Array = 2.0,
    w_orth: float | Array = 1.0,
    w_nce: float | Array = 1.0,
    w_unif: float | Array = 1.0,
    axis_name: str | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Deep feature separation L_Sep: orthogonality + in-modal InfoNCE + uniformity of independent features.

    `z_*` are the shared features, `z_*_ind` the independent ones and `z_*_ind_aug` the independent
    features of the augmented views. Each term sums its image and text parts; returns (total, terms).
    """
    zv, zt, uv, ut, uv2, ut2 = (
        _normalize(x) for x in (z_img, z_txt, z_img_ind, z_txt_ind, z_img_ind_aug, z_txt_ind_aug)
    )
    orth = _mean(jnp.sum(zv * uv, -1) ** 2 + jnp.sum(zt * ut, -1) ** 2, axis_name)
    scale = 1.0 / tau
    nce = _mean(_info_nce(uv, uv2, scale, axis_name), axis_name) + _mean(
        _info_nce(ut, ut2, scale, axis_name), axis_name
    )
    unif = uniformity(uv, t=uniformity_t, axis_name=axis_name) + uniformity(
        ut, t=uniformity_t, axis_name=axis_name
    )
    total = w_orth * orth + w_nce * nce + w_unif * unif
    return total, {"orthogonality": orth, "infonce": nce, "uniformity": unif}


def bridge_point(z_img: Array, z_txt: Array, t: float | Array = 0.25) -> Array:
    """μ = normalize(t·ẑ_V + (1−t)·ẑ_T) on the unit features; `t` is a scalar or one value per row."""
    t = jnp.asarray(t)
    if t.ndim == 1:
        t = t[:, None]
    return _normalize(t * _normalize(z_img) + (1.0 - t) * _normalize(z_txt))


def bridge_loss(
    z_img: Array,
    z_txt: Array,
    z_img_aug: Array,
    *,
    t: float | Array = 0.25,
    key: Array | None = None,
    stop_gradient_bridge: bool = False,
    axis_name: str | None = None,
) -> Array:
    """Brownian bridge L_Br = mean_j ‖ẑ^a_Vj − μ_j‖² (= 2 − 2cos(z^a_V, μ)), μ from `bridge_point`.

    With `key`, t ~ U(0, 1) per example instead of `t`: drawn for the whole global batch from the
    (replicated) key and sliced to the local rows, so the draw does not depend on the device count.
    """
    n = z_img.shape[0]
    if key is not None:
        n_global = n if axis_name is None else n * lax.axis_size(axis_name)
        t_all = jax.random.uniform(key, (n_global,), z_img.dtype)
        t = lax.dynamic_slice_in_dim(t_all, _row_offset(n, axis_name), n)
    mu = bridge_point(z_img, z_txt, t)
    if stop_gradient_bridge:
        mu = lax.stop_gradient(mu)
    return _mean(jnp.sum((_normalize(z_img_aug) - mu) ** 2, -1), axis_name)


def gc_loss(
    z_img: Array,
    z_txt: Array,
    z_img_aug: Array | None = None,
    z_txt_aug: Array | None = None,
    *,
    w_sym: float | Array = 0.25,
    w_gram: float | Array = 0.25,
    w_aug: float | Array = 0.25,
    axis_name: str | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Geometric consistency w_sym·symmetry + w_gram·gram (L_GC) + w_aug·(aug_gram + aug_pair) (L^a_GC).

    Every term is (1/N) Σ_j Σ_k of squared differences (rows j local, columns k gathered); without
    augmented features (pass both or neither) only L_GC is computed. Returns (total, terms).
    """
    zv, zt = _normalize(z_img), _normalize(z_txt)
    all_v, all_t = _gather(zv, axis_name), _gather(zt, axis_name)
    gram_v, gram_t = zv @ all_v.T, zt @ all_t.T

    def row_sq_sum(a: Array, b: Array) -> Array:
        return _mean(jnp.sum((a - b) ** 2, -1), axis_name)

    # ⟨z_Vk, z_Tj⟩ for local j and global k is row j of zt @ all_v.T: the transposed block.
    terms = {"symmetry": row_sq_sum(zv @ all_t.T, zt @ all_v.T), "gram": row_sq_sum(gram_v, gram_t)}
    total = w_sym * terms["symmetry"] + w_gram * terms["gram"]
    if z_img_aug is not None and z_txt_aug is not None:
        zv2, zt2 = _normalize(z_img_aug), _normalize(z_txt_aug)
        gram_v2 = zv2 @ _gather(zv2, axis_name).T
        gram_t2 = zt2 @ _gather(zt2, axis_name).T
        terms["aug_gram"] = row_sq_sum(gram_v, gram_v2) + row_sq_sum(gram_t, gram_t2)
        terms["aug_pair"] = _mean((jnp.sum(zv * zt, -1) - jnp.sum(zv2 * zt2, -1)) ** 2, axis_name)
        total = total + w_aug * (terms["aug_gram"] + terms["aug_pair"])
    return total, terms
