"""mmjax against Cai et al.'s reference code (github.com/YichaoCai1/crossmodal_mislaignment), side by side.

    pip install /path/to/torch-*.whl   # or `pip install torch`: an optional extra, never an mmjax dependency
    python benchmarks/vs_reference.py --ref PATH_TO_CHECKOUT [--sizes paper6144,paper512,small256]

The reference is imported unmodified from its checkout (`main_numeric.train_step`, `utils.losses`,
`encoders.get_mlp`, `utils.invertible_network_utils.construct_invertible_mlp`) and timed from outside.
First it checks, in float64, that mmjax's `lp_simclr_loss` equals the reference's `LpSimCLRLoss` as
`main_numeric.train_step` symmetrises it, in value and in the gradient with respect to all four
embeddings. Then, per size, it times one training step of each side, alternating (reference, mmjax,
reference, mmjax, ...), and prints the medians and their ratio:

- reference: `train_step` on fresh standard-normal latents (its data generation is not timed), Adam,
  clipping at 2, torch on CPU with `--threads` threads;
- mmjax: `jit(run.train)` of `mmjax.train.synthetic.make_run`, compiled with the run's
  `compiler_options` as `mmjax sweep` compiles it (at paper widths on CPU: XLA's own dot kernels, not
  YNNPACK's), for `--steps` steps, divided by the step count; it samples its latents on device inside
  the scan, which the reference side does not count.

Last, the R² evaluation of one model (`--eval-fit` fit + as many test rows; the paper's is 20 480): the
reference's `evaluate_prediction` with `LinearRegression(n_jobs=-1)` and `MLPRegressor(max_iter=10000)`,
as `main_numeric.main` calls them, on 13 targets x 2 encodings, against mmjax's linear and MLP probes
(`mmjax.eval.identifiability`, the targets batched as `mmjax.train.synthetic` batches them, 200 epochs at
most as the paper scale's `probe_epochs`, compiled with the paper-scale run's options) on the same
standardised features and targets: 10-d encodings tanh(z A) of z ~ N(0, I_15), targets the 10 semantic
latents one by one, all 10 together, the 5 image-specific ones and 5 independent ones (R² ≈ 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {  # name: (mmjax scale, batch, widths, label)
    "paper6144": ("paper", 6144, "paper", "training step, paper widths, batch 6144"),
    "paper512": ("paper", 512, "paper", "training step, paper widths, batch 512"),
    "small256": ("cpu", 256, "64,64", "training step, widths 64,64, batch 256, one config"),
}
MiB = 2.0 ** 20
N_S, N_M = 10, 5  # the reference's defaults: 10 semantic and 5 modality-specific latents


def import_reference(ref: Path):
    """The reference's modules from its checkout, unmodified."""
    if not (ref / "main_numeric.py").exists():
        raise SystemExit(f"--ref {ref}: no main_numeric.py there (a checkout of "
                         "YichaoCai1/crossmodal_mislaignment is expected)")
    sys.path.insert(0, str(ref))
    import encoders
    import main_numeric
    from utils.invertible_network_utils import construct_invertible_mlp
    from utils.losses import LpSimCLRLoss
    return main_numeric, encoders, construct_invertible_mlp, LpSimCLRLoss


def loss_parity(LpSimCLRLoss, batch: int = 64, dim: int = 10, seed: int = 0) -> tuple[float, float]:
    """(|Δ value|, max |Δ gradient|) of mmjax's LpSimCLR against the reference's, float64."""
    import jax
    import torch

    from mmjax.losses.contrastive import lp_simclr_loss

    rng = np.random.default_rng(seed)
    embs = [rng.normal(size=(batch, dim)) for _ in range(4)]  # hz_x, hz_t, hz_x_, hz_t_
    ts = [torch.tensor(e, dtype=torch.float64, requires_grad=True) for e in embs]
    loss = LpSimCLRLoss()
    hx, ht, hx_, ht_ = ts
    # main_numeric.train_step: loss_func(z_x, z_t, z_x_, hz_x, hz_t, hz_x_) and the swap, averaged
    ref = 0.5 * (loss(None, None, None, hx, ht, hx_)[0] + loss(None, None, None, ht, hx, ht_)[0])
    ref.backward()
    with jax.enable_x64(True):
        args = [jax.numpy.asarray(e, jax.numpy.float64) for e in embs]
        value, grads = jax.value_and_grad(lambda *a: lp_simclr_loss(*a), argnums=(0, 1, 2, 3))(*args)
        dv = abs(float(value) - float(ref.detach()))
        dg = max(float(np.max(np.abs(np.asarray(g) - t.grad.numpy())))
                 for g, t in zip(grads, ts, strict=True))
    return dv, dg


