"""Latent modality structures (Jiang et al., arXiv 2303.05952) on a testbed where they can matter: every
attribute learnable, information only the image holds (position, rotation, an unstated attribute) or
only the caption holds (its template), misaligned caption words. Tunes each regularizer's weight on a
val stream, tests the tuned methods with paired seeds, then crosses them with Cai et al.'s selection and
perturbation settings (docs/structures.md).

    mmjax sweep modality_structures --scale cpu --out docs/results/cpu/modality_structures
    mmjax sweep modality_structures --scale smoke --out /tmp/ms_smoke        # about two minutes
    mmjax sweep modality_structures --set seeds=8 --set misalignment_seeds=0,1
"""

from mmjax.configs.structure_study import modality_structures_study


def get_structures_study(scale: str, overrides: dict[str, str]):
    """The three-stage study at `scale` (smoke or cpu), `--set` overrides applied to every run."""
    return modality_structures_study(scale, overrides)
