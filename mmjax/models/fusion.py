"""ALBEF-style fusion model (Li et al. 2021, "Align before Fuse", arXiv 2107.07651, §3.1).

An image encoder (ViT) returning its tokens, and a BERT-style bidirectional text model whose first
`depth` layers encode the text alone and whose last `fusion_layers` layers are fusion layers
(self-attention, then cross-attention from the text tokens to the image tokens, then MLP). On top:
the ITC projections of the image and text CLS features, the ITM head on the fused CLS, the MLM head
tied to the token embeddings, and the learnable ITC temperature. The losses that use these outputs
are in `mmjax.losses.fusion`.

Every piece a trainer needs is a method, so that one `apply` runs one part:

    tok_i = model.apply(v, images, method=Fusion.image_tokens)      # (B, 1 + P, width_i)
    tok_t = model.apply(v, tokens, method=Fusion.text_tokens)       # (B, L, width_t), text alone
    img, txt = (model.apply(v, tok_i, method=Fusion.image_feature),  # (B, embed_dim), unit rows
                model.apply(v, tok_t, method=Fusion.text_feature))
    fused = model.apply(v, tok_t, tokens != pad_id, tok_i, method=Fusion.fuse)  # (B, L, width_t)
    itm = model.apply(v, fused, method=Fusion.itm_logits)            # (B, 2); column 1 = matched
    mlm = model.apply(v, fused, method=Fusion.mlm_logits)            # (B, L, vocab)

so the text part runs once and the fusion part as often as needed (positive pairs, hard negatives,
the masked text of MLM). The model is pre-LN like the towers of `mmjax.models.vit` (BERT is post-LN):
each stack ends in a LayerNorm, so the unimodal text feature is the normed output of the text-only
layers at position 0 (the start token, BERT's [CLS]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from mmjax.models.text import TextTransformer, padding_mask
from mmjax.models.two_tower import _make, l2_normalize
from mmjax.models.vit import FusionEncoder, ViT

Array = jax.Array

FUSION_IMAGE_TOWERS: dict[str, Callable[..., nn.Module]] = {"vit": ViT}
"""Image towers that return a token sequence for the fusion layers to cross-attend to."""


class MLMHead(nn.Module):
    """BERT's MLM head, tied: Dense(width) → GELU → LayerNorm, then logits h·Eᵀ + b.

    E (vocab × width) is the token embedding table, passed in at call time, so the head has no output
    kernel of its own (ALBEF ties the MLM decoder to BERT's word embeddings); `bias` is per token id.
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, embedding: Array) -> Array:
        """Map (..., width) features to (..., vocab) float32 logits against `embedding` (vocab, width)."""
        h = nn.gelu(nn.Dense(x.shape[-1], dtype=self.dtype, name="dense")(x))
        h = nn.LayerNorm(dtype=self.dtype, name="norm")(h)
        bias = self.param("bias", nn.initializers.zeros, (embedding.shape[0],))
        logits = jnp.dot(h, embedding.astype(self.dtype).T)
        return logits.astype(jnp.float32) + bias


class FusionTextModel(TextTransformer):
    """BERT-style text model with fusion layers: `depth` text-only layers, then `fusion_layers` fusion
    layers (ALBEF §3.1: 6 + 6 of BERT-base's 12), a padding mask throughout, and the tied MLM head.

    The text-only part is `TextTransformer`'s (token + position embeddings, `encoder`, bidirectional:
    `causal` must stay False); `fusion` is a `FusionEncoder` whose blocks cross-attend to the image
    tokens (any width; all of them valid); `mlm_head` reuses `token_embed`'s table as its output.
    """

    fusion_layers: int = 6
    causal: bool = False

    def __post_init__(self) -> None:
        if self.causal:
            raise ValueError("causal=True is invalid: the fusion text model is bidirectional (BERT)")
        if self.fusion_layers < 1:
            raise ValueError(f"fusion_layers={self.fusion_layers} is invalid: must be at least 1")
        super().__post_init__()

    def setup(self) -> None:
        super().setup()
        mlp_dim = self.mlp_dim or 4 * self.width
        self.fusion = FusionEncoder(self.fusion_layers, self.num_heads, mlp_dim, dtype=self.dtype)
        self.mlm_head = MLMHead(dtype=self.dtype)

    def encode_text(self, tokens: Array) -> Array:
        """Map (B, L) int tokens to (B, L, width) text-only features (padding rows are meaningless)."""
        return self.token_features(tokens)

    def fuse(self, text_tokens: Array, mask: Array, image_tokens: Array) -> Array:
        """Fusion layers: (B, L, width) `text_tokens` of `encode_text`, (B, L) boolean `mask` (True at
        real tokens) and (B, M, any width) `image_tokens` to (B, L, width) fused features."""
        return self.fusion(text_tokens, padding_mask(mask), context=image_tokens)

    def mlm_logits(self, fused: Array) -> Array:
        """(B, L, width) fused features to (B, L, vocab_size) float32 MLM logits (tied head)."""
        return self.mlm_head(fused, self.token_embed.embedding)

    def __call__(self, tokens: Array, image_tokens: Array) -> tuple[Array, Array, Array]:
        """(text-only features, fused features, MLM logits) of `tokens` with `image_tokens`."""
        text = self.encode_text(tokens)
        fused = self.fuse(text, tokens != self.pad_id, image_tokens)
        return text, fused, self.mlm_logits(fused)


