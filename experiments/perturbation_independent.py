"""Paper figure (Cai et al., arXiv 2504.10143): perturbation bias sweep with independent latents."""

from mmjax.configs.numeric import perturbation_sweep


def get_experiment(scale: str, overrides: dict[str, str]):
    """Settings of this figure at the given scale."""
    return perturbation_sweep("perturbation_independent", scale, overrides, dependent=False)
