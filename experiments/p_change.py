"""How the R² of a perturbed semantic falls with the perturbation probability p_change.

One perturbation setting of Cai et al. (arXiv 2504.10143, the perturbation-bias experiments):
I_θ = [10], I_ρ = {1, 2, 3}, independent latents, cpu recipe, with p_change ∈ {0.05, 0.1, 0.25,
0.5, 0.75, 1.0} (mmjax's default is 0.75). The identifiability result treats a perturbed s_i as
not recovered; with a small p_change the text still carries s_i unchanged in most samples, so
this measures how fast the recovered share falls as p_change grows.

    mmjax sweep p_change --scale cpu --seeds 3
"""

from mmjax.configs.common import override
from mmjax.configs.experiment import Experiment, Setting, with_grid
from mmjax.configs.grid import parse_grid
from mmjax.configs.numeric import base_config
from mmjax.configs.synthetic import apply_overrides

P_CHANGE = "0.05,0.1,0.25,0.5,0.75,1.0"


def get_experiment(scale: str, overrides: dict[str, str]):
    """I_θ = [10], I_ρ = {1, 2, 3} for each p_change."""
    base = apply_overrides(base_config(scale, theta=None, rho=(1, 2, 3), dependent=False), overrides)
    exp = Experiment("p_change", (Setting("ρ={1,2,3}", base),),
                     description="perturbation probability sweep at I_ρ = {1, 2, 3} (Cai et al.)")
    return with_grid(exp, parse_grid([f"p_change={P_CHANGE}"]), override)
