"""The theorem for every selection: the independent selection setting (I_ρ = ∅) for many θ at once.

Cai et al. (arXiv 2504.10143) test selection bias on ten nested θ = [10], [9], ..., {1} (their
numeric experiments).
Their identifiability result holds for *every* θ: the learned encoding recovers exactly
the selected semantics s_θ and nothing of the omitted ones or of m_x, m_t. This experiment runs it
for a uniform sample of 128 of the 1023 non-empty θ ⊆ [10] (fixed draw, `mmjax.configs.grid`),
cpu recipe:

    mmjax sweep all_selections --scale cpu --seeds 1                         # 128 θ (CPU)
    mmjax sweep all_selections --scale cpu --seeds 3 --grid theta=all        # all 1023 θ (accelerator)

`role_check.json` then holds the fraction of (θ, factor) cells where a selected factor reaches
R² ≥ 0.9 and an omitted one stays ≤ 0.15, with the worst cells; `summary_by_n_theta.png` plots R²
by role against |θ|.
"""

from mmjax.configs.common import override
from mmjax.configs.experiment import Experiment, Setting, with_grid
from mmjax.configs.grid import parse_grid
from mmjax.configs.numeric import base_config
from mmjax.configs.synthetic import apply_overrides

SAMPLE = "sample:128"


def get_experiment(scale: str, overrides: dict[str, str]):
    """128 sampled θ with I_ρ = ∅, independent latents (a --grid theta=... replaces the sample)."""
    base = apply_overrides(base_config(scale, rho=(), dependent=False), overrides)
    exp = Experiment("all_selections", (Setting("θ sample", base),),
                     description="independent selection bias for a uniform sample of θ (Cai et al.)")
    return with_grid(exp, parse_grid([f"theta={SAMPLE}"]), override)
