"""The modality-structures study (Jiang et al., arXiv 2303.05952) on a testbed where structure can matter.

Three stages, each an ordinary vmapped sweep of `StructureConfig` runs (docs/structures.md):
1. **tune**: each regularizer's weight (with `sep_tau` or `br_t`) on a small grid, scored on the val
   stream of scenes (never the test stream) by `val_score`;
2. **test**: L_Con alone, each regularizer and all three at their tuned values, `seeds` seeds, on the
   test stream: paired differences against L_Con with 95 % confidence intervals;
3. **misalignment**: Cai et al.'s selection and perturbation settings (arXiv 2504.10143, Sec. 5) crossed
   with L_Con alone and each tuned regularizer: what each keeps of every factor in the image features.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mmjax.configs.common import ConfigError, apply_overrides
from mmjax.configs.experiment import Experiment, Setting
from mmjax.configs.image_text import PERTURBATION, SELECTION
from mmjax.configs.structure_scenes import REGULARIZERS, StructureConfig, with_method
from mmjax.data.scenes import DISCRETE

STUDY_SCALES = ("smoke", "cpu")
# The testbed: colour, shape and size stated truthfully (shared); height's word redrawn with p = 0.9
# (misaligned); background never stated (image-only by selection), nor are position and rotation;
# the template is text-only.
TESTBED = dict(selected=("colour", "shape", "size", "height"), perturbed=("height",), p_change=0.9)
SCALE_FIELDS = {
    "smoke": dict(channels=(4, 8), hidden=16, embed_dim=8, text_embed=8, text_channels=(8,), batch=16,
                  steps=20, log_every=10, eval_fit=64, eval_test=64, k_shot=2, probe_steps=20),
    "cpu": dict(),
}
# Each regularizer's grid: (weight, the field it is tuned with, that field's value).
TUNE_GRID = {
    "sep": [(w, "sep_tau", t) for w in (0.1, 1.0) for t in (0.1, 0.3)],
    "br": [(w, "br_t", t) for w in (0.1, 1.0) for t in (0.25, 0.5)],
    "gc": [(w, None, None) for w in (0.1, 0.3, 1.0)],
}
TEST_METHODS = ("clip", "sep", "br", "gc", "sep+br+gc")
MISALIGNMENT_METHODS = ("clip", "sep", "br", "gc")
# Seven of the nine bias settings by default (`misalignment_settings=all` runs the nine): the two middle
# rungs θ=co+sh+si and ρ=he+ba are left out so that the whole cpu study fits in 90 minutes on the slower
# of the 2-core CPUs it was timed on (README: ~87 min there at 78.7 s per run, 41 min at 38 s).
MISALIGNMENT_SETTINGS = ("θ=co", "θ=co+sh", "θ=co+sh+si+he", "θ=co+sh+si+he+ba", "ρ=ba", "ρ=si+he+ba",
                         "ρ=sh+si+he+ba")


def bias_settings() -> list[tuple[str, dict]]:
    """(label, bias fields) of Cai et al.'s five selection and five perturbation settings, the one they
    share (everything named, nothing perturbed) once: nine settings."""
    out = [(f"θ={'+'.join(a[:2] for a in sel)}", dict(selected=sel, perturbed=())) for sel in SELECTION]
    out += [(f"ρ={'+'.join(a[:2] for a in per)}", dict(selected=DISCRETE, perturbed=per))
            for per in PERTURBATION if per]
    return out


@dataclass(frozen=True)
class StructureStudy:
    """The three stages' experiments and seeds; `test_experiment`/`misalignment_experiment` take the
    tuned values (`{regularizer: {field: value}}`, as `choose_tuned` returns)."""

    name: str
    base: StructureConfig
    tune_seeds: tuple[int, ...] = (100,)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    misalignment_seeds: tuple[int, ...] = (0,)
    test_methods: tuple[str, ...] = TEST_METHODS
    misalignment_methods: tuple[str, ...] = MISALIGNMENT_METHODS
    misalignment_settings: tuple[str, ...] = MISALIGNMENT_SETTINGS
    tune_grid: dict = field(default_factory=lambda: dict(TUNE_GRID))

    def tune_experiment(self) -> Experiment:
        """L_Con alone and every grid point of every regularizer, on the val stream."""
        val = replace(self.base, split="val")
        settings = [Setting("clip", val, (("method", "clip"), ("weight", "0"), ("with", "")))]
        for r, grid in self.tune_grid.items():
            for weight, other, value in grid:
                cfg = replace(val, **{f"{r}_weight": weight}, **({other: value} if other else {}))
                label = f"{r} w={weight}" + (f" {other}={value}" if other else "")
                settings.append(Setting(label, cfg, (("method", r), ("weight", str(weight)),
                                                     ("with", f"{other}={value}" if other else ""))))
        return Experiment(f"{self.name}_tune", tuple(settings), "regularizer weights on the val stream",
                          metric_label="val score")

    def method_config(self, method: str, tuned: dict[str, dict], **bias) -> StructureConfig:
        """The base (test stream) with `method`'s regularizers at their tuned values and `bias` fields."""
        cfg = replace(self.base, **bias)
        weights = {r: tuned[r][f"{r}_weight"] for r in REGULARIZERS if r in tuned}
        cfg = with_method(cfg, method, {r: weights.get(r, 0.0) for r in REGULARIZERS})
        extra = {k: v for r in method.split("+") if r in tuned for k, v in tuned[r].items()
                 if not k.endswith("_weight")}
        return replace(cfg, **extra)

    def test_experiment(self, tuned: dict[str, dict]) -> Experiment:
        """Each test method on the testbed, test stream."""
        settings = tuple(Setting(m, self.method_config(m, tuned), (("method", m),))
                         for m in self.test_methods)
        return Experiment(f"{self.name}_test", settings, "tuned methods on the test stream",
                          metric_label="test")

    def misalignment_experiment(self, tuned: dict[str, dict]) -> Experiment:
        """Each misalignment method under each chosen bias setting, test stream."""
        settings = tuple(
            Setting(f"{m} {label}", self.method_config(m, tuned, **bias), (("method", m), ("bias", label)))
            for label, bias in bias_settings() if label in self.misalignment_settings
            for m in self.misalignment_methods)
        return Experiment(f"{self.name}_misalignment", settings,
                          "selection and perturbation bias x structure regularizers", metric_label="MCC")


