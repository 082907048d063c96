"""Joint selection and perturbation bias: I_theta = [8], I_rho = [2] (Cai et al., arXiv 2504.10143)."""

from mmjax.configs.numeric import make_settings
from mmjax.train.sweep import Experiment


def get_experiment(scale: str, overrides: dict[str, str]):
    """Only s3..s8 should be recovered in the independent setting."""
    cases = [(f"θ=[8] ρ=[2] {dep}", dict(theta=tuple(range(1, 9)), rho=(1, 2),
                                          dependent=dep == "dependent"))
             for dep in ("independent", "dependent")]
    return Experiment("joint_bias", make_settings(scale, overrides, cases),
                      description="selection [8] with perturbation [2]")
