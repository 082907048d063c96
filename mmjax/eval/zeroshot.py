"""Zero-shot classification with prompt templates for the two-tower model (Jiang et al., arXiv 2303.05952).

A class is represented by the mean of its L2-normalised template embeddings, renormalised (as in CLIP,
open_clip and big_vision); images are scored by cosine similarity against the class embeddings.
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


def prompt_texts(class_names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Fill each template's "{}" with each class name: result[c][t] is template t for class c."""
    missing = [t for t in templates if "{}" not in t]
    if missing:
        raise ValueError(f"prompt_texts: templates without a '{{}}' placeholder: {missing}")
    # str.replace, not str.format, so templates may contain other braces.
    return [[t.replace("{}", name) for t in templates] for name in class_names]


@jax.jit
def class_embeddings(text_emb) -> Array:
    """(n_classes, n_templates, d) prompt embeddings → (n_classes, d): normalise, average, renormalise."""
    return l2_normalize(jnp.mean(l2_normalize(text_emb), axis=-2))


@jax.jit
def zero_shot_logits(img_emb, class_emb) -> Array:
    """(n_img, n_classes) cosine similarities between images and class embeddings (both normalised)."""
    return jnp.matmul(l2_normalize(img_emb), l2_normalize(class_emb).T, precision=_HI)


@functools.partial(jax.jit, static_argnames="topk")
def zero_shot_accuracy(img_emb, class_emb, labels, topk: Sequence[int] = (1, 5)) -> dict[str, Array]:
    """Top-k accuracy (fractions in [0, 1]) keyed "top{k}"; k larger than n_classes is skipped.

    A class scoring exactly as high as the true class counts as ranked above it, so a collapsed model
    whose scores are all equal gets top-1 accuracy 0, not 1. ``topk`` is static: pass a tuple.
    """
    logits = zero_shot_logits(img_emb, class_emb)
    labels = jnp.asarray(labels, jnp.int32)
    true_score = jnp.take_along_axis(logits, labels[:, None], axis=1)
    # Rank of the true class = number of other classes scoring at least as high (it matches itself).
    rank = jnp.sum(logits >= true_score, axis=1) - 1
    n_classes = logits.shape[1]
    return {f"top{k}": jnp.mean(rank < k) for k in topk if k <= n_classes}
