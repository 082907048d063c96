"""The modality-structures study of Jiang et al. (arXiv 2303.05952) on the scenes.

L_Con alone and with each regularizer.
"""

from __future__ import annotations

import dataclasses

from mmjax.configs.clip import ClipConfig
from mmjax.configs.common import ConfigError, apply_overrides
from mmjax.configs.experiment import MethodSweep, parse_methods
from mmjax.data.scenes import DISCRETE

REGULARIZERS = ("sep", "br", "gc")
DEFAULT_WEIGHTS = {"sep": 1.0, "br": 1.0, "gc": 1.0}  # used unless --set <r>_weight=... is given
METHODS = ("clip", "sep", "br", "gc", "sep+br+gc")
STUDY_SCALES = ("smoke", "cpu")

# Shared by every method: the scenes with every attribute named, ViT + Transformer towers, L_Con.
BASE = ClipConfig(dataset="scenes", num_train=8192, num_eval=1024, image_size=32, max_len=24,
                  image_tower="vit", text_tower="transformer", patch=8, width=64, depth=2, heads=4,
                  embed_dim=64, loss="con", batch=128, steps=800, lr=1e-3, warmup_steps=50,
                  log_every=50, eval_every=100_000, ckpt_every=200, keep=1)
SCALE_FIELDS = {
    "smoke": dict(num_train=256, num_eval=128, width=32, depth=1, heads=2, embed_dim=32, batch=32,
                  steps=6, warmup_steps=1, log_every=3, ckpt_every=3),
    "cpu": {},
}


def method_config(base: ClipConfig, method: str) -> ClipConfig:
    """`base` with the weights of the regularizers in `method` ("clip" = none, "sep+gc" = two, ...)."""
    used = () if method == "clip" else tuple(method.split("+"))
    weights = {}
    for r in REGULARIZERS:
        given = getattr(base, f"{r}_weight")
        weights[f"{r}_weight"] = (given if given > 0 else DEFAULT_WEIGHTS[r]) if r in used else 0.0
    return dataclasses.replace(base, **weights)


def panels() -> dict[str, list[str]]:
    """Metric groups of the bar plot."""
    attrs = [*DISCRETE, "mean"]
    return {
        "zero-shot top-1 (prompt templates)": [f"zeroshot/{a}/top1" for a in attrs],
        "linear probe accuracy": [f"probe/{a}/linear" for a in attrs],
        "5-shot probe accuracy": [f"probe/{a}/5shot" for a in attrs],
        "retrieval recall": [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)],
        "modality gap": ["gap/centroid_distance", "gap/mean_paired_distance", "gap/cone_img", "gap/cone_txt"],
    }


def modality_structures_sweep(scale: str, overrides: dict[str, str]) -> MethodSweep:
    """The study at a scale, with `--set` overrides (any ClipConfig field, and `methods=clip,gc,...`)."""
    if scale not in STUDY_SCALES:
        raise ConfigError(f"scale={scale!r} is invalid for modality_structures: "
                          f"allowed {', '.join(STUDY_SCALES)}")
    overrides = dict(overrides)
    methods = parse_methods(overrides.pop("methods", ",".join(METHODS)), _known_methods())
    base = dataclasses.replace(BASE, **SCALE_FIELDS[scale])
    base = apply_overrides(base, overrides)
    return MethodSweep(
        name="modality_structures",
        methods={m: method_config(base, m) for m in methods},
        description=("L_Con alone and with L_Sep, L_Br, L_GC on the procedural scenes "
                     "(Jiang et al., arXiv 2303.05952)"),
        panels=panels(),
    )


def _known_methods() -> tuple[str, ...]:
    """"clip" and every non-empty combination of the regularizers, joined with "+" in canonical order."""
    combos = [[r for i, r in enumerate(REGULARIZERS) if mask >> i & 1] for mask in range(1, 8)]
    return ("clip", *("+".join(c) for c in sorted(combos, key=len)))
