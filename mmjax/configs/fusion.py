"""Validated config of the ALBEF-style fusion model (Li et al. 2021, "Align before Fuse", arXiv 2107.07651).

`FusionConfig` is a `ClipConfig` (data, optimiser, loop and regularizer fields, and their validation,
are shared) with the fusion model's and its pre-training's own fields. `width`, `heads` and `embed_dim`
serve both the ViT and the text model; `depth` is the ViT's; the text model has `text_depth` layers in
all, the last `fusion_layers` of them fusion layers. The default is the tiny CPU variant;
`fusion_config("paper")` has ALBEF's sizes (§4: ViT-B/16 at 256 px, BERT-base split 6 + 6, ITC
dimension 256, queue 65 536, momentum 0.995, α = 0.4, 15 % masking, batch 512; shapes only here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mmjax.configs.clip import CLIP_EVALS, ClipConfig
from mmjax.configs.common import ConfigError, _fail
from mmjax.losses.fusion import check_queue_size

FUSION_IMAGE_TOWERS = ("vit",)  # the fusion layers cross-attend to the image tokens
FUSION_TEXT_TOWERS = ("transformer",)
FUSION_VARIANTS = ("tiny", "paper")
# The two-tower evaluators on the unimodal ITC features, then held-out ITM accuracy with hard negatives
# and MLM accuracy on masked attribute words (mmjax.eval.evaluators).
FUSION_EVALS = (*CLIP_EVALS, "itm", "mlm")

PAPER_FIELDS = dict(
    image_size=256, patch=16, width=768, depth=12, heads=12,  # ViT-B/16, pre-training resolution
    text_depth=12, fusion_layers=6,  # BERT-base: layers 1-6 text alone, 7-12 fusion
    tokenizer="wordpiece", vocab_size=30522, max_len=30,  # bert-base-uncased, ALBEF's max_words
    embed_dim=256, queue_size=65536, momentum=0.995, alpha=0.4, mask_prob=0.15,
    batch=512, lr=1e-4, weight_decay=0.02,  # AdamW over 8 GPUs x 64
)


@dataclass(frozen=True)
class FusionConfig(ClipConfig):
    """One fusion pre-training run: ClipConfig's fields plus the text model's split and ITC/ITM/MLM settings.

    Of ClipConfig's model fields, `image_tower` must be "vit" with `image_pool` "cls", `text_tower`
    "transformer" and `causal` False (BERT is bidirectional), and `loss` "clip" (ITC is InfoNCE,
    here with a queue and distillation).
    """

    causal: bool = False
    text_depth: int = 2  # text model layers in all: text_depth - fusion_layers text-only, then fusion
    fusion_layers: int = 1
    queue_size: int = 256  # ITC queue of momentum features; a multiple of batch
    momentum: float = 0.995  # EMA momentum of the momentum model
    alpha: float = 0.4  # momentum-distillation weight of ITC and MLM
    mask_prob: float = 0.15  # MLM: chance that a non-special token is chosen
    evals: tuple[str, ...] = FUSION_EVALS

    kind: ClassVar[str] = "fusion"
    allowed_evals: ClassVar[tuple[str, ...]] = FUSION_EVALS

    def __post_init__(self) -> None:
        # the tower choices first, so an unknown tower names what the fusion model allows
        for name, allowed in (("image_tower", FUSION_IMAGE_TOWERS), ("text_tower", FUSION_TEXT_TOWERS),
                              ("image_pool", ("cls",)), ("loss", ("clip",))):
            if getattr(self, name) not in allowed:
                _fail(name, getattr(self, name), f"allowed for the fusion model: {', '.join(allowed)}")
        if self.causal:
            _fail("causal", self.causal, "the fusion text model is bidirectional (BERT): must be False")
        super().__post_init__()
        for name in ("text_depth", "fusion_layers", "queue_size"):
            if int(getattr(self, name)) < 1:
                _fail(name, getattr(self, name), "must be a positive integer")
        if self.fusion_layers >= self.text_depth:
            _fail("fusion_layers", self.fusion_layers,
                  f"must be in 1..text_depth-1={self.text_depth - 1} (at least one text-only layer)")
        try:
            check_queue_size(self.queue_size, self.batch)
        except ValueError:
            _fail("queue_size", self.queue_size, f"must be a positive multiple of batch={self.batch}")
        if not 0 <= self.momentum < 1:
            _fail("momentum", self.momentum, "must be in [0, 1)")
        if not 0 <= self.alpha <= 1:
            _fail("alpha", self.alpha, "must be in [0, 1]")
        if not 0 < self.mask_prob < 1:
            _fail("mask_prob", self.mask_prob, "must be in (0, 1)")
        if self.br_weight > 0 and self.br_stop_gradient:
            _fail("br_stop_gradient", self.br_stop_gradient,
                  "must be False with br_weight > 0 on the fusion model: its augmented view is the momentum "
                  "feature (no gradient), so L_Br trains only through the bridge point")

    @property
    def needs_mask_token(self) -> bool:
        """True: MLM masks tokens with the tokenizer's [MASK] id."""
        return True

    @property
    def two_views(self) -> bool:
        """Augmented inputs only with `augment`: the regularizers' augmented view is the momentum model's
        features of the same inputs (Jiang et al., arXiv 2303.05952, on ALBEF)."""
        return self.augment

    @property
    def embeds_second_view(self) -> bool:
        """False: no second view is embedded (see `two_views`)."""
        return False

    def text_kwargs(self, vocab_size: int) -> dict:
        """Kwargs of `mmjax.models.fusion.FusionTextModel` for a tokenizer of `vocab_size` ids."""
        return dict(vocab_size=vocab_size, max_len=self.max_len, width=self.width,
                    depth=self.text_depth - self.fusion_layers, fusion_layers=self.fusion_layers,
                    num_heads=self.heads)


def fusion_config(variant: str = "tiny", **fields) -> FusionConfig:
    """The `variant` ("tiny": FusionConfig's defaults; "paper": ALBEF's sizes) with `fields` replaced."""
    if variant not in FUSION_VARIANTS:
        raise ConfigError(f"variant={variant!r} is invalid: allowed: {', '.join(FUSION_VARIANTS)}")
    return FusionConfig(**{**(PAPER_FIELDS if variant == "paper" else {}), **fields})