class Fusion(nn.Module):
    """ALBEF: a ViT (pool="cls"), a `FusionTextModel`, ITC projections, the ITM head and temperature.

    `image_proj`, `text_proj` map the image and text CLS features to `embed_dim` (256 in ALBEF; with
    bias, as ALBEF's nn.Linear), L2-normalised; `itm_head` is Dense(2) on the fused CLS. `temp` is the
    ITC temperature itself (init 0.07); `temp()` clamps it to [min_temp, max_temp] = [0.001, 0.5] as
    ALBEF does, and `clamp_temp` clamps the stored parameter (ALBEF clamps it in place every step).
    Projections and heads run in float32 whatever the towers' compute dtype, so losses see float32.
    With `independent_heads`, `image_ind_proj`, `text_ind_proj` give the CLS features a second
    projection, the "independent" features of deep feature separation (Jiang et al., arXiv 2303.05952),
    as `TwoTower` does.
    """

    image_tower: nn.Module
    text_model: FusionTextModel
    embed_dim: int = 256
    init_temp: float = 0.07
    min_temp: float = 0.001
    max_temp: float = 0.5
    independent_heads: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.image_tower, ViT) or self.image_tower.pool != "cls":
            name = type(self.image_tower).__name__
            raise ValueError(f'image_tower={name} is invalid: the fusion model needs a ViT with pool="cls" '
                             "(its tokens feed the cross-attention, its CLS the ITC)")
        if not 0 < self.min_temp <= self.init_temp <= self.max_temp:
            raise ValueError(f"init_temp={self.init_temp} is invalid: must be in [min_temp, max_temp] = "
                             f"[{self.min_temp}, {self.max_temp}] with min_temp > 0")
        super().__post_init__()

    def setup(self) -> None:
        self.image_proj = nn.Dense(self.embed_dim)
        self.text_proj = nn.Dense(self.embed_dim)
        self.itm_head = nn.Dense(2)
        if self.independent_heads:
            self.image_ind_proj = nn.Dense(self.embed_dim)
            self.text_ind_proj = nn.Dense(self.embed_dim)
        self.temp_param = self.param("temp", nn.initializers.constant(self.init_temp), ())

    def image_tokens(self, images: Array) -> Array:
        """(B, H, W, C) images to the ViT's (B, 1 + P, width) tokens: CLS, then the patches."""
        return self.image_tower(images, return_tokens=True)

    def image_feature(self, image_tokens: Array) -> Array:
        """(B, 1 + P, width) image tokens to the (B, embed_dim) unit-norm float32 ITC feature of the CLS."""
        return l2_normalize(self.image_proj(image_tokens[:, 0].astype(jnp.float32)))

    def text_tokens(self, tokens: Array) -> Array:
        """(B, L) int tokens to (B, L, width) text-only features (no image involved)."""
        return self.text_model.encode_text(tokens)

    def text_feature(self, text_tokens: Array) -> Array:
        """(B, L, width) text-only features to the (B, embed_dim) unit-norm float32 ITC feature of the CLS."""
        return l2_normalize(self.text_proj(text_tokens[:, 0].astype(jnp.float32)))

    def image_ind_feature(self, image_tokens: Array) -> Array:
        """(B, 1 + P, width) image tokens to the unit-norm independent feature (needs `independent_heads`)."""
        return l2_normalize(self.image_ind_proj(image_tokens[:, 0].astype(jnp.float32)))

    def text_ind_feature(self, text_tokens: Array) -> Array:
        """(B, L, width) text-only features to the unit-norm independent feature (`independent_heads`)."""
        return l2_normalize(self.text_ind_proj(text_tokens[:, 0].astype(jnp.float32)))

    def fuse(self, text_tokens: Array, mask: Array, image_tokens: Array) -> Array:
        """`FusionTextModel.fuse`: text features, (B, L) boolean mask (True at real tokens), image tokens."""
        return self.text_model.fuse(text_tokens, mask, image_tokens)

    def itm_logits(self, fused: Array) -> Array:
        """(B, L, width) fused features to (B, 2) float32 ITM logits of the fused CLS (column 1 = matched)."""
        return self.itm_head(fused[:, 0].astype(jnp.float32))

    def mlm_logits(self, fused: Array) -> Array:
        """(B, L, width) fused features to (B, L, vocab_size) float32 MLM logits."""
        return self.text_model.mlm_logits(fused)

    def temp(self) -> Array:
        """The ITC temperature, clamped to [min_temp, max_temp]."""
        return jnp.clip(self.temp_param, self.min_temp, self.max_temp)

    def __call__(self, images: Array, tokens: Array) -> dict[str, Array]:
        """Every output on matched pairs (touches every submodule, so `init` makes all parameters):
        dict(img, txt: ITC features; itm: ITM logits; mlm: MLM logits of `tokens`; temp; with
        `independent_heads` also img_ind, txt_ind)."""
        tok_i = self.image_tokens(images)
        tok_t = self.text_tokens(tokens)
        fused = self.fuse(tok_t, tokens != self.text_model.pad_id, tok_i)
        out = {"img": self.image_feature(tok_i), "txt": self.text_feature(tok_t),
               "itm": self.itm_logits(fused), "mlm": self.mlm_logits(fused), "temp": self.temp()}
        if self.independent_heads:
            out.update(img_ind=self.image_ind_feature(tok_i), txt_ind=self.text_ind_feature(tok_t))
        return out


