"""CLIP-style two-tower model: image and text towers, linear projections, learnable temperature and bias."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.resnet import resnet18, resnet50
from mmjax.models.text import TextCNN, TextTransformer
from mmjax.models.vit import ViT, check_choice

Array = jax.Array

IMAGE_TOWERS: dict[str, Callable[..., nn.Module]] = {"vit": ViT, "resnet18": resnet18, "resnet50": resnet50}
TEXT_TOWERS: dict[str, Callable[..., nn.Module]] = {"transformer": TextTransformer, "text_cnn": TextCNN}
TOWERS: dict[str, Callable[..., nn.Module]] = {**IMAGE_TOWERS, **TEXT_TOWERS}


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """Scale each row of `x` to unit L2 norm (rows of norm < eps are divided by eps instead)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


class TwoTower(nn.Module):
    """Image tower + text tower, each followed by a bias-free linear head to `embed_dim`, L2-normalised.

    With `independent_heads` each tower gets a second linear head, giving the "independent" feature of
    deep feature separation (Jiang et al., arXiv 2303.05952) beside the shared one (`img_ind`,
    `txt_ind` in the output).
    `logit_scale` is a log-scale temperature parameter (init log(1/0.07)), clamped to `max_logit_scale`
    (log 100) where used; `logit_bias` (init -10) is the SigLIP bias. Projections and normalisation run
    in float32 whatever the towers' compute dtype, so losses see float32 embeddings.
    """

    image_tower: nn.Module
    text_tower: nn.Module
    embed_dim: int = 512
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100.0)
    init_logit_bias: float = -10.0
    independent_heads: bool = False

    def setup(self) -> None:
        self.image_proj = nn.Dense(self.embed_dim, use_bias=False)
        self.text_proj = nn.Dense(self.embed_dim, use_bias=False)
        if self.independent_heads:
            self.image_ind_proj = nn.Dense(self.embed_dim, use_bias=False)
            self.text_ind_proj = nn.Dense(self.embed_dim, use_bias=False)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.init_logit_scale), ())
        self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.init_logit_bias), ())

    def encode_image(self, images: Array) -> Array:
        """Map (B, H, W, C) images to (B, embed_dim) unit-norm float32 embeddings."""
        return l2_normalize(self.image_proj(self.image_tower(images).astype(jnp.float32)))

    def encode_text(self, tokens: Array) -> Array:
        """Map (B, L) int tokens to (B, embed_dim) unit-norm float32 embeddings."""
        return l2_normalize(self.text_proj(self.text_tower(tokens).astype(jnp.float32)))

    def temperature(self) -> tuple[Array, Array]:
        """The clamped scale exp(min(logit_scale, max_logit_scale)) and the bias, both scalars."""
        return jnp.exp(jnp.minimum(self.logit_scale, self.max_logit_scale)), self.logit_bias

    def __call__(self, images: Array, tokens: Array) -> dict[str, Array]:
        """Embed a batch of pairs: dict(img, txt, logit_scale (clamped exp-scale), logit_bias), plus
        img_ind and txt_ind (unit-norm independent features) with `independent_heads`."""
        scale, bias = self.temperature()
        img_h = self.image_tower(images).astype(jnp.float32)
        txt_h = self.text_tower(tokens).astype(jnp.float32)
        out = {
            "img": l2_normalize(self.image_proj(img_h)),
            "txt": l2_normalize(self.text_proj(txt_h)),
            "logit_scale": scale,
            "logit_bias": bias,
        }
        if self.independent_heads:
            out["img_ind"] = l2_normalize(self.image_ind_proj(img_h))
            out["txt_ind"] = l2_normalize(self.text_ind_proj(txt_h))
        return out


def _make(
    field: str, name: str, registry: Mapping[str, Callable[..., nn.Module]], kwargs: Mapping[str, Any]
) -> nn.Module:
    """Look `name` up in `registry`, failing with a message that names `field`, then build it."""
    check_choice(field, name, tuple(registry))
    return registry[name](**kwargs)


def make_tower(name: str, **kwargs: Any) -> nn.Module:
    """Build a tower by name ("vit", "resnet18", "resnet50", "transformer", "text_cnn") from its kwargs."""
    return _make("name", name, TOWERS, kwargs)


def build_two_tower(
    image_tower: str = "vit",
    text_tower: str = "transformer",
    image_kwargs: Mapping[str, Any] | None = None,
    text_kwargs: Mapping[str, Any] | None = None,
    **two_tower_kwargs: Any,
) -> TwoTower:
    """Build a `TwoTower` from tower names, each tower's kwargs and `TwoTower` fields (embed_dim, ...)."""
    return TwoTower(
        image_tower=_make("image_tower", image_tower, IMAGE_TOWERS, image_kwargs or {}),
        text_tower=_make("text_tower", text_tower, TEXT_TOWERS, text_kwargs or {}),
        **two_tower_kwargs,
    )