def reference_step(main_numeric, encoders, construct_invertible_mlp, LpSimCLRLoss, batch: int, widths: str):
    """A callable running one reference training step."""
    import torch

    d = N_S + N_M
    hidden = [d * 10, d * 50, d * 50, d * 50, d * 50, d * 10] if widths == "paper" else \
        [int(w) for w in widths.split(",")]
    g_x = construct_invertible_mlp(n=d, n_layers=3, cond_thresh_ratio=0.001, n_iter_cond_thresh=25000)
    g_t = construct_invertible_mlp(n=d, n_layers=3, cond_thresh_ratio=0.001, n_iter_cond_thresh=25000)
    for p in [*g_x.parameters(), *g_t.parameters()]:
        p.requires_grad = False
    f_x = encoders.get_mlp(n_in=d, n_out=N_S, layers=list(hidden))
    f_t = encoders.get_mlp(n_in=d, n_out=N_S, layers=list(hidden))
    params = list(f_x.parameters()) + list(f_t.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)
    loss = LpSimCLRLoss()

    def step():
        data = [torch.randn(batch, d) for _ in range(4)]  # not timed apart: cheap next to the step
        return main_numeric.train_step(data, lambda z: f_x(g_x(z)), lambda z: f_t(g_t(z)), loss, opt, params)

    return step


def mmjax_steps(scale: str, batch: int, widths: str, steps: int):
    """A callable running `steps` compiled mmjax training steps (blocking), the compile seconds and
    the compiled program's temporary memory in bytes (XLA's buffer assignment: the working set of
    one step, as the scan reuses it; arguments and outputs are the parameters and the world)."""
    import jax

    from mmjax.configs.numeric import base_config
    from mmjax.train.synthetic import make_run

    cfg = base_config(scale, batch=batch, widths=widths, steps=steps, log_every=1)
    static = cfg.to_static()
    run = make_run(static)
    params, world = cfg.to_params(), jax.jit(static.draw_world)(jax.random.key(0))
    start = time.perf_counter()
    train = jax.jit(run.train).lower(params, world, jax.random.key(1)).compile(run.compiler_options)
    compile_s = time.perf_counter() - start
    temp = train.memory_analysis().temp_size_in_bytes
    keys = iter(range(2, 10_000))
    return (lambda: jax.block_until_ready(train(params, world, jax.random.key(next(keys))))), compile_s, temp


def unblocked_temp(scale: str, batch: int, widths: str) -> int:
    """Temporary bytes of the same step with the LpSimCLR logits in one block of all B rows."""
    from mmjax.losses import contrastive

    block, contrastive.LSE_BLOCK = contrastive.LSE_BLOCK, batch
    try:
        return mmjax_steps(scale, batch, widths, 1)[2]
    finally:
        contrastive.LSE_BLOCK = block


