"""Text towers over int32 token ids: a pre-LN Transformer and the paper's CNN over one-hot tokens."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from mmjax.models.cnn import PatchConv
from mmjax.models.vit import Encoder, check_choice

Array = jax.Array

TEXT_POOLS = ("eot", "mean")


def padding_mask(valid: Array) -> Array:
    """Boolean (B, 1, L, L) attention mask from (B, L) `valid` (False at padding): queries attend only to
    valid keys."""
    b, length = valid.shape
    return jnp.broadcast_to(valid[:, None, None, :], (b, 1, length, length))


class TextTransformer(nn.Module):
    """Token + learned position embeddings, pre-LN encoder, "eot" or "mean" pooling over (B, L) tokens.

    Tokens equal to `pad_id` are masked out of attention (as keys) and of pooling, so appending padding
    leaves the output unchanged. "eot" takes the feature at the last non-padding token (the end-of-text
    token for right-padded sequences); "mean" averages over non-padding tokens. `causal=True` adds a
    causal mask. Sequences may be shorter than `max_len`. `dtype` is the compute dtype; params are float32.
    """

    vocab_size: int
    max_len: int = 77
    width: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_dim: int | None = None
    causal: bool = True
    pool: str = "eot"
    pad_id: int = 0
    dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_choice("pool", self.pool, TEXT_POOLS)
        super().__post_init__()

    def setup(self) -> None:
        self.token_embed = nn.Embed(
            self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02), dtype=self.dtype
        )
        self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.01), (self.max_len, self.width))
        self.encoder = Encoder(self.depth, self.num_heads, self.mlp_dim or 4 * self.width, dtype=self.dtype)

    def token_features(self, tokens: Array) -> Array:
        """Per-token features (B, L, width) before pooling; padding rows hold meaningless values."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"tokens have length {length} > max_len={self.max_len}")
        x = self.token_embed(tokens) + self.pos_embed[:length].astype(self.dtype)
        mask = padding_mask(tokens != self.pad_id)
        if self.causal:
            mask = nn.combine_masks(mask, nn.make_causal_mask(tokens))
        return self.encoder(x, mask)

    def __call__(self, tokens: Array) -> Array:
        """Map (B, L) int tokens to (B, width) pooled features."""
        x = self.token_features(tokens)
        valid = tokens != self.pad_id
        if self.pool == "eot":
            last = jnp.max(jnp.where(valid, jnp.arange(tokens.shape[1]), 0), axis=1)
            return x[jnp.arange(tokens.shape[0]), last]
        w = valid[..., None].astype(x.dtype)
        # max(·, 1) keeps an all-padding row finite (zeros) instead of 0/0
        return (x * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1)


class TextCNN(nn.Module):
    """The paper's text CNN: Linear(V, embed_dim) on one-hot tokens, stride-2 Conv1D blocks, Dense out.

    Conv blocks (kernel 4, stride 2, padding 1, so each halves the length) with `channels` 25 → 50 →
    100 → 200 are added while the sequence map is at least `min_width` wide. The reference uses
    BatchNorm; LayerNorm over channels replaces it so the model has no mutable state. Padding is an
    ordinary token here (as in the reference), and the flattened map fixes the sequence length at init.
    """

    vocab_size: int
    num_outputs: int = 128
    embed_dim: int = 128
    channels: Sequence[int] = (25, 50, 100, 200)
    min_width: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        """Map (B, L) int tokens to (B, num_outputs)."""
        # a Linear on one-hot vectors is a row lookup plus bias; gathering avoids a (B, L, V) tensor
        shape = (self.vocab_size, self.embed_dim)
        kernel = self.param("onehot_kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("onehot_bias", nn.initializers.zeros, (self.embed_dim,))
        x = (jnp.take(kernel, tokens, axis=0) + bias).astype(self.dtype)
        for c in self.channels:
            if x.shape[1] < self.min_width:
                break
            # PatchConv = nn.Conv, but fast inside lax.scan on CPU (see mmjax.models.cnn).
            x = PatchConv(c, (4,), (2,), ((1, 1),), dtype=self.dtype)(x)
            x = nn.relu(nn.LayerNorm(dtype=self.dtype)(x))
        return nn.Dense(self.num_outputs, dtype=self.dtype)(x.reshape(x.shape[0], -1))
