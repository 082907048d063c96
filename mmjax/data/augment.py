"""Batched augmentations in pure jax.numpy, one explicit PRNG key per call.

They make the augmented views of L_Con and the regularizers of Jiang et al. (arXiv 2303.05952).

Images are float (B, H, W, C) in [0, 1], as the input pipeline yields them; token rows follow
`mmjax.data.tokenizer`'s convention `[sot] words [eot] pad...`. Every function is jittable with the
config fields as static Python numbers, and draws independent randomness per example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from mmjax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

# ITU-R 601 luma weights, the ones torchvision's ColorJitter uses for grey levels.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the image and text augmentations; 0 (or full scale, p = 0) switches one off."""

    # A tiny-image default: SimCLR's (0.08, 1) crops often cut the single object out of a 32-px scene,
    # leaving a view the caption no longer describes.
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_size: tuple[int, int] | None = None  # output (H, W); None keeps the input size
    flip_prob: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    word_dropout: float = 0.1
    swap_prob: float = 0.1

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale={self.crop_scale!r} is invalid: need 0 < low <= high <= 1")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio={self.crop_ratio!r} is invalid: need 0 < low <= high")
        if self.crop_size is not None and min(self.crop_size) < 1:
            raise ValueError(f"crop_size={self.crop_size!r} is invalid: need positive (H, W) or None")
        for name in ("flip_prob", "word_dropout", "swap_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be >= 0")


def _bilinear_weights(start: jax.Array, length: jax.Array, in_size: int, out_size: int) -> jax.Array:
    """(B, out_size, in_size) weights sampling [start, start + length) at out_size pixel centres."""
    centres = start[:, None] + (jnp.arange(out_size) + 0.5) * (length / out_size)[:, None] - 0.5
    centres = jnp.clip(centres, 0, in_size - 1)  # edge pixels repeat, so every row of weights sums to 1
    return jnp.maximum(0.0, 1 - jnp.abs(centres[..., None] - jnp.arange(in_size)))


def random_resized_crop(key: jax.Array, images: jax.Array, *, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        size: tuple[int, int] | None = None) -> jax.Array:
    """Crop a random area fraction in `scale` with width/height in `ratio`, resized bilinearly to `size`."""
    b, h, w, _ = images.shape
    out_h, out_w = size or (h, w)
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (b,), minval=scale[0], maxval=scale[1]) * h * w
    aspect = jnp.exp(jax.random.uniform(k_ratio, (b,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])))
    # Clipping to the image instead of torchvision's rejection loop keeps the draw fixed-shape (vmappable);
    # only extreme ratios at large scales lose some area.
    crop_w = jnp.minimum(jnp.sqrt(area * aspect), w)
    crop_h = jnp.minimum(jnp.sqrt(area / aspect), h)
    y0 = jax.random.uniform(k_y, (b,)) * (h - crop_h)
    x0 = jax.random.uniform(k_x, (b,)) * (w - crop_w)
    # Separable resize as two small matmuls: cheap to compile and exact for the identity crop. There is no
    # antialiasing; crops are mostly upsampled.
    rows = _bilinear_weights(y0, crop_h, h, out_h)
    cols = _bilinear_weights(x0, crop_w, w, out_w)
    return jnp.einsum("boh,bhwc,bpw->bopc", rows, images, cols, precision=jax.lax.Precision.HIGHEST)