class FusionClassifier(nn.Module):
    """A `Fusion` model with a classification head on its fused CLS feature, for fine-tuning.

    ALBEF's downstream heads (Li et al. 2021, arXiv 2107.07651, §5): visual entailment is an MLP on the
    fused [CLS]; question answering here is classification over the closed answer set (ALBEF generates
    answers with a 6-layer answer decoder, ranking the 3 128 candidate answers at test time; over a closed
    answer set, scoring every answer and taking the best is a classifier over that set); with `pair`, the
    text is fused with each of two images and the MLP reads both fused [CLS] features concatenated (the
    image-pair task of NLVR²). Only the parts of `fusion` that these use are called, so its ITC
    projections, ITM and MLM heads get no parameters here: fine-tuning does not train them.
    """

    fusion: Fusion
    n_classes: int
    hidden: int = 0  # 0 = the text model's width
    pair: bool = False

    @nn.compact
    def __call__(self, images: Array, tokens: Array, images2: Array | None = None) -> Array:
        """(B, n_classes) float32 logits of (images, tokens) (and, with `pair`, images2)."""
        f = self.fusion
        tok_t = f.text_tokens(tokens)
        valid = tokens != f.text_model.pad_id
        cls = f.fuse(tok_t, valid, f.image_tokens(images))[:, 0]
        if self.pair:
            if images2 is None:
                raise ValueError("images2 is missing: a pair classifier needs the second image of each row")
            cls = jnp.concatenate([cls, f.fuse(tok_t, valid, f.image_tokens(images2))[:, 0]], -1)
        h = nn.relu(nn.Dense(self.hidden or f.text_model.width, name="head_hidden")(cls.astype(jnp.float32)))
        return nn.Dense(self.n_classes, name="head_out")(h)


def clamp_temp(params: Any, model: Fusion) -> Any:
    """`params` (the Fusion's "params" collection) with its `temp` clamped to [min_temp, max_temp]: the
    in-place clamp ALBEF applies to its temperature before every step."""
    return {**params, "temp": jnp.clip(params["temp"], model.min_temp, model.max_temp)}


def build_fusion(
    image_tower: str = "vit",
    image_kwargs: Mapping[str, Any] | None = None,
    text_kwargs: Mapping[str, Any] | None = None,
    **fusion_kwargs: Any,
) -> Fusion:
    """Build a `Fusion` from the image tower's name and kwargs, the `FusionTextModel`'s kwargs (vocab_size,
    max_len, width, depth (text-only layers), fusion_layers, num_heads, ...) and `Fusion` fields."""
    return Fusion(
        image_tower=_make("image_tower", image_tower, FUSION_IMAGE_TOWERS, image_kwargs or {}),
        text_model=FusionTextModel(**(text_kwargs or {})),
        **fusion_kwargs,
    )
