"""Fusion × regularizer study (Jiang et al., arXiv 2303.05952, Table 3, at cpu scale): pre-train the
ALBEF-style fusion model on the procedural scenes alone and with L_Sep, L_Br, L_GC and all three, fine-tune
each on generated question answering, image-pair reasoning and visual entailment, beside the majority,
text-only and image-only baselines.

    mmjax sweep fusion_structures --scale cpu --seeds 3 --out runs/fusion_structures
    mmjax sweep fusion_structures --scale smoke --seeds 1 --set methods=albef,gc --set tasks=qa
    mmjax sweep fusion_structures --scale cpu --set finetune.steps=200 --set pretrain.sep_weight=0.5
"""

from mmjax.configs.fusion_study import fusion_structures_study


def get_study(scale: str, overrides: dict[str, str]):
    """The study at `scale` (smoke or cpu), with `--set` overrides (methods, tasks, baselines,
    pretrain.<field>, finetune.<field>)."""
    return fusion_structures_study(scale, overrides)
