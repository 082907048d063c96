"""Latent modality structures (Jiang et al., arXiv 2303.05952): CLIP with L_Con alone and with L_Sep,
L_Br, L_GC and all three, trained on the procedural scenes and evaluated by zero-shot attribute
classification, probes, retrieval and the modality-gap metrics.

    mmjax sweep modality_structures --scale cpu --seeds 3 --out runs/modality_structures
    mmjax sweep modality_structures --scale smoke --set methods=clip,gc --set br_t=0.5
"""

from mmjax.configs.structures import modality_structures_sweep


def get_method_sweep(scale: str, overrides: dict[str, str]):
    """Every method of the study at `scale` (smoke or cpu), with `--set` overrides applied to all."""
    return modality_structures_sweep(scale, overrides)
