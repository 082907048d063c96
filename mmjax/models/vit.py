"""Vision Transformer image tower, and the pre-LN transformer blocks it shares with the text towers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

Array = jax.Array

VIT_POOLS = ("cls", "mean")


def check_choice(field: str, value: object, allowed: Sequence[str]) -> None:
    """Raise a one-line ValueError naming `field`, the bad `value` and the `allowed` names."""
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{field}={value!r} is invalid: expected one of {names}")


class MlpBlock(nn.Module):
    """Transformer feed-forward block: Dense(mlp_dim) → GELU → Dense(back to the input width)."""

    mlp_dim: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Map (..., width) to (..., width)."""
        y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype)(y)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32

    def attend(self, x: Array, name: str, norm: str, mask: Array | None = None,
               context: Array | None = None) -> Array:
        """Residual pre-LN attention x + MHA(LN(x)) from submodules `name` and `norm`.

        Queries come from LN(x); keys and values from LN(x) too (self-attention) or, given `context`
        (B, M, any width), from `context` itself (cross-attention). `mask` is boolean (B, 1, L, L or M).
        """
        # softmax in float32 keeps bfloat16 attention logits from saturating
        attn = nn.MultiHeadDotProductAttention(
            self.num_heads, dtype=self.dtype, force_fp32_for_softmax=True, name=name
        )
        return x + attn(nn.LayerNorm(dtype=self.dtype, name=norm)(x), context, mask=mask)

    def feed_forward(self, x: Array) -> Array:
        """Residual pre-LN MLP x + MLP(LN(x))."""
        mlp = MlpBlock(self.mlp_dim, dtype=self.dtype, name="mlp")
        return x + mlp(nn.LayerNorm(dtype=self.dtype, name="norm2")(x))

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        """Map (B, L, width) to (B, L, width); `mask` is a boolean (B, 1, L, L) attention mask."""
        return self.feed_forward(self.attend(x, "attn", "norm1", mask))


class FusionBlock(EncoderBlock):
    """Pre-LN fusion block: self-attention, then cross-attention to `context`, then MLP (ALBEF §3.1).

    x + MHSA(LN(x)), then x + MHA(LN(x), context) with keys and values from `context` (the image
    tokens, all valid), then x + MLP(LN(x)). The self-attention and MLP are `EncoderBlock`'s, under the
    same names; the cross-attention adds `cross_attn` and `norm_cross`.
    """

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None, *, context: Array) -> Array:
        """Map (B, L, width) text and (B, M, context width) `context` to (B, L, width)."""
        x = self.attend(x, "attn", "norm1", mask)
        x = self.attend(x, "cross_attn", "norm_cross", context=context)
        return self.feed_forward(x)


class Encoder(nn.Module):
    """A stack of `depth` pre-LN blocks followed by a final LayerNorm (pre-LN leaves the stream unnormed)."""

    depth: int
    num_heads: int
    mlp_dim: int
    dtype: Dtype = jnp.float32
    block: ClassVar[type[EncoderBlock]] = EncoderBlock

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None, **block_kwargs: Array) -> Array:
        """Map (B, L, width) to (B, L, width); `block_kwargs` go to every block."""
        for i in range(self.depth):
            block = self.block(self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"block{i}")
            x = block(x, mask, **block_kwargs)
        return nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)


class FusionEncoder(Encoder):
    """`Encoder` of `FusionBlock`s: call it as `(x, mask, context=image_tokens)`."""

    block: ClassVar[type[EncoderBlock]] = FusionBlock


class ViT(nn.Module):
    """Vision Transformer: patchify, learned position embeddings, pre-LN encoder, CLS or mean pooling.

    `dtype` is the compute dtype (e.g. jnp.bfloat16); parameters stay float32. The output is in `dtype`.
    The number of patches is fixed by the image size seen at `init`. With `return_tokens=True` the call
    returns the encoded token sequence instead of its pooling (as big_vision's ViT returns
    `out["encoded"]` beside the pooled features): the CLS token at position 0, then the patches.
    """

    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int | None = None
    pool: str = "cls"
    dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_choice("pool", self.pool, VIT_POOLS)
        super().__post_init__()

    @nn.compact
    def __call__(self, images: Array, return_tokens: bool = False) -> Array:
        """Map (B, H, W, C) float images to (B, width) pooled features, or with `return_tokens` to the
        (B, [1 +] P, width) encoded tokens: CLS (pool="cls" only) then the P patches, final-normed."""
        p = self.patch_size
        x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="patch")(
            images
        )
        b = x.shape[0]
        x = x.reshape(b, -1, self.width)
        if self.pool == "cls":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
            x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.width)).astype(x.dtype), x], axis=1)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, x.shape[1], self.width))
        x = x + pos.astype(x.dtype)
        mlp_dim = self.mlp_dim or 4 * self.width
        x = Encoder(self.depth, self.num_heads, mlp_dim, dtype=self.dtype, name="encoder")(x)
        if return_tokens:
            return x
        return x[:, 0] if self.pool == "cls" else x.mean(axis=1)