def eval_inputs(n_fit: int, seed: int = 0):
    """Standardised fit/test features of both encodings and the 13 targets (each (2n, k))."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2 * n_fit, N_S + N_M))
    feats = []
    for _ in range(2):
        h = np.tanh(z @ rng.normal(size=(N_S + N_M, N_S)) / 2.0)
        mu, sd = h[:n_fit].mean(0), h[:n_fit].std(0)
        feats.append((h - mu) / sd)
    targets = [z[:, i:i + 1] for i in range(N_S)]
    targets += [z[:, :N_S], z[:, N_S:], rng.normal(size=(2 * n_fit, N_M))]
    return feats, targets


def reference_eval(main_numeric, feats, targets, n_fit: int) -> tuple[float, list[int]]:
    """Seconds of the reference's evaluation of 2 encodings x 13 targets; sklearn's epoch counts."""
    import warnings

    from sklearn import linear_model
    from sklearn.exceptions import DataConversionWarning
    from sklearn.metrics import r2_score
    from sklearn.neural_network import MLPRegressor

    # single targets are (n, 1) columns, as in the reference's own data dicts
    warnings.filterwarnings("ignore", category=DataConversionWarning)
    epochs, start = [], time.perf_counter()
    for h in feats:
        for y in targets:
            data = [h[:n_fit], y[:n_fit], h[n_fit:], y[n_fit:]]
            main_numeric.evaluate_prediction(linear_model.LinearRegression(n_jobs=-1), r2_score, *data)
            model = MLPRegressor(max_iter=10000)
            main_numeric.evaluate_prediction(model, r2_score, *data)
            epochs.append(int(model.n_iter_))
    return time.perf_counter() - start, epochs


def mmjax_eval(feats, targets, n_fit: int, max_epochs: int = 200):
    """A callable running mmjax's evaluation of the same work (blocking), and its compile seconds."""
    import jax
    import jax.numpy as jnp

    from mmjax.eval import identifiability as ident

    ys = [jnp.asarray(y, jnp.float32) for y in targets]
    hs = jnp.asarray(np.stack(feats), jnp.float32)

    def both(hs, ys, key):  # as mmjax.train.synthetic's evaluate: an SVD per encoder, one MLP loop
        fit, test = [y[:n_fit] for y in ys], [y[n_fit:] for y in ys]
        lin = jnp.stack([ident.linear_r2_targets(h[:n_fit], fit, h[n_fit:], test) for h in hs])
        return lin, ident.mlp_r2_encoders(key, hs[:, :n_fit], fit, hs[:, n_fit:], test, max_epochs=max_epochs)

    # compiled as a paper-scale run compiles its evaluation (mmjax.train.synthetic's compiler_options)
    from mmjax.configs.numeric import base_config
    from mmjax.train.synthetic import make_run

    options = make_run(base_config("paper").to_static()).compiler_options
    start = time.perf_counter()
    compiled = jax.jit(both).lower(hs, ys, jax.random.key(0)).compile(options)
    compile_s = time.perf_counter() - start
    return (lambda: jax.block_until_ready(compiled(hs, ys, jax.random.key(1)))), compile_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", type=Path, required=True, help="checkout of the reference repository")
    parser.add_argument("--sizes", default="paper6144,paper512,small256",
                        help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side (medians)")
    parser.add_argument("--steps", type=int, default=0, help="mmjax steps per timed call (0: by size)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--eval-fit", type=int, default=20_480, help="evaluation fit rows (0: skip it)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or args.repeats < 1 or args.eval_fit < 0:
        parser.error(f"--sizes={args.sizes!r} is invalid: allowed {', '.join(SIZES)}" if bad
                     else f"--repeats={args.repeats} is invalid: at least 1" if args.repeats < 1
                     else f"--eval-fit={args.eval_fit} is invalid: 0 (skip) or a positive row count")
    try:
        import torch
    except ImportError:
        raise SystemExit("vs_reference needs PyTorch (pip install torch); mmjax itself does not") from None
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = import_reference(args.ref.resolve())

    dv, dg = loss_parity(ref[3])
    print(f"LpSimCLR float64, B=64, d=10: |value - reference| = {dv:.2e}, max |grad - reference| = {dg:.2e}")
    # float64: the loss is O(10) and sums 65 exponentials per row, so rounding differences between the
    # two implementations stay near 1e-14; 1e-12 separates that from any difference of formula.
    if not (dv < 1e-12 and dg < 1e-12):
        print("  MISMATCH against the reference loss", file=sys.stderr)
        return 1

    print("\n| work | reference | mmjax | ratio | mmjax compile | mmjax step memory |")
    print("|---|---|---|---|---|---|")
    from mmjax.losses.contrastive import LSE_BLOCK

    notes = []
    for name in sizes:
        scale, batch, widths, label = SIZES[name]
        steps = args.steps or (3 if batch >= 4096 else 20 if batch >= 512 else 500)
        ref_step = reference_step(*ref, batch=batch, widths=widths)
        ours, compile_s, temp = mmjax_steps(scale, batch, widths, steps)
        ref_step(), ours()  # warm-up
        t_ref, t_ours = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ref_step()
            t_ref.append(time.perf_counter() - start)
            start = time.perf_counter()
            ours()
            t_ours.append((time.perf_counter() - start) / steps)
        r, m = statistics.median(t_ref), statistics.median(t_ours)
        fmt = lambda s: f"{s:.2f} s" if s >= 0.1 else f"{1e3 * s:.2f} ms"
        print(f"| {label} | {fmt(r)} | {fmt(m)} | {r / m:.1f}x | {compile_s:.1f} s | {temp / MiB:.0f} MiB |",
              flush=True)
        if batch > LSE_BLOCK:
            notes.append(f"{label}: {unblocked_temp(scale, batch, widths) / MiB:.0f} MiB of temporaries "
                         f"with the B x B logits in one block (the fused loss's blocks of "
                         f"{LSE_BLOCK} rows: {temp / MiB:.0f} MiB)")
    for note in notes:
        print(f"({note})")
    if args.eval_fit:
        feats, targets = eval_inputs(args.eval_fit)
        ours, compile_s = mmjax_eval(feats, targets, args.eval_fit)
        ours()  # warm-up
        start = time.perf_counter()
        ours()
        m = time.perf_counter() - start
        r, epochs = reference_eval(ref[0], feats, targets, args.eval_fit)
        print(f"| R² evaluation of one model ({args.eval_fit} fit + {args.eval_fit} test, 13 targets x 2 "
              f"encodings, linear + MLP probe) | {r:.1f} s | {m:.1f} s | {r / m:.1f}x | {compile_s:.1f} s |")
        print(f"(sklearn's MLPRegressor ran {min(epochs)}-{max(epochs)} epochs, median "
              f"{statistics.median(epochs):g}; mmjax's probe stops by the same rule, at 200 at most)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
