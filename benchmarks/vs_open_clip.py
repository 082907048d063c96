"""The two-tower CLIP train step, mmjax against open_clip (the trainer most CLIP users would pick).

    pip install torch torchvision open_clip_torch    # optional: never a dependency of mmjax
    python benchmarks/vs_open_clip.py [--batches 64,256] [--steps 20] [--rounds 5] [--threads 2]

The same small model on both sides: image 32 px, patch 8, ViT width 64, depth 2, 4 heads, class-token
pooling; text context 16, vocabulary 1000, width 64, depth 2, 4 heads, causal, end-of-text pooling;
MLP ratio 4, pre-LN, embedding 64 and a learned logit scale (init log(1/0.07), clamped at log 100); CLIP's
symmetric InfoNCE loss; AdamW (lr 1e-3, weight decay 0.05 on matrices only, linear warmup then cosine)
after global-norm gradient clipping at 1.0, as `mmjax.train.clip.make_optimizer`. mmjax:
`make_trainer(ClipConfig(...))` on one device, its jitted step (state donated). open_clip: its `CLIP`
model (`CLIPVisionCfg`, `CLIPTextCfg`), `ClipLoss`, `torch.optim.AdamW` and
`torch.nn.utils.clip_grad_norm_`, the step as open_clip's own training loop runs it (zero_grad,
forward, loss, backward, clip, step, clamp the logit scale), float32, `torch.set_num_threads(--threads)`.

Both see the same random images and tokens. After warm-up, rounds alternate mmjax and open_clip (so both
see the same background load), each timing `--steps` steps; the table gives the best and median
samples/s, the ratio of the bests, mmjax's compile seconds and both sides' parameter counts: mmjax has
65 more, its patch embedding's bias (64; open_clip's has none) and the SigLIP logit bias (1), which the
CLIP loss does not use; open_clip's ViT runs without its extra pre-LayerNorm (`no_ln_pre=True`), as mmjax's.
The activations differ: mmjax's GELU is flax's default tanh approximation, open_clip's torch's exact one.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB, IMAGE, PATCH, WIDTH, DEPTH, HEADS, CONTEXT, EMBED = 1000, 32, 8, 64, 2, 4, 16, 64
LR, WEIGHT_DECAY, CLIP_NORM, WARMUP, TOTAL = 1e-3, 0.05, 1.0, 10, 1000


def data(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random NHWC images in [0, 1) and tokens, each row ending in an end-of-text token (the largest id,
    as open_clip's tokenizer places it) at a random length, zero-padded after it."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, IMAGE, IMAGE, 3), dtype=np.float32)
    tokens = rng.integers(1, VOCAB - 1, (batch, CONTEXT), dtype=np.int32)
    lengths = rng.integers(4, CONTEXT + 1, batch)
    for row, n in zip(tokens, lengths, strict=True):
        row[n - 1], row[n:] = VOCAB - 1, 0
    return images, tokens


def mmjax_side(batch: int, images: np.ndarray, tokens: np.ndarray):
    """(run k steps, compile seconds, parameter count) of mmjax's jitted two-tower step."""
    import jax

    from mmjax import parallel
    from mmjax.configs.clip import ClipConfig
    from mmjax.data.pipeline import IMAGE_KEY, TOKENS_KEY
    from mmjax.train.clip import make_trainer

    cfg = ClipConfig(image_size=IMAGE, patch=PATCH, width=WIDTH, depth=DEPTH, heads=HEADS, embed_dim=EMBED,
                     max_len=CONTEXT, batch=batch, loss="clip", steps=TOTAL, warmup_steps=WARMUP, lr=LR,
                     weight_decay=WEIGHT_DECAY, clip_norm=CLIP_NORM)
    mesh = parallel.data_mesh(jax.devices()[:1])
    trainer = make_trainer(cfg, VOCAB, mesh)
    state = jax.block_until_ready(trainer.init(jax.random.key(0)))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state["train"].params))
    gbatch = parallel.global_batch({IMAGE_KEY: images, TOKENS_KEY: tokens}, mesh)
    start = time.perf_counter()
    step = trainer.step.lower(state, gbatch).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def run(k: int) -> float:
        s, metrics = holder["state"], None
        for _ in range(k):
            s, metrics = step(s, gbatch)
        jax.block_until_ready((s, metrics))
        holder["state"] = s
        return float(metrics["loss"])

    return run, compile_s, n_params


def open_clip_side(batch: int, images: np.ndarray, tokens: np.ndarray, threads: int):
    """(run k steps, parameter count) of open_clip's CLIP trained as its own loop trains it."""
    import torch
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=DEPTH, width=WIDTH, head_width=WIDTH // HEADS, mlp_ratio=4.0,
                           patch_size=PATCH, image_size=IMAGE, no_ln_pre=True)
    text = CLIPTextCfg(context_length=CONTEXT, vocab_size=VOCAB, width=WIDTH, heads=HEADS, layers=DEPTH)
    model = CLIP(embed_dim=EMBED, vision_cfg=vision, text_cfg=text, output_dict=True).train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": rest, "weight_decay": 0.0}], lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / WARMUP if t < WARMUP else
                                              0.5 * (1 + math.cos(math.pi * (t - WARMUP) / (TOTAL - WARMUP))))
    loss_fn = ClipLoss()
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    t = torch.from_numpy(tokens.astype(np.int64))

    def run(k: int) -> float:
        loss = None
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            out = model(x, t)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
        return float(loss.detach())

    return run, n_params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="64,256", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side (alternating)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 2:
        parser.error(f"--batches={args.batches!r} is invalid: comma-separated integers >= 2")
    for name in ("steps", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)} is invalid: a positive integer")
    try:
        import open_clip
        import torch
    except ImportError as err:
        print(f"needs PyTorch and open_clip ({err}): pip install torch torchvision open_clip_torch",
              file=sys.stderr)
        return 2
    import jax

    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({args.threads} threads), open_clip {open_clip.__version__}")
    print("| batch | mmjax samples/s (best, median) | open_clip samples/s (best, median) | ratio (best) | "
          "mmjax compile s | params mmjax / open_clip |")
    print("|---|---|---|---|---|---|")
    for batch in batches:
        images, tokens = data(batch)
        ours, compile_s, n_ours = mmjax_side(batch, images, tokens)
        theirs, n_theirs = open_clip_side(batch, images, tokens, args.threads)
        ours(args.warmup)
        theirs(args.warmup)
        times: dict[str, list[float]] = {"mmjax": [], "open_clip": []}
        for _ in range(args.rounds):
            for name, fn in (("mmjax", ours), ("open_clip", theirs)):
                start = time.perf_counter()
                fn(args.steps)
                times[name].append(time.perf_counter() - start)
        rate = {k: (args.steps * batch / min(v), args.steps * batch / statistics.median(v))
                for k, v in times.items()}
        ours_r, theirs_r = rate["mmjax"], rate["open_clip"]
        print(f"| {batch} | {ours_r[0]:.0f}, {ours_r[1]:.0f} | {theirs_r[0]:.0f}, {theirs_r[1]:.0f} | "
              f"{ours_r[0] / theirs_r[0]:.2f}x | {compile_s:.1f} | {n_ours} / {n_theirs} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