def parse_seeds(name: str, text: str) -> tuple[int, ...]:
    """`0,1,2` or a count `5` (seeds 0..4)."""
    allowed = "a count or comma-separated non-negative ints"
    try:
        parts = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ConfigError(f"{name}={text!r} is invalid: {allowed}") from None
    if not parts or min(parts) < 0:
        raise ConfigError(f"{name}={text!r} is invalid: {allowed}")
    return tuple(range(parts[0])) if len(parts) == 1 and "," not in text else tuple(parts)


def parse_bias_labels(text: str) -> tuple[str, ...]:
    """`all` or comma-separated labels of `bias_settings()`."""
    labels = [label for label, _ in bias_settings()]
    chosen = labels if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in chosen if t not in labels]
    if bad or not chosen:
        raise ConfigError(f"misalignment_settings={text!r} is invalid: allowed 'all' or comma-separated "
                          f"labels from {', '.join(labels)}")
    return tuple(chosen)


def modality_structures_study(scale: str, overrides: dict[str, str]) -> StructureStudy:
    """The study at a scale. `--set` takes any StructureConfig field (applied to every run; bias fields
    move the testbed) and `seeds=5`, `tune_seeds=100,101`, `misalignment_seeds=0,1`,
    `misalignment_settings=all` (or comma-separated labels of `bias_settings()`)."""
    if scale not in STUDY_SCALES:
        raise ConfigError(f"scale={scale!r} is invalid for modality_structures: "
                          f"allowed {', '.join(STUDY_SCALES)}")
    overrides = dict(overrides)
    seeds = {k: parse_seeds(k, overrides.pop(k)) for k in ("seeds", "tune_seeds", "misalignment_seeds")
             if k in overrides}
    if "misalignment_settings" in overrides:
        seeds["misalignment_settings"] = parse_bias_labels(overrides.pop("misalignment_settings"))
    base = apply_overrides(StructureConfig(**TESTBED, **SCALE_FIELDS[scale]), overrides)
    study = StructureStudy("modality_structures", base, **seeds)
    if scale == "smoke":
        study = replace(study, tune_seeds=seeds.get("tune_seeds", (100,)), seeds=seeds.get("seeds", (0, 1)),
                        tune_grid={r: g[:1] for r, g in TUNE_GRID.items()})
    return study
