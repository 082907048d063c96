"""Image↔text retrieval Recall@K for the two-tower model, with several captions per image.

One of the downstream evaluations of Jiang et al. (arXiv 2303.05952).

Recalls are fractions in [0, 1] (multiply by 100 for the percentages papers print). Similarity is the
cosine of the embeddings (normalised inside). Only the n_img × n_txt similarity matrix and masks of the
same shape are built; ranks come from counting, not from sorting.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from mmjax.eval.gap import l2_normalize

Array = jax.Array

_HI = lax.Precision.HIGHEST


@functools.partial(jax.jit, static_argnames="ks")
def retrieval_recall(
    img_emb, txt_emb, ks: Sequence[int] = (1, 5, 10), txt_img_ids=None
) -> dict[str, Array]:
    """Recall@k both ways, keyed "i2t_R@k" and "t2i_R@k", as fractions in [0, 1].

    ``txt_img_ids[j]`` is the index of the image that text j describes (default: text j belongs to
    image j, which needs n_img == n_txt). Image→text is a hit when any of the image's texts is among
    its top k; text→image when its image is among the top k. Ties with a wrong item count against the
    query, so a collapsed model with constant scores gets recall 0 (for k below the number of
    candidates), not 1. Images without any text are left out of the image→text average. ``ks`` is
    static: pass a tuple.
    """
    img, txt = l2_normalize(img_emb), l2_normalize(txt_emb)
    n_img, n_txt = img.shape[0], txt.shape[0]
    if txt_img_ids is None:
        if n_img != n_txt:
            raise ValueError(
                f"retrieval_recall: n_img={n_img} != n_txt={n_txt}; pass txt_img_ids to pair them"
            )
        txt_img_ids = jnp.arange(n_txt)
    txt_img_ids = jnp.asarray(txt_img_ids, jnp.int32)
    sim = jnp.matmul(img, txt.T, precision=_HI)  # (n_img, n_txt)
    positive = txt_img_ids[None, :] == jnp.arange(n_img)[:, None]

    # Text→image: rank of the text's own image among all images (column-wise).
    own = jnp.take_along_axis(sim, txt_img_ids[None, :], axis=0)  # (1, n_txt)
    t2i_rank = jnp.sum(sim >= own, axis=0) - 1

    # Image→text: the first hit is the best-scoring positive, so its rank is the number of
    # negatives scoring at least as high; other positives never push it down.
    best_pos = jnp.max(jnp.where(positive, sim, -jnp.inf), axis=1, keepdims=True)
    i2t_rank = jnp.sum(~positive & (sim >= best_pos), axis=1)
    has_text = jnp.any(positive, axis=1)

    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = jnp.sum(has_text & (i2t_rank < k)) / jnp.sum(has_text)
    for k in ks:
        out[f"t2i_R@{k}"] = jnp.mean(t2i_rank < k)
    return out