def horizontal_flip(key: jax.Array, images: jax.Array, p: float = 0.5) -> jax.Array:
    """Mirror each image left-right with probability p."""
    flip = jax.random.bernoulli(key, p, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def _grey(images: jax.Array) -> jax.Array:
    return jnp.tensordot(images, jnp.asarray(_LUMA, images.dtype), axes=([-1], [0]))[..., None]


def color_jitter(key: jax.Array, images: jax.Array, *, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4) -> jax.Array:
    """Scale brightness, contrast and saturation by factors drawn from [1 - s, 1 + s], in that order."""
    b = images.shape[0]

    def factor(k, strength):
        return jax.random.uniform(k, (b, 1, 1, 1), minval=max(0.0, 1 - strength), maxval=1 + strength)

    k_b, k_c, k_s = jax.random.split(key, 3)
    # Clamp after every step, as torchvision does, so each step sees a valid image.
    out = jnp.clip(images * factor(k_b, brightness), 0, 1)
    mean = _grey(out).mean(axis=(1, 2, 3), keepdims=True)
    out = jnp.clip((out - mean) * factor(k_c, contrast) + mean, 0, 1)
    grey = _grey(out)
    return jnp.clip((out - grey) * factor(k_s, saturation) + grey, 0, 1)


def _is_word(tokens: jax.Array, pad_id: int, bos_id: int, eos_id: int) -> jax.Array:
    return (tokens != pad_id) & (tokens != bos_id) & (tokens != eos_id)


def word_dropout(key: jax.Array, tokens: jax.Array, p: float, *, pad_id: int = PAD_ID, bos_id: int = BOS_ID,
                 eos_id: int = EOS_ID) -> jax.Array:
    """Drop each word token with probability p, shifting the rest left and padding the end."""
    drop = _is_word(tokens, pad_id, bos_id, eos_id) & jax.random.bernoulli(key, p, tokens.shape)
    keep = ~drop & (tokens != pad_id)
    # A stable sort on "not kept" moves kept tokens to the front in their original order.
    order = jnp.argsort(~keep, axis=-1, stable=True)
    moved = jnp.take_along_axis(tokens, order, axis=-1)
    positions = jnp.arange(tokens.shape[-1])
    return jnp.where(positions < keep.sum(-1, keepdims=True), moved, pad_id)


def random_swap(key: jax.Array, tokens: jax.Array, p: float, *, pad_id: int = PAD_ID, bos_id: int = BOS_ID,
                eos_id: int = EOS_ID) -> jax.Array:
    """Swap adjacent word pairs, each pair starting with probability p; swaps never overlap."""
    word = _is_word(tokens, pad_id, bos_id, eos_id)
    eligible = word[..., :-1] & word[..., 1:]  # pair (i, i+1) is two words
    chosen = eligible & jax.random.bernoulli(key, p, eligible.shape)

    # In a run of consecutive chosen pairs only every other one swaps (the 1st, 3rd, ...), so no token is
    # in two swaps: a run's position is the distance to the last unchosen pair before it.
    index = jnp.arange(chosen.shape[-1])
    last_unchosen = jax.lax.cummax(jnp.where(chosen, -1, index), axis=chosen.ndim - 1)
    start = chosen & ((index - last_unchosen) % 2 == 1)
    pad = [(0, 0)] * (start.ndim - 1)
    source = (jnp.arange(tokens.shape[-1]) + jnp.pad(start, pad + [(0, 1)])
              - jnp.pad(start, pad + [(1, 0)]))
    return jnp.take_along_axis(tokens, source, axis=-1)


def augment_images(key: jax.Array, images: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """One augmented view of a batch of images: random resized crop, flip, colour jitter."""
    k_crop, k_flip, k_jitter = jax.random.split(key, 3)
    out = random_resized_crop(k_crop, images, scale=cfg.crop_scale, ratio=cfg.crop_ratio, size=cfg.crop_size)
    out = horizontal_flip(k_flip, out, cfg.flip_prob)
    return color_jitter(k_jitter, out, brightness=cfg.brightness, contrast=cfg.contrast,
                        saturation=cfg.saturation)


def augment_tokens(key: jax.Array, tokens: jax.Array, cfg: AugmentConfig) -> jax.Array:
    """One augmented view of a batch of token rows: word dropout, then adjacent swaps."""
    k_drop, k_swap = jax.random.split(key)
    return random_swap(k_swap, word_dropout(k_drop, tokens, cfg.word_dropout), cfg.swap_prob)


def two_views(key: jax.Array, images: jax.Array, tokens: jax.Array, cfg: AugmentConfig
              ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Two independently augmented views: `(images_a, images_b), (tokens_a, tokens_b)`."""
    k_ia, k_ib, k_ta, k_tb = jax.random.split(key, 4)
    return ((augment_images(k_ia, images, cfg), augment_images(k_ib, images, cfg)),
            (augment_tokens(k_ta, tokens, cfg), augment_tokens(k_tb, tokens, cfg)))
