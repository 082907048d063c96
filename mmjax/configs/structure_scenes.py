"""Validated config of one run of the latent-modality-structures study on rendered scenes.

The testbed of docs/structures.md: CLIP-style L_Con (Jiang et al., arXiv 2303.05952, Sec. 3) plus the
weighted regularizers L_Sep, L_Br and L_GC (their Sec. 4), trained on scenes whose captions carry the
selection and perturbation biases of Cai et al. (arXiv 2504.10143, Sec. 5). Each modality holds
information the other lacks: the image shows position, rotation and every unselected attribute; the
caption's template is text-only; a perturbed attribute's word is often wrong. Split like
`ImageTextConfig`: shapes static, everything a setting or method changes traced, so every method,
weight and bias setting of a study shares one compile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.configs.common import _fail
from mmjax.configs.image_text import check_caption_bias
from mmjax.data.scenes import DISCRETE, SceneConfig, caption_max_len, scene_vocab

REGULARIZERS = ("sep", "br", "gc")
SCHEDULES = ("constant", "cosine")
SPLITS = ("val", "test")  # evaluation scenes: the val stream tunes weights, the test stream reports
# Features probed. img/txt: the shared (contrastive) features; *_ind: L_Sep's independent features
# (untrained unless sep_weight > 0); *_both: the two unit vectors concatenated.
FEATURES = ("img", "img_ind", "img_both", "txt", "txt_ind", "txt_both")
LABELLED = (*DISCRETE, "template")  # classification targets: accuracy and MCC
IMAGE_ONLY = ("pos_x", "pos_y", "rotation")  # regression targets, never in a caption: R²
TARGETS = (*LABELLED, *IMAGE_ONLY)
RETRIEVAL = tuple(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10))
GAP = ("centroid_distance", "mean_paired_distance", "alignment", "uniformity_img", "uniformity_txt",
       "cone_img", "cone_txt")
TERMS = ("con", "sep", "br", "gc")  # unweighted loss terms, mean of the last logging window


@dataclass(frozen=True)
class StructureStatic:
    """Shapes and program structure of a run (one compile per distinct value); see StructureConfig."""

    scene: SceneConfig
    channels: tuple[int, ...]
    hidden: int
    embed_dim: int
    text_embed: int
    text_channels: tuple[int, ...]
    vocab_size: int
    max_len: int
    batch: int
    steps: int
    schedule: str
    log_every: int
    eval_fit: int
    eval_test: int
    k_shot: int
    probe_steps: int
    brightness: float
    contrast: float
    noise: float
    word_dropout: float
    swap_prob: float

    def draw_world(self, key: jax.Array) -> jax.Array:
        """Scenes have no per-seed structure to draw (rendering is fixed); a placeholder leaf."""
        return jnp.zeros(())


class StructureParams(NamedTuple):
    """Per-run traced values."""

    selected: jax.Array  # (5,) 0/1 over DISCRETE
    perturbed: jax.Array  # (5,) 0/1 over DISCRETE
    p_change: jax.Array
    lr: jax.Array
    tau: jax.Array
    clip_norm: jax.Array
    weights: jax.Array  # (3,) over REGULARIZERS
    br_t: jax.Array
    sep_tau: jax.Array
    split: jax.Array  # int32 index into SPLITS


class StructureResult(NamedTuple):
    """What one run returns (arrays, so vmapped runs stack). Probe arrays are (FEATURES, ...)."""

    loss_curve: jax.Array  # (steps // log_every,) total loss per logging window
    r2_linear: jax.Array  # (6, TARGETS): logistic-probe accuracy (LABELLED), least-squares R² (IMAGE_ONLY)
    r2_nonlinear: jax.Array  # (6, TARGETS): logistic-probe MCC (LABELLED), the same R² (IMAGE_ONLY)
    kshot: jax.Array  # (6, LABELLED): accuracy of logistic regression on k examples per class
    zeroshot: jax.Array  # (DISCRETE,): zero-shot top-1 with the caption templates as prompts
    retrieval: jax.Array  # (RETRIEVAL,)
    gap: jax.Array  # (GAP,) on the unit shared features
    terms: jax.Array  # (TERMS,)


@dataclass(frozen=True)
class StructureConfig:
    """Scenes, bias, encoders, objective weights, training and evaluation of one run."""

    # scenes and caption bias (Cai et al.'s selection and perturbation)
    image_size: int = 32
    shapes: tuple[str, ...] = ("square", "triangle", "cross", "ring")
    selected: tuple[str, ...] = DISCRETE
    perturbed: tuple[str, ...] = ()
    p_change: float = 0.9
    # Rotations drawn from [0, π/4): below every shape's symmetry angle (90° square and cross, 120°
    # triangle), so the rotation is identifiable from the image (except the ring's: R² ≤ 0.75).
    max_rotation: float = math.pi / 4
    # encoders: a small CNN and the text CNN, each with a shared and an independent head of embed_dim
    channels: tuple[int, ...] = (8, 32, 64)
    hidden: int = 128
    embed_dim: int = 32
    text_embed: int = 32  # the text CNN's token embedding and conv widths
    text_channels: tuple[int, ...] = (32, 64)
    # objective: L_Con at temperature tau + Σ weight · regularizer
    tau: float = 0.05
    sep_weight: float = 0.0
    br_weight: float = 0.0
    gc_weight: float = 0.0
    br_t: float = 0.25
    sep_tau: float = 0.1
    # the augmented views (factor-preserving: no crops or flips, which would move size, height, position)
    brightness: float = 0.2
    contrast: float = 0.2
    noise: float = 0.03
    word_dropout: float = 0.1
    swap_prob: float = 0.1
    # training
    batch: int = 128
    steps: int = 1000
    lr: float = 3e-3
    schedule: str = "cosine"
    clip_norm: float = 2.0
    log_every: int = 100
    # evaluation on fresh scenes of `split`
    split: str = "test"
    eval_fit: int = 1024
    eval_test: int = 2048
    k_shot: int = 5
    probe_steps: int = 100

    def __post_init__(self) -> None:
        for name in ("image_size", "hidden", "embed_dim", "text_embed", "batch", "steps", "log_every",
                     "eval_fit", "eval_test", "k_shot", "probe_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(name, value, "must be a positive integer")
        if self.log_every > self.steps:
            _fail("log_every", self.log_every, f"must be at most steps={self.steps}")
        check_caption_bias(self)
        try:
            self.scene()
        except ValueError as err:
            _fail("scene", "", str(err))
        for name in ("channels", "text_channels"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                _fail(name, getattr(self, name), "comma-separated positive integers")
        if self.schedule not in SCHEDULES:
            _fail("schedule", self.schedule, f"allowed: {', '.join(SCHEDULES)}")
        if self.split not in SPLITS:
            _fail("split", self.split, f"allowed: {', '.join(SPLITS)}")
        if not 0.01 <= self.tau:
            _fail("tau", self.tau, "must be >= 0.01 (L_Con clamps its logit scale at 100)")
        for name in ("lr", "clip_norm", "sep_tau"):
            if not getattr(self, name) > 0:
                _fail(name, getattr(self, name), "must be > 0")
        for name in ("sep_weight", "br_weight", "gc_weight", "brightness", "contrast", "noise"):
            if not getattr(self, name) >= 0:
                _fail(name, getattr(self, name), "must be >= 0")
        for name in ("br_t", "word_dropout", "swap_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail(name, getattr(self, name), "must be in [0, 1]")
        if self.k_shot * 4 > self.eval_fit:
            _fail("k_shot", self.k_shot, f"needs k_shot x 4 classes <= eval_fit={self.eval_fit}")

    def scene(self) -> SceneConfig:
        """The renderer's config."""
        return SceneConfig(image_size=self.image_size, shapes=tuple(self.shapes),
                           max_rotation=float(self.max_rotation))

    @property
    def method(self) -> str:
        """"clip" (L_Con alone) or the regularizers switched on, joined with "+" (e.g. "sep+gc")."""
        used = [r for r in REGULARIZERS if getattr(self, f"{r}_weight") > 0]
        return "+".join(used) or "clip"

    def role(self, factor: str) -> str:
        """unbiased, omitted (image-only by selection) or perturbed for attributes; image-only for
        position and rotation; text-only for the template."""
        if factor in IMAGE_ONLY:
            return "image-only"
        if factor == "template":
            return "text-only"
        if factor not in self.selected:
            return "omitted"
        return "perturbed" if factor in self.perturbed else "unbiased"

    def to_static(self) -> StructureStatic:
        """The shape-fixing half (every method, weight and bias setting shares it)."""
        scene = self.scene()
        return StructureStatic(
            scene=scene, channels=tuple(self.channels), hidden=self.hidden, embed_dim=self.embed_dim,
            text_embed=self.text_embed, text_channels=tuple(self.text_channels),
            vocab_size=len(scene_vocab(scene)), max_len=caption_max_len(scene), batch=self.batch,
            steps=self.steps, schedule=self.schedule, log_every=self.log_every, eval_fit=self.eval_fit,
            eval_test=self.eval_test, k_shot=self.k_shot, probe_steps=self.probe_steps,
            brightness=float(self.brightness), contrast=float(self.contrast), noise=float(self.noise),
            word_dropout=float(self.word_dropout), swap_prob=float(self.swap_prob))

    def to_params(self) -> StructureParams:
        """The traced half."""
        f = lambda v: np.asarray(v, np.float32)
        return StructureParams(
            selected=f([a in self.selected for a in DISCRETE]),
            perturbed=f([a in self.perturbed for a in DISCRETE]), p_change=f(self.p_change), lr=f(self.lr),
            tau=f(self.tau), clip_norm=f(self.clip_norm),
            weights=f([getattr(self, f"{r}_weight") for r in REGULARIZERS]), br_t=f(self.br_t),
            sep_tau=f(self.sep_tau), split=np.asarray(SPLITS.index(self.split), np.int32))

    def with_overrides(self, overrides: dict[str, str]) -> StructureConfig:
        """This config with `--set`-style strings applied (validated)."""
        from mmjax.configs.common import apply_overrides

        return apply_overrides(self, overrides)

    def to_dict(self) -> dict:
        """Plain dict of the fields (for sweep.json)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def result_rows(self, res: StructureResult) -> list[dict]:
        """results.csv rows of one run, long format: feature, factor, role, metric, value.

        Probe metrics: `linear` (accuracy, or R² for position and rotation), `mcc` (discrete only), `<k>shot`;
        zero-shot per attribute; retrieval, gap metrics and loss terms with empty feature/factor.
        """
        rows = []

        def add(feature: str, factor: str, metric: str, value) -> None:
            rows.append({"method": self.method, "feature": feature, "factor": factor,
                         "role": self.role(factor) if factor else "", "metric": metric,
                         "value": float(value)})

        for i, feature in enumerate(FEATURES):
            if feature.endswith(("_ind", "_both")) and self.sep_weight == 0:
                continue  # untrained heads: nothing to read
            for j, target in enumerate(TARGETS):
                add(feature, target, "linear", res.r2_linear[i, j])
                if target in LABELLED:
                    add(feature, target, "mcc", res.r2_nonlinear[i, j])
                    add(feature, target, f"{self.k_shot}shot", res.kshot[i, j])
        for j, attr in enumerate(DISCRETE):
            add("img", attr, "zeroshot", res.zeroshot[j])
        for name, value in zip((*RETRIEVAL, *(f"gap/{g}" for g in GAP), *(f"loss/{t}" for t in TERMS)),
                               (*res.retrieval, *res.gap, *res.terms), strict=True):
            add("", "", name, value)
        return rows


def with_method(cfg: StructureConfig, method: str, weights: dict[str, float]) -> StructureConfig:
    """`cfg` with the regularizers of `method` ("clip", "sep", "sep+br+gc", ...) at `weights`, the rest 0."""
    used = () if method == "clip" else tuple(method.split("+"))
    if bad := [r for r in used if r not in REGULARIZERS]:
        _fail("methods", method, f"'clip' or regularizers from {', '.join(REGULARIZERS)} joined by '+' "
                                 f"(unknown {bad})")
    return replace(cfg, **{f"{r}_weight": (weights[r] if r in used else 0.0) for r in REGULARIZERS})
