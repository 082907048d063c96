"""Image–text study (Cai et al., arXiv 2504.10143): perturbation settings 1–5.

∅ → {background} → +height → +size → +shape.
"""

from mmjax.configs.image_text import image_text_experiment


def get_experiment(scale: str, overrides: dict[str, str]):
    """MCC of every factor from each encoder, for each of the five settings."""
    return image_text_experiment("image_text_perturbation", "perturbation", scale, overrides)
