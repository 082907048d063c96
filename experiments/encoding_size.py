"""Encoding size larger than n: I_theta = [3] encoded in 5 dims, independent vs dependent.

An experiment of Cai et al. (arXiv 2504.10143).
"""

from mmjax.configs.numeric import make_settings
from mmjax.train.sweep import Experiment


def get_experiment(scale: str, overrides: dict[str, str]):
    """I_theta = [3], encoding size 3 (baseline) and 5, in both latent settings."""
    cases = [
        (f"{dep} enc={size}", dict(theta=(1, 2, 3), encoding_size=size, dependent=dep == "dep"))
        for dep in ("indep", "dep") for size in (3, 5)
    ]
    return Experiment("encoding_size", make_settings(scale, overrides, cases),
                      description="encoding size 5 > n = 3 picks up correlated omitted semantics")
