"""Scales and setting builders for the numeric experiments of Cai et al. (arXiv 2504.10143).

The experiments/ files use them.
"""

from __future__ import annotations

import dataclasses

from mmjax.configs.common import ConfigError
from mmjax.configs.experiment import Experiment, Setting
from mmjax.configs.synthetic import SCALES, SyntheticConfig, apply_overrides

# The cpu scale is SyntheticConfig's defaults; it deviates from the paper (README, "Scales and
# deviations"): narrower nets, batch 256, 10k steps, cosine-decayed lr 1e-2, batch-standardised
# encoder outputs, both batches as anchors, padded text layout, smaller evaluation.
SCALE_FIELDS: dict[str, dict] = {
    "smoke": dict(widths="16,16", batch=32, steps=300, log_every=50, eval_fit=512, eval_test=512,
                  cond_samples=2000, cond_rank=2, probe_epochs=20, eval_tilde=False),
    "cpu": dict(eval_fit=2048, eval_test=2048, probe_epochs=100, eval_tilde=False),
    "paper": dict(widths="paper", batch=6144, steps=100_000, lr=1e-4, schedule="constant",
                  output_norm="none", swap_batches=False, text_layout="exact",
                  eval_fit=20_480, eval_test=20_480),
}


# At cpu scale the perturbation sweeps train longer as fewer dims stay unperturbed (|ρ| -> steps).
# With n = 10 - |ρ| unperturbed dims the text still carries every perturbed s_i with correlation
# 1/sqrt(1 + p_change) ≈ 0.76, so alignment removes the perturbed directions from a small code only
# slowly: at 10 000 steps ρ = [9] reached R² 0.53 and ρ = [8] 0.65; at 50 000 and 30 000 steps
# 0.97 and 0.98, and ρ = [6], [7] 0.99 at 20 000 (3 seeds). Progress followed the samples seen,
# not lr, τ or batch size (batch 64 x 40 000 steps = batch 256 x 10 000).
CPU_PERTURBATION_STEPS = {5: 20_000, 6: 20_000, 7: 20_000, 8: 30_000, 9: 50_000}


def base_config(scale: str, **fields) -> SyntheticConfig:
    """The default config of a scale with experiment-specific fields."""
    if scale not in SCALES:
        raise ConfigError(f"scale={scale!r} is invalid: allowed {', '.join(SCALES)}")
    return SyntheticConfig(**{**SCALE_FIELDS[scale], **fields})


def make_settings(
    scale: str, overrides: dict[str, str], cases: list[tuple[str, dict]], **common
) -> tuple[Setting, ...]:
    """Settings from (label, fields) cases on a scale's base; --set overrides win over both."""
    base = base_config(scale, **common)
    return tuple(
        Setting(label, apply_overrides(dataclasses.replace(base, **fields), overrides))
        for label, fields in cases
    )


def _prefix(k: int) -> tuple[int, ...]:
    return tuple(range(1, k + 1))


def _label(k: int) -> str:
    return "∅" if k == 0 else ("{1}" if k == 1 else f"[{k}]")


def selection_sweep(name: str, scale: str, overrides: dict[str, str], dependent: bool,
                    n_s: int = 10) -> Experiment:
    """I_rho = ∅ and I_theta = [n_s], [n_s - 1], ..., {1}."""
    cases = [(f"θ={_label(k)}", dict(theta=_prefix(k), rho=())) for k in range(n_s, 0, -1)]
    kind = "dependent" if dependent else "independent"
    return Experiment(name, make_settings(scale, overrides, cases, dependent=dependent),
                      description=f"selection bias sweep, {kind} latents (Cai et al., arXiv 2504.10143)")


def perturbation_sweep(name: str, scale: str, overrides: dict[str, str], dependent: bool,
                       n_s: int = 10) -> Experiment:
    """I_theta = [n_s] and I_rho = ∅, {1}, [2], ..., [n_s - 1]."""
    steps = CPU_PERTURBATION_STEPS if scale == "cpu" and n_s == 10 else {}
    cases = [(f"ρ={_label(k)}", dict(theta=_prefix(n_s), rho=_prefix(k),
                                     **({"steps": steps[k]} if k in steps else {})))
             for k in range(n_s)]
    kind = "dependent" if dependent else "independent"
    return Experiment(name, make_settings(scale, overrides, cases, dependent=dependent),
                      description=f"perturbation bias sweep, {kind} latents (Cai et al., arXiv 2504.10143)")
