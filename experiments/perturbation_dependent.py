"""Paper figure: perturbation bias sweep with dependent latents (SPEC A4)."""

from mmjax.configs.numeric import perturbation_sweep


def get_experiment(scale: str, overrides: dict[str, str]):
    """Settings of this figure at the given scale."""
    return perturbation_sweep("perturbation_dependent", scale, overrides, dependent=True)
