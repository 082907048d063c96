"""A whole synthetic run — simulate, train with lax.scan, evaluate — as one pure function.

`make_run(static)` returns `run(params, world, key) -> RunResult`, where `static` fixes every shape
and `params` holds every value that may differ between vmapped runs (bias masks, lr, tau, ...).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mmjax import parallel
from mmjax.configs.synthetic import (  # noqa: F401 (the static config types, re-exported)
    EVAL_KINDS,
    LOSSES,
    NONLINEAR_PROBES,
    OUTPUT_NORMS,
    RunParams,
    RunStatic,
    target_names,
)
from mmjax.eval import downstream
from mmjax.eval import identifiability as ident
from mmjax.latent.simulator import Bias, World, observe_image, sample
from mmjax.losses.contrastive import lp_simclr_loss, lp_simclr_swapped_loss, simclr_cosine_loss
from mmjax.models.mlp import MLP
from mmjax.train.step import adam_clipped, init_state, make_train_step

Array = jax.Array
# Encoders with a hidden layer this wide or wider compile without YNNPACK fusions on CPU.
WIDE_ENCODER = 256


class RunResult(NamedTuple):
    """What one run returns (all arrays, so results of vmapped runs stack)."""

    loss_curve: Array  # (steps // log_every,) mean loss per logging window
    r2_linear: Array  # (2, n_targets): rows = image encoder, text encoder
    r2_nonlinear: Array  # downstream runs: row 0 holds downstream.METRICS, row 1 is unused (0)
    # (2, n_targets) R² of static.compare_probe on the same features, (2, 0) without one
    r2_compare: Array = np.zeros((2, 0), np.float32)


def batch_standardize(h: Array, eps: float = 1e-6) -> Array:
    """Zero-mean, unit-variance columns within the batch (the cpu-scale stabiliser)."""
    mean = jnp.mean(h, 0, keepdims=True)
    return (h - mean) * lax.rsqrt(jnp.var(h, 0, keepdims=True) + eps)


def batch_whiten(h: Array, mask: Array, eps: float = 1e-4) -> Array:
    """Cholesky-whiten the used columns within the batch: zero mean, identity covariance."""
    h = h - jnp.mean(h, 0, keepdims=True)
    cov = h.T @ h / h.shape[0] + jnp.diag(eps + (1.0 - mask))
    chol = jnp.linalg.cholesky(cov)
    return jax.scipy.linalg.solve_triangular(chol, h.T, lower=True).T * mask


def _targets(smp, bias: Bias, with_tilde: bool) -> tuple[list[Array], list[Array]]:
    """The targets in `target_names` order, each (n, k) at its own width, and their (k,) output masks:
    every s_i (and s̃_i) alone, the unbiased block (s masked to θ minus ρ), m_x and m_t."""
    scalars = jnp.concatenate([smp.s, smp.s_tilde], 1) if with_tilde else smp.s
    ys = [scalars[:, i:i + 1] for i in range(scalars.shape[1])] + [smp.s * bias.theta * (1 - bias.rho),
                                                                    smp.m_x, smp.m_t]
    ones = lambda k: jnp.ones((k,), jnp.float32)
    masks = [ones(1)] * scalars.shape[1] + [bias.theta * (1 - bias.rho), ones(smp.m_x.shape[1]),
                                            ones(smp.m_t.shape[1])]
    return ys, masks


def make_run(static: RunStatic):
    """Build the pure function `run(params, world, key) -> RunResult` for one static config."""
    shape = static.shape
    enc_x = MLP(static.widths_x, static.enc_dim)
    enc_t = MLP(static.widths_t, static.enc_dim)

    def embed(p, x: Array, t: Array, mask: Array, groups: int = 1) -> tuple[Array, Array]:
        """Masked encodings; the output norm standardises each of `groups` equal row blocks on its
        own (independent batches encoded in one call, for larger matmuls)."""
        hx = enc_x.apply(p["x"], x) * mask
        ht = enc_t.apply(p["t"], t) * mask
        if static.output_norm == "none":
            return hx, ht
        if static.output_norm == "batch_standardize":
            norm = lambda h: batch_standardize(h) * mask
        else:
            norm = lambda h: batch_whiten(h, mask)
        per_group = lambda h: jax.vmap(norm)(h.reshape(groups, -1, h.shape[-1])).reshape(h.shape)
        return per_group(hx), per_group(ht)

    def loss_fn(p, params: RunParams, world: World, key: Array):
        b = static.batch
        if static.loss == "lp_simclr":
            # Both independent batches come from one draw and go through each encoder in one call.
            both = sample(key, world, params.bias, shape, 2 * b)
            hx, ht = embed(p, both.x, both.t, params.enc_mask, groups=2)
            a, b1, a2, b2 = hx[:b], ht[:b], hx[b:], ht[b:]
            # swap_batches: the second batch's pairs as anchors too (same expected loss, twice the
            # anchors for the same four encoder passes and the same two distance matrices).
            lp = lp_simclr_swapped_loss if static.swap_batches else lp_simclr_loss
            loss = lp(a, b1, a2, b2, tau=params.tau, alpha=params.alpha)
        else:
            one = sample(key, world, params.bias, shape, b)
            a, b1 = embed(p, one.x, one.t, params.enc_mask)
            loss = simclr_cosine_loss(a, b1, tau=params.tau)
        return loss, {}

    def evaluate(p, params: RunParams, world: World, key: Array) -> tuple[Array, Array, Array]:
        """(2, n_targets) R² of the linear probe, the non-linear probe and compare_probe ((2, 0) if none)."""
        k_data, k_probe = jax.random.split(key)
        n = static.eval_fit + static.eval_test
        smp = sample(k_data, world, params.bias, shape, n)
        ys, masks = _targets(smp, params.bias, static.eval_tilde)
        enc = (enc_x.apply(p["x"], smp.x) * params.enc_mask, enc_t.apply(p["t"], smp.t) * params.enc_mask)
        fit, test = slice(0, static.eval_fit), slice(static.eval_fit, n)
        ys_fit, ys_test = [y[fit] for y in ys], [y[test] for y in ys]
        probes = [static.nonlinear_probe] + ([static.compare_probe] if static.compare_probe else [])
        hs_fit, hs_test = zip(*(ident.standardize(h[fit], h[test]) for h in enc), strict=True)
        hs_fit, hs_test = jnp.stack(hs_fit), jnp.stack(hs_test)
        lin = jnp.stack([ident.linear_r2_targets(a, ys_fit, b, ys_test, masks)
                         for a, b in zip(hs_fit, hs_test, strict=True)])
        kw = dict(max_epochs=static.probe_epochs, kernel_ridge_max=static.kernel_ridge_max,
                  n_landmarks=static.nystrom_landmarks)
        nl = [ident.nonlinear_r2_encoders(probe, k_probe, hs_fit, ys_fit, hs_test, ys_test, masks, **kw)
              for probe in probes]
        compare = nl[1] if static.compare_probe else jnp.zeros((2, 0))
        return lin, nl[0], compare

    def evaluate_downstream(p, params: RunParams, world: World, key: Array):
        """ID/OOD probes on the image representation (standardised with fit-split statistics)."""
        k_fit, k_id, k_ood, k_shift, k_probe = jax.random.split(key, 5)
        fit = sample(k_fit, world, params.bias, shape, static.eval_fit)
        test = sample(k_id, world, params.bias, shape, static.eval_test)
        ood = sample(k_ood, world, params.bias, shape, static.eval_test)
        x_ood = observe_image(world, downstream.ood_shift(k_shift, ood.s), ood.m_x)
        enc = lambda x: enc_x.apply(p["x"], x) * params.enc_mask
        h_fit, h_id = ident.standardize(enc(fit.x), enc(test.x))
        _, h_ood = ident.standardize(enc(fit.x), enc(x_ood))
        lin, mlp = downstream.downstream_metrics(k_probe, h_fit, fit.s, h_id, test.s, h_ood, ood.s)
        return (jnp.stack([lin, jnp.zeros_like(lin)]), jnp.stack([mlp, jnp.zeros_like(mlp)]),
                jnp.zeros((2, 0)))

    def optimizer(params: RunParams):
        return adam_clipped(params.lr, params.clip_norm, static.steps, static.schedule)

    def init(params: RunParams, key: Array):
        """Fresh TrainState and the per-step keys of one run."""
        kx, kt, k_steps = jax.random.split(key, 3)
        p = {"x": enc_x.init(kx, jnp.zeros((1, shape.x_dim))),
             "t": enc_t.init(kt, jnp.zeros((1, shape.t_dim)))}
        return init_state(p, optimizer(params)), jax.random.split(k_steps, static.steps)

    def step(state, params: RunParams, world: World, key: Array):
        """One train step of one run (the body of train's scan)."""
        loss = lambda q, k: loss_fn(q, params, world, k)
        return make_train_step(loss, optimizer(params))(state, key)

    def train(params: RunParams, world: World, key: Array):
        """Train both encoders; returns (encoder params, loss per step)."""
        state, keys = init(params, key)
        state, metrics = lax.scan(lambda s, k: step(s, params, world, k), state, keys)
        return state.params, metrics["loss"]

    def run(params: RunParams, world: World, key: Array) -> RunResult:
        """Simulate, train and evaluate one configuration."""
        k_train, k_eval = jax.random.split(key)
        p, losses = train(params, world, k_train)
        if static.eval_kind == "downstream":
            r2_lin, r2_nl, r2_cmp = evaluate_downstream(p, params, world, k_eval)
        else:
            r2_lin, r2_nl, r2_cmp = evaluate(p, params, world, k_eval)
        curve = losses[: static.steps // static.log_every * static.log_every]
        curve = curve.reshape(-1, static.log_every).mean(1)
        return RunResult(loss_curve=curve, r2_linear=r2_lin, r2_nonlinear=r2_nl, r2_compare=r2_cmp)

    run.init = init
    # Options to compile run (or run.train, run.evaluate) with: on CPU, wide encoders (the paper's
    # 750) train and evaluate faster on XLA's own dot kernels, narrow ones (64) on YNNPACK's (see
    # parallel.cpu_compiler_options and benchmarks/README.md).
    run.compiler_options = parallel.cpu_compiler_options(
        ynn_fusions=max(static.widths_x + static.widths_t) < WIDE_ENCODER)
    run.step = step
    run.train = train
    run.evaluate = evaluate
    run.embed = embed
    return run
