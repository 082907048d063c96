"""Latent modality structures (Jiang et al., arXiv 2303.05952) on the two-tower trainer: CLIP with
L_Con alone and with L_Sep, L_Br, L_GC and all three, trained on the procedural scenes and evaluated
by zero-shot attribute classification, probes, retrieval and the modality-gap metrics. Its testbed names
every attribute in every caption (no modality-specific information); `modality_structures` is the
study that has some.

    mmjax sweep structures_two_tower --scale cpu --seeds 3 --out runs/modality_structures
    mmjax sweep structures_two_tower --scale smoke --set methods=clip,gc --set br_t=0.5
"""

from mmjax.configs.structures import modality_structures_sweep


def get_method_sweep(scale: str, overrides: dict[str, str]):
    """Every method of the study at `scale` (smoke or cpu), with `--set` overrides applied to all."""
    return modality_structures_sweep(scale, overrides)
