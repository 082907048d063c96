"""Paper figure (Cai et al., arXiv 2504.10143): selection bias sweep with independent latents."""

from mmjax.configs.numeric import selection_sweep


def get_experiment(scale: str, overrides: dict[str, str]):
    """Settings of this figure at the given scale."""
    return selection_sweep("selection_independent", scale, overrides, dependent=False)
