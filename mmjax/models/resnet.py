"""ResNet image towers (18- and 50-style) with GroupNorm, so they are pure functions of their parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from mmjax.models.vit import check_choice

Array = jax.Array

RESNET_BLOCKS = ("basic", "bottleneck")


def _norm(channels: int, dtype: Dtype, zero_scale: bool = False, name: str | None = None) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups; gcd keeps the group count a divisor of any channel count."""
    # a zero scale on the last norm of a residual branch makes every block start as the identity
    scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
    return nn.GroupNorm(num_groups=math.gcd(32, channels), dtype=dtype, scale_init=scale_init, name=name)


def _shortcut(residual: Array, y: Array, strides: int, dtype: Dtype) -> Array:
    """Project the residual with a strided 1x1 conv + norm when the branch changed its shape."""
    if residual.shape == y.shape:
        return residual
    c = y.shape[-1]
    residual = nn.Conv(c, (1, 1), (strides, strides), use_bias=False, dtype=dtype, name="proj")(residual)
    return _norm(c, dtype, name="proj_norm")(residual)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convs; output has `filters` channels."""

    filters: int
    strides: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Map (B, H, W, C) to (B, H/strides, W/strides, filters)."""
        s = (self.strides, self.strides)
        y = nn.Conv(self.filters, (3, 3), s, use_bias=False, dtype=self.dtype)(x)
        y = nn.relu(_norm(self.filters, self.dtype)(y))
        y = nn.Conv(self.filters, (3, 3), use_bias=False, dtype=self.dtype)(y)
        y = _norm(self.filters, self.dtype, zero_scale=True)(y)
        return nn.relu(_shortcut(x, y, self.strides, self.dtype) + y)


class BottleneckBlock(nn.Module):
    """ResNet-50 block: 1x1 reduce, strided 3x3, 1x1 expand; output has 4 * `filters` channels."""

    filters: int
    strides: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Map (B, H, W, C) to (B, H/strides, W/strides, 4 * filters)."""
        s = (self.strides, self.strides)
        y = nn.Conv(self.filters, (1, 1), use_bias=False, dtype=self.dtype)(x)
        y = nn.relu(_norm(self.filters, self.dtype)(y))
        y = nn.Conv(self.filters, (3, 3), s, use_bias=False, dtype=self.dtype)(y)
        y = nn.relu(_norm(self.filters, self.dtype)(y))
        y = nn.Conv(4 * self.filters, (1, 1), use_bias=False, dtype=self.dtype)(y)
        y = _norm(4 * self.filters, self.dtype, zero_scale=True)(y)
        return nn.relu(_shortcut(x, y, self.strides, self.dtype) + y)


class ResNet(nn.Module):
    """ResNet with GroupNorm instead of BatchNorm: no mutable batch_stats, so `apply` is a pure function.

    Stage i has `stage_sizes[i]` blocks of `width * 2**i` base filters (x4 channels out for "bottleneck").
    `small_input=True` swaps the 7x7/2 conv + 3x3/2 max-pool stem for one 3x3/1 conv (for 16-64 px
    images). Output: globally average-pooled features, then Dense(`num_outputs`) when it is given.
    `dtype` is the compute dtype; parameters stay float32.
    """

    stage_sizes: Sequence[int]
    block: str = "basic"
    width: int = 64
    num_outputs: int | None = None
    small_input: bool = False
    dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_choice("block", self.block, RESNET_BLOCKS)
        super().__post_init__()

    @nn.compact
    def __call__(self, images: Array) -> Array:
        """Map (B, H, W, C) float images to (B, features) or (B, num_outputs)."""
        if self.small_input:
            x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name="stem")(images)
            x = nn.relu(_norm(self.width, self.dtype, name="stem_norm")(x))
        else:
            x = nn.Conv(self.width, (7, 7), (2, 2), use_bias=False, dtype=self.dtype, name="stem")(images)
            x = nn.relu(_norm(self.width, self.dtype, name="stem_norm")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        block_cls = BasicBlock if self.block == "basic" else BottleneckBlock
        for i, size in enumerate(self.stage_sizes):
            for j in range(size):
                strides = 2 if i > 0 and j == 0 else 1
                x = block_cls(self.width * 2**i, strides, dtype=self.dtype, name=f"stage{i}_block{j}")(x)
        x = x.mean(axis=(1, 2))
        if self.num_outputs is not None:
            x = nn.Dense(self.num_outputs, dtype=self.dtype, name="head")(x)
        return x


def resnet18(**kwargs) -> ResNet:
    """ResNet-18: basic blocks in stages (2, 2, 2, 2); kwargs go to `ResNet`."""
    return ResNet(stage_sizes=(2, 2, 2, 2), block="basic", **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50: bottleneck blocks in stages (3, 4, 6, 3); kwargs go to `ResNet`."""
    return ResNet(stage_sizes=(3, 4, 6, 3), block="bottleneck", **kwargs)
