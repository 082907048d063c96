"""Downstream ID/OOD probes of the image representation across selection and perturbation.

The downstream experiment of Cai et al. (arXiv 2504.10143).
"""

from mmjax.configs.numeric import make_settings
from mmjax.train.sweep import Experiment


def get_experiment(scale: str, overrides: dict[str, str]):
    """Selection [10], [9], [7], [5] and perturbation of s9, s10 or s7..s10, independent latents."""
    full = tuple(range(1, 11))
    cases = [(f"θ=[{k}]", dict(theta=full[:k], rho=())) for k in (10, 9, 7, 5)]
    cases += [(f"ρ={{{','.join(map(str, r))}}}", dict(theta=full, rho=r))
              for r in ((9, 10), (7, 8, 9, 10))]
    return Experiment("downstream", make_settings(scale, overrides, cases, eval_kind="downstream"),
                      description="ID regression R² and OOD classification accuracy of probes on f_x")
