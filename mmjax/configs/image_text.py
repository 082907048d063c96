"""Validated config of one image–text run on rendered scenes, split into static and traced.

The run follows the image–text experiments of Cai et al. (arXiv 2504.10143) on procedural scenes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.configs.common import _fail
from mmjax.data.scenes import CONTINUOUS, DISCRETE, SceneConfig, caption_max_len, scene_vocab

SCHEDULES = ("constant", "cosine")
NEGATIVES = ("all", "cross")  # in-modal and cross-modal negatives, or cross-modal only
MAX_ENCODING = 16  # static output width; the traced mask selects the encoding size


LABELLED = (*DISCRETE, "template")  # discrete targets (MCC); CONTINUOUS targets get R²
TARGETS = (*LABELLED, *CONTINUOUS)


@dataclass(frozen=True)
class ImageTextStatic:
    """Shapes and program structure of an image–text run (one compile per distinct value).

    No defaults: `ImageTextConfig.to_static()` fills every field, and
    `mmjax.train.image_text.make_image_text_run(static)` builds the run it describes.
    """

    scene: SceneConfig
    channels: tuple[int, ...]
    hidden: int
    enc_dim: int
    vocab_size: int
    max_len: int
    batch: int
    steps: int
    schedule: str
    log_every: int
    eval_fit: int
    eval_test: int
    probe_steps: int
    probe_epochs: int

    def draw_world(self, key: jax.Array) -> jax.Array:
        """Scenes have no per-seed structure to draw (rendering is fixed); a placeholder leaf."""
        return jnp.zeros(())


class ImageTextParams(NamedTuple):
    """Per-run traced values."""

    selected: jax.Array  # (5,) 0/1 over DISCRETE
    perturbed: jax.Array  # (5,) 0/1 over DISCRETE
    p_change: jax.Array
    enc_mask: jax.Array  # (enc_dim,) 0/1: the encoding size
    lr: jax.Array
    tau: jax.Array
    clip_norm: jax.Array
    in_modal: jax.Array  # 1: in-modal negatives too (SimCLR-style); 0: cross-modal only (CLIP's InfoNCE)


def check_caption_bias(cfg) -> None:
    """ConfigError unless `cfg.selected`/`cfg.perturbed` are distinct attribute names, at least one
    selected, the perturbed a proper subset of them, and `cfg.p_change` a probability."""
    for name in ("selected", "perturbed"):
        value = getattr(cfg, name)
        if isinstance(value, str) or any(a not in DISCRETE for a in value) or len(set(value)) != len(value):
            _fail(name, value, f"distinct attribute names from {', '.join(DISCRETE)}")
    if not cfg.selected:
        _fail("selected", cfg.selected, "must name at least one attribute")
    if not set(cfg.perturbed) < set(cfg.selected):
        _fail("perturbed", cfg.perturbed, f"must be a proper subset of selected={cfg.selected}")
    if not 0.0 <= cfg.p_change <= 1.0:
        _fail("p_change", cfg.p_change, "must be a probability in [0, 1]")


@dataclass(frozen=True)
class ImageTextConfig:
    """Scene, bias, encoders, training and probes of one run; shapes static, the rest traced."""

    # scenes and bias
    image_size: int = 32
    shapes: tuple[str, ...] = ("square", "triangle", "cross", "ring")
    causal: bool = False
    selected: tuple[str, ...] = DISCRETE  # attributes named in the caption
    perturbed: tuple[str, ...] = ()  # attributes whose word is redrawn with probability p_change
    p_change: float = 0.9
    # encoders and training
    encoding_size: int | None = None  # None: the unbiased attributes, at least 2 (S^0 = {±1} holds 2 values)
    channels: tuple[int, ...] = (16, 32, 32)
    hidden: int = 100
    batch: int = 128
    steps: int = 3000
    lr: float = 3e-3
    schedule: str = "cosine"
    clip_norm: float = 2.0
    tau: float = 0.02
    negatives: str = "all"
    log_every: int = 100
    # probes
    eval_fit: int = 2048
    eval_test: int = 2048
    probe_steps: int = 300
    probe_epochs: int = 50

    def __post_init__(self) -> None:
        for name in ("image_size", "hidden", "batch", "steps", "log_every", "eval_fit", "eval_test",
                     "probe_steps", "probe_epochs"):
            if int(getattr(self, name)) < 1:
                _fail(name, getattr(self, name), "must be a positive integer")
        if self.image_size < 16:
            _fail("image_size", self.image_size, "must be at least 16")
        if self.log_every > self.steps:
            _fail("log_every", self.log_every, f"must be at most steps={self.steps}")
        check_caption_bias(self)
        if self.encoding_size is not None and not 1 <= self.encoding_size <= MAX_ENCODING:
            _fail("encoding_size", self.encoding_size, f"must be in 1..{MAX_ENCODING} or None")
        try:
            self.scene()
        except ValueError as err:
            _fail("scene", "", str(err))
        if not self.channels or min(self.channels) < 1:
            _fail("channels", self.channels, "comma-separated positive integers")
        if self.negatives not in NEGATIVES:
            _fail("negatives", self.negatives, f"allowed: {', '.join(NEGATIVES)}")
        if self.schedule not in SCHEDULES:
            _fail("schedule", self.schedule, f"allowed: {', '.join(SCHEDULES)}")
        for name in ("lr", "tau", "clip_norm"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")

    def scene(self) -> SceneConfig:
        """The renderer's config."""
        return SceneConfig(image_size=self.image_size, shapes=tuple(self.shapes), causal=self.causal)

    def role(self, factor: str) -> str:
        """unbiased, omitted or perturbed for attributes; specific for image- or text-only factors."""
        if factor not in DISCRETE:
            return "specific"
        if factor not in self.selected:
            return "omitted"
        return "perturbed" if factor in self.perturbed else "unbiased"

    @property
    def n_unbiased(self) -> int:
        """Attributes stated truthfully in every caption."""
        return len(self.selected) - len(self.perturbed)

    @property
    def encoding_default(self) -> int:
        """The paper's encoding size, the number of unbiased attributes, but at least 2: one unit-norm
        dimension ({±1}) cannot hold the four colours when only colour is unbiased."""
        return max(self.n_unbiased, 2)

    def to_static(self) -> ImageTextStatic:
        """The shape-fixing half (all bias settings share it)."""
        scene = self.scene()
        return ImageTextStatic(
            scene=scene, channels=tuple(self.channels), hidden=self.hidden, enc_dim=MAX_ENCODING,
            vocab_size=len(scene_vocab(scene)), max_len=caption_max_len(scene), batch=self.batch,
            steps=self.steps, schedule=self.schedule, log_every=self.log_every, eval_fit=self.eval_fit,
            eval_test=self.eval_test, probe_steps=self.probe_steps, probe_epochs=self.probe_epochs)

    def to_params(self) -> ImageTextParams:
        """The traced half."""
        f = lambda v: np.asarray(v, np.float32)
        size = self.encoding_size or self.encoding_default
        return ImageTextParams(
            selected=f([a in self.selected for a in DISCRETE]),
            perturbed=f([a in self.perturbed for a in DISCRETE]),
            p_change=f(self.p_change), enc_mask=f(np.arange(MAX_ENCODING) < size), lr=f(self.lr),
            tau=f(self.tau), clip_norm=f(self.clip_norm), in_modal=f(self.negatives == "all"))

    def with_overrides(self, overrides: dict[str, str]) -> ImageTextConfig:
        """This config with `--set`-style strings applied (validated)."""
        from mmjax.configs.common import apply_overrides

        return apply_overrides(self, overrides)

    def to_dict(self) -> dict:
        """Plain dict of the fields (for sweep.json)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def result_rows(self, res) -> list[dict]:
        """results.csv rows of one run: MCC for discrete factors, R² for continuous ones."""
        rows = []
        for e, enc in enumerate(("x", "t")):
            for t, name in enumerate(TARGETS):
                lin, nl = float(res.r2_linear[e, t]), float(res.r2_nonlinear[e, t])
                discrete = name in LABELLED
                rows.append({"encoder": enc, "factor": name, "role": self.role(name),
                             "r2_linear": "" if discrete else lin, "r2_nonlinear": "" if discrete else nl,
                             "mcc_linear": lin if discrete else "", "mcc_nonlinear": nl if discrete else ""})
        return rows



# The cpu scale deviates from the paper (README, "Image–text study"): a small CNN instead of ResNet-18,
# 3000 steps of batch 128 instead of 200k of 256, lr 3e-3 with cosine decay instead of 1e-5, τ = 0.02
# instead of 1 (at τ = 1 the cosine logits span only [-1, 1] and the shape stayed at MCC 0.01 after 2000
# steps; τ ≥ 0.1 leaves the shape under 0.8 with the paper's encoding size), 32-px images, and four
# shapes chosen to stay distinguishable at that size. The encoding size is the paper's (the number of
# unbiased attributes), floored at 2; one spare dimension (the earlier n + 1) let the image encoder
# keep size or height in it (MCC up to 0.72).
SCALE_FIELDS: dict[str, dict] = {
    "smoke": dict(image_size=16, channels=(8, 8), hidden=16, batch=32, steps=60, log_every=20,
                  eval_fit=256, eval_test=256, probe_steps=50, probe_epochs=5),
    "cpu": dict(),
    "paper": dict(image_size=64, batch=256, steps=200_000, lr=1e-5, schedule="constant", tau=1.0,
                  channels=(64, 128, 256, 512), hidden=100),
}
# With one attribute unbiased the floored 2-d encoding (a circle) has room to spare: at τ = 0.02 each
# colour's arc spreads by the perturbed words' leftover information (a word is right with probability
# 0.1 + 0.9/k); at the last perturbation setting size, height or background reach seed-mean MCC
# 0.23-0.45 (GPU, seeds 0-2 and 3-7). So the cpu scale trains the two such settings (θ=co and
# ρ=sh+si+he+ba) at τ = 0.3 with cross-modal negatives only: perturbed and omitted ≤ 0.02 as seed means,
# colour 1.00 (8 seeds). That τ cannot be global: where five attributes are unbiased it leaves the shape
# at 0.55-0.61. `--set tau=... --set negatives=...` overrides it (README, "Image-text study").
CPU_ONE_UNBIASED = dict(tau=0.3, negatives="cross")
SELECTION = (("colour",), ("colour", "shape"), ("colour", "shape", "size"),
             ("colour", "shape", "size", "height"), DISCRETE)
PERTURBATION = ((), ("background",), ("height", "background"), ("size", "height", "background"),
                ("shape", "size", "height", "background"))


def image_text_cases(kind: str) -> list[tuple[str, dict]]:
    """(label, fields) of the paper's five selection or five perturbation settings."""
    if kind == "selection":
        return [(f"θ={'+'.join(a[:2] for a in sel)}", dict(selected=sel, perturbed=())) for sel in SELECTION]
    return [(f"ρ={'+'.join(a[:2] for a in per) or '∅'}", dict(selected=DISCRETE, perturbed=per))
            for per in PERTURBATION]


def image_text_experiment(name: str, kind: str, scale: str, overrides: dict[str, str]):
    """The five `kind` ("selection" or "perturbation") settings at a scale, with --set overrides."""
    from mmjax.configs.common import apply_overrides
    from mmjax.configs.experiment import Experiment, Setting

    base = ImageTextConfig(**SCALE_FIELDS[scale])
    settings = []
    for label, case in image_text_cases(kind):
        config = replace(base, **case)
        if scale == "cpu" and config.n_unbiased == 1:
            config = replace(config, **CPU_ONE_UNBIASED)
        settings.append(Setting(label, apply_overrides(config, overrides)))
    return Experiment(name, tuple(settings), metric_label="MCC (R² for pos/rotation)",
                      description=f"image-text {kind} bias on rendered scenes (Cai et al., arXiv 2504.10143)")
