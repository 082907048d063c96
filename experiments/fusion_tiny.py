"""A tiny ALBEF-style fusion model on the procedural scenes: pre-trains on a 2-core CPU in a few minutes.

    mmjax train --config experiments/fusion_tiny.py --workdir runs/fusion_tiny
    mmjax eval --workdir runs/fusion_tiny

ITC with a queue of 4 batches and momentum distillation, ITM with hard negatives, MLM (Li et al. 2021,
arXiv 2107.07651); see docs/fusion.md for the losses and how this differs from the paper's scale.
"""

from mmjax.configs.fusion import FusionConfig


def get_config() -> FusionConfig:
    """ViT-tiny (2 layers) and a 3-layer text model (2 text-only + 1 fusion), 800 steps of batch 64."""
    return FusionConfig(
        dataset="scenes", num_train=4096, num_eval=512, image_size=32, max_len=20,
        image_tower="vit", text_tower="transformer", patch=8, width=64, depth=2, heads=4, embed_dim=64,
        text_depth=3, fusion_layers=1, queue_size=256, momentum=0.99, alpha=0.4, mask_prob=0.15,
        batch=64, steps=800, lr=1e-3, warmup_steps=30, weight_decay=0.05,
        log_every=10, eval_every=200, ckpt_every=200, keep=3,
    )
