"""The fusion × regularizer study's configs (Jiang et al., arXiv 2303.05952, Table 3, at cpu scale).

`fusion_structures_study(scale, overrides)` gives a `FusionStudy`: one fusion pre-training config per
method (ALBEF alone and with L_Sep, L_Br, L_GC and all three, weight 1.0 each unless set), the
fine-tuning template, and the tasks. `mmjax.train.fusion_study` runs it.

Overrides (`--set`): `methods=albef,sep,...`, `tasks=qa,pairs,entailment`, `baselines=false`, and any field
of the pre-training (`pretrain.<field>=...`, a `FusionConfig` field) or fine-tuning config
(`finetune.<field>=...`, a `FinetuneConfig` field).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mmjax.configs import structures
from mmjax.configs.common import ConfigError, apply_overrides
from mmjax.configs.experiment import parse_methods
from mmjax.configs.finetune import FINETUNE_TASKS, FinetuneConfig
from mmjax.configs.fusion import FusionConfig

METHODS = ("albef", "sep", "br", "gc", "sep+br+gc")
STUDY_SCALES = ("smoke", "cpu")

# experiments/fusion_tiny.py's model and data, evaluated once at the end (the study reads the fine-tunings)
PRETRAIN = FusionConfig(
    dataset="scenes", num_train=4096, num_eval=512, image_size=32, max_len=20, image_tower="vit",
    text_tower="transformer", patch=8, width=64, depth=2, heads=4, embed_dim=64, text_depth=3,
    fusion_layers=1, queue_size=256, momentum=0.99, alpha=0.4, mask_prob=0.15, batch=64, steps=800, lr=1e-3,
    warmup_steps=30, weight_decay=0.05, log_every=50, eval_every=100_000, ckpt_every=200, keep=1)
FINETUNE = FinetuneConfig(num_train=8192, num_val=1024, num_test=1024, batch=64, steps=400, lr=5e-4,
                          warmup_steps=30, log_every=50, eval_every=100, ckpt_every=100, keep=1)
SCALE_FIELDS = {
    "smoke": (dict(num_train=256, num_eval=64, image_size=16, width=16, depth=1, heads=2, embed_dim=16,
                   text_depth=2, batch=16, queue_size=32, steps=4, warmup_steps=1, log_every=2, ckpt_every=4),
              dict(num_train=128, num_val=64, num_test=64, batch=16, steps=4, warmup_steps=1, log_every=2,
                   eval_every=2, ckpt_every=4)),
    "cpu": ({}, {}),
}


@dataclasses.dataclass(frozen=True)
class FusionStudy:
    """Pre-training configs by method, the fine-tuning template, the tasks and whether to run baselines."""

    name: str
    pretrain: Mapping[str, FusionConfig]
    finetune: FinetuneConfig
    tasks: tuple[str, ...] = FINETUNE_TASKS
    baselines: bool = True
    description: str = ""

    @property
    def reference(self) -> str:
        """The method the unimodal baselines fine-tune from (the first: no regularizer)."""
        return next(iter(self.pretrain))


def method_config(base: FusionConfig, method: str) -> FusionConfig:
    """`base` with the weights of the regularizers in `method` ("albef": none; 1.0 unless `base` sets one),
    as `mmjax.configs.structures.method_config` sets them for the two-tower study."""
    return structures.method_config(base, "clip" if method == "albef" else method)


def _known_methods() -> tuple[str, ...]:
    return ("albef", *structures._known_methods()[1:])


def fusion_structures_study(scale: str, overrides: Mapping[str, str]) -> FusionStudy:
    """The study at `scale` (smoke or cpu) with `--set` overrides (see the module doc)."""
    if scale not in STUDY_SCALES:
        raise ConfigError(f"scale={scale!r} is invalid for fusion_structures: "
                          f"allowed {', '.join(STUDY_SCALES)}")
    overrides = dict(overrides)
    methods = parse_methods(overrides.pop("methods", ",".join(METHODS)), _known_methods())
    spec = overrides.pop("tasks", ",".join(FINETUNE_TASKS))
    tasks = tuple(t.strip() for t in spec.split(",") if t.strip())
    if not tasks or not set(tasks) <= set(FINETUNE_TASKS) or len(set(tasks)) != len(tasks):
        raise ConfigError(f"tasks={spec!r} is invalid: distinct names from {', '.join(FINETUNE_TASKS)}")
    raw = overrides.pop("baselines", "true").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"baselines={raw!r} is invalid: must be true or false")
    pre_sets = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("pretrain.")}
    fine_sets = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("finetune.")}
    unknown = sorted(k for k in overrides if not k.startswith(("pretrain.", "finetune.")))
    if unknown:
        raise ConfigError(f"--set {unknown[0]}={overrides[unknown[0]]}: unknown field; allowed: methods, "
                          "tasks, baselines, pretrain.<FusionConfig field>, finetune.<FinetuneConfig field>")
    pre_fields, fine_fields = SCALE_FIELDS[scale]
    pretrain = apply_overrides(dataclasses.replace(PRETRAIN, **pre_fields), pre_sets)
    finetune = apply_overrides(dataclasses.replace(FINETUNE, **fine_fields), fine_sets)
    return FusionStudy(
        name="fusion_structures", pretrain={m: method_config(pretrain, m) for m in methods},
        finetune=finetune,
        tasks=tasks, baselines=raw in ("true", "1", "yes"),
        description=("ALBEF-style fusion pre-training alone and with L_Sep, L_Br, L_GC on the procedural "
                     "scenes, fine-tuned on generated question answering, image-pair reasoning and visual "
                     "entailment (Jiang et al., arXiv 2303.05952)"))
