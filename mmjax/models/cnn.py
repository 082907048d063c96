"""Convolutions as strided slices + one matmul, and a small image encoder for the image–text study.

XLA's CPU convolution runs about 20× slower inside a `while` loop (a `lax.scan` over train steps) than
as a top-level op (measured: 200 ms vs 11 ms per step for the encoder below at batch 128); slicing the
k×k patches and applying one Dense is as fast in both places (7 ms), so the scanned, vmapped runs of
the sweeps use `PatchConv`. It computes exactly a `nn.Conv` with explicit padding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class PatchConv(nn.Module):
    """N-d convolution (channels last) with explicit `padding` (low, high) per spatial dim."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Sequence[tuple[int, int]]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """(B, *spatial, C) → (B, *out_spatial, features)."""
        spatial = x.shape[1:-1]
        x = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
        out = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in
               zip(spatial, self.padding, self.kernel_size, self.strides, strict=True)]
        patches = []
        for offset in itertools.product(*(range(k) for k in self.kernel_size)):
            index = tuple(slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offset, out, self.strides,
                                                                              strict=True))
            patches.append(x[(slice(None), *index, slice(None))])
        return nn.Dense(self.features, dtype=self.dtype)(jnp.concatenate(patches, axis=-1))


class ConvEncoder(nn.Module):
    """Stride-2 3×3 convolutions with LeakyReLU, then Dense(hidden) → LeakyReLU → Dense(out_dim).

    The paper's image encoder is ResNet-18 → 100 → LeakyReLU → n; this keeps its head and swaps the
    trunk for a few convolutions so that dozens of vmapped runs fit on a CPU.
    """

    channels: Sequence[int] = (16, 32, 32)
    hidden: int = 100
    out_dim: int = 5
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, images: Array) -> Array:
        """Map (B, H, W, C) images to (B, out_dim)."""
        x = images
        for c in self.channels:
            x = PatchConv(c, (3, 3), (2, 2), ((1, 1), (1, 1)))(x)
            x = nn.leaky_relu(x, self.negative_slope)
        x = x.reshape(x.shape[0], -1)
        x = nn.leaky_relu(nn.Dense(self.hidden)(x), self.negative_slope)
        return nn.Dense(self.out_dim)(x)
