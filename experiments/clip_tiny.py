"""A tiny two-tower CLIP on generated coloured shapes: trains on a 2-core CPU in a few minutes.

    mmjax train --config experiments/clip_tiny.py --workdir runs/clip_tiny
"""

from mmjax.configs.clip import ClipConfig


def get_config() -> ClipConfig:
    """ViT-tiny image tower and a 2-layer text Transformer, CLIP loss, 300 steps of batch 64."""
    return ClipConfig(
        dataset="generated", num_train=4096, num_eval=512, image_size=32, max_len=16,
        image_tower="vit", text_tower="transformer", patch=8, width=64, depth=2, heads=4, embed_dim=64,
        loss="clip", batch=64, steps=300, lr=1e-3, warmup_steps=30, weight_decay=0.05,
        log_every=10, eval_every=100, ckpt_every=100, keep=3,
    )
