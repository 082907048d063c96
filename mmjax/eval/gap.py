"""Modality-gap metrics on image and text embeddings: centroid gap, alignment, uniformity, cone.

The modality gap as studied by Jiang et al. (arXiv 2303.05952); alignment and uniformity are those of
Wang & Isola (2020).

Every metric L2-normalises its inputs first, so raw encoder outputs can be passed directly. Each is a
jitted ``jax.numpy`` function (usable inside other jitted code); nothing larger than the n × n Gram
matrix of ``uniformity`` is materialised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

_HI = lax.Precision.HIGHEST


def l2_normalize(x, eps: float = 1e-12) -> Array:
    """Scale each row (last axis) to unit L2 norm; all-zero rows stay zero instead of becoming NaN."""
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@jax.jit
def centroid_distance(x, y) -> Array:
    """‖mean(normalised x) − mean(normalised y)‖: the distance between the two modality centroids."""
    return jnp.linalg.norm(jnp.mean(l2_normalize(x), axis=0) - jnp.mean(l2_normalize(y), axis=0))


@jax.jit
def mean_paired_distance(x, y) -> Array:
    """Mean Euclidean distance ‖x_i − y_i‖ between the normalised embeddings of matched pairs."""
    return jnp.mean(jnp.linalg.norm(l2_normalize(x) - l2_normalize(y), axis=-1))


@jax.jit
def alignment(x, y, alpha: float = 2.0) -> Array:
    """Wang & Isola's alignment: mean ‖x_i − y_i‖^alpha over matched pairs of normalised embeddings."""
    return jnp.mean(jnp.linalg.norm(l2_normalize(x) - l2_normalize(y), axis=-1) ** alpha)


@jax.jit
def uniformity(x, t: float = 2.0) -> Array:
    """Wang & Isola's uniformity: log mean_{i≠j} exp(−t‖x_i − x_j‖²) of normalised embeddings."""
    z = l2_normalize(x)
    n = z.shape[0]
    # Unit vectors: ‖a − b‖² = 2 − 2a·b; clamped because rounding can push it slightly below zero.
    sq = jnp.maximum(2.0 - 2.0 * jnp.matmul(z, z.T, precision=_HI), 0.0)
    logits = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, -t * sq)
    return jax.nn.logsumexp(logits) - jnp.log(n * (n - 1.0))


@jax.jit
def mean_cosine(x) -> Array:
    """Within-modality mean pairwise cosine over i≠j (the "cone" effect); 1 when all rows coincide."""
    z = l2_normalize(x)
    n = z.shape[0]
    # Σ_{i≠j} z_i·z_j = ‖Σ z_i‖² − Σ‖z_i‖², which avoids the n × n Gram matrix.
    total = jnp.sum(z, axis=0)
    return (jnp.sum(total**2) - jnp.sum(z**2)) / (n * (n - 1.0))


@jax.jit
def _gap_arrays(img: Array, txt: Array) -> dict[str, Array]:
    return {
        "centroid_distance": centroid_distance(img, txt),
        "mean_paired_distance": mean_paired_distance(img, txt),
        "alignment": alignment(img, txt),
        "uniformity_img": uniformity(img),
        "uniformity_txt": uniformity(txt),
        "cone_img": mean_cosine(img),
        "cone_txt": mean_cosine(txt),
    }


def gap_metrics(img, txt) -> dict[str, float]:
    """All gap metrics for paired (n, d) image and text embeddings, as Python floats (one jitted call)."""
    img, txt = jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32)
    if img.shape != txt.shape:
        raise ValueError(f"gap_metrics: img and txt must be paired, got shapes {img.shape} and {txt.shape}")
    return {name: float(value) for name, value in _gap_arrays(img, txt).items()}
