"""Validated config of the two-tower (CLIP-style) trainer; experiment files return one from get_config()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mmjax.configs.common import _fail

IMAGE_TOWERS = ("vit", "resnet18", "resnet50")
TEXT_TOWERS = ("transformer", "text_cnn")
TRAIN_LOSSES = ("clip", "siglip", "simclr", "con")
TOKENIZERS = ("word", "bpe", "wordpiece")
DTYPES = ("float32", "bfloat16")
POOLS_IMAGE = ("cls", "mean")
POOLS_TEXT = ("eot", "mean")
IN_MEMORY = ("generated", "scenes")  # datasets made in memory; any other name is a tfds dataset
# Evaluators (mmjax.eval.evaluators) of the two-tower model's embeddings: retrieval R@k, modality-gap
# metrics, zero-shot accuracy per labelled task, linear and k-shot probes per labelled task.
CLIP_EVALS = ("retrieval", "gap", "zeroshot", "probe")


@dataclass(frozen=True)
class ClipConfig:
    """Data, model, loss, optimiser and loop settings of one two-tower training run."""

    # data: "generated" (coloured shapes made in memory), "scenes" (the procedural scenes of
    # mmjax.data.scenes rendered in memory, every attribute named: zero-shot and probes per attribute)
    # or a tfds dataset stored under data_dir
    dataset: str = "generated"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    num_train: int = 4096  # generated and scenes data only
    num_eval: int = 512  # generated and scenes: made in memory; tfds: the first num_eval rows of eval_split
    image_size: int = 32
    max_len: int = 16
    tokenizer: str = "word"
    vocab_size: int = 1000  # subword (bpe, wordpiece) tokenizers only
    augment: bool = False  # two augmented views per example (always on for loss="con")
    # model
    image_tower: str = "vit"
    text_tower: str = "transformer"
    patch: int = 8
    width: int = 64
    depth: int = 2
    heads: int = 4
    image_pool: str = "cls"
    text_pool: str = "eot"
    causal: bool = True
    embed_dim: int = 64
    dtype: str = "float32"
    # loss and optimiser
    loss: str = "clip"
    batch: int = 64  # global batch, split over all devices
    steps: int = 300
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    accum_steps: int = 1
    seed: int = 0
    # latent-modality-structure regularizers (Jiang et al., arXiv 2303.05952), each added to the loss
    # with its weight (0 = off); any of them turns on a second augmented view of every example
    sep_weight: float = 0.0  # L_Sep: independent heads, orthogonality + in-modal InfoNCE + uniformity
    sep_tau: float = 0.1  # temperature of L_Sep's in-modal InfoNCE on the independent features
    br_weight: float = 0.0  # L_Br: augmented image feature pulled to the image-text bridge point
    br_t: float = 0.25  # bridge position (weight of the image feature) unless br_sample_t
    br_sample_t: bool = False  # draw t ~ U(0, 1) per example
    br_stop_gradient: bool = False  # no gradient through the bridge point
    gc_weight: float = 0.0  # L_GC + L^a_GC (inner weights 0.25 each, as CyCLIP)
    # loop
    log_every: int = 10
    eval_every: int = 100
    ckpt_every: int = 100
    keep: int = 3
    probe_shots: int = 5
    final_eval: bool = True  # evaluate after the last step even if it is not on eval_every
    evals: tuple[str, ...] = CLIP_EVALS  # the evaluators run at each evaluation, in this order

    kind: ClassVar[str] = "clip"  # recorded in config.json, so `mmjax eval` rebuilds this config type
    allowed_evals: ClassVar[tuple[str, ...]] = CLIP_EVALS

    def __post_init__(self) -> None:
        evals = self.evals
        if isinstance(evals, str) or not all(isinstance(e, str) for e in evals):
            _fail("evals", evals, f"must be a tuple of names from {', '.join(self.allowed_evals)}")
        object.__setattr__(self, "evals", tuple(evals))  # config.json stores a list
        unknown = [e for e in self.evals if e not in self.allowed_evals]
        if unknown or len(set(self.evals)) != len(self.evals):
            _fail("evals", ",".join(self.evals),
                  f"must be distinct names from {', '.join(self.allowed_evals)} (for {self.kind})")
        for name in ("num_train", "num_eval", "image_size", "max_len", "vocab_size", "patch", "width",
                     "depth", "heads", "embed_dim", "batch", "steps", "accum_steps", "log_every",
                     "eval_every", "ckpt_every", "keep", "probe_shots"):
            if int(getattr(self, name)) < 1:
                _fail(name, getattr(self, name), "must be a positive integer")
        for name, allowed in (("image_tower", IMAGE_TOWERS), ("text_tower", TEXT_TOWERS),
                              ("loss", TRAIN_LOSSES), ("tokenizer", TOKENIZERS), ("dtype", DTYPES),
                              ("image_pool", POOLS_IMAGE), ("text_pool", POOLS_TEXT)):
            if getattr(self, name) not in allowed:
                _fail(name, getattr(self, name), f"allowed: {', '.join(allowed)}")
        for name in ("lr", "clip_norm"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        for name in ("weight_decay", "sep_weight", "br_weight", "gc_weight"):
            if not getattr(self, name) >= 0:
                _fail(name, getattr(self, name), "must be >= 0")
        if not self.sep_tau > 0:
            _fail("sep_tau", self.sep_tau, "must be > 0")
        if not 0 < self.br_t < 1:
            _fail("br_t", self.br_t, "must be in (0, 1)")
        if not 0 <= self.warmup_steps < self.steps:
            _fail("warmup_steps", self.warmup_steps, f"must be in 0..steps-1={self.steps - 1}")
        if self.batch % self.accum_steps:
            _fail("batch", self.batch, f"must be divisible by accum_steps={self.accum_steps}")
        if self.batch // self.accum_steps < 2:
            _fail("batch", self.batch, "each accumulation micro-batch needs at least 2 pairs")
        if self.image_tower == "vit" and self.image_size % self.patch:
            _fail("patch", self.patch, f"must divide image_size={self.image_size}")
        if (self.image_tower == "vit" or self.text_tower == "transformer") and self.width % self.heads:
            _fail("heads", self.heads, f"must divide width={self.width}")
        if self.max_len < 2:
            _fail("max_len", self.max_len, "must be at least 2 (start and end-of-text tokens)")
        if self.dataset in IN_MEMORY and self.num_train < self.batch:
            _fail("num_train", self.num_train, f"must be at least batch={self.batch}")

    @property
    def needs_mask_token(self) -> bool:
        """Whether the tokenizer needs a [MASK] id (masked language modelling): not for the two towers."""
        return False

    @property
    def regularizers(self) -> tuple[str, ...]:
        """The structure regularizers switched on: a subset of ("sep", "br", "gc") in that order."""
        return tuple(r for r in ("sep", "br", "gc") if getattr(self, f"{r}_weight") > 0)

    @property
    def two_views(self) -> bool:
        """Whether each step sees a second augmented view of every example."""
        return self.loss == "con" or self.augment or bool(self.regularizers)

    @property
    def embeds_second_view(self) -> bool:
        """Whether the loss needs the embeddings of the second view (not only augmented inputs)."""
        return self.loss == "con" or bool(self.regularizers)

    def image_kwargs(self) -> dict:
        """Keyword arguments of the image tower."""
        if self.image_tower == "vit":
            return dict(patch_size=self.patch, width=self.width, depth=self.depth, num_heads=self.heads,
                        pool=self.image_pool)
        return dict(width=self.width, small_input=self.image_size <= 64)

    def text_kwargs(self, vocab_size: int) -> dict:
        """Keyword arguments of the text tower for a tokenizer with `vocab_size` ids."""
        if self.text_tower == "transformer":
            return dict(vocab_size=vocab_size, max_len=self.max_len, width=self.width, depth=self.depth,
                        num_heads=self.heads, causal=self.causal, pool=self.text_pool)
        return dict(vocab_size=vocab_size, num_outputs=self.width)
