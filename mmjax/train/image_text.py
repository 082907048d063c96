"""A whole image–text run on rendered scenes — render, caption, train, probe — as one pure function.

`make_image_text_run(static)` returns `run(params, world, key) -> RunResult` like the numeric study's
`make_run`, so `mmjax.train.sweep` vmaps it over (setting, seed) jobs unchanged. Every training batch is
rendered and captioned on device inside the `lax.scan`; selection and perturbation are traced 0/1
masks over the five discrete attributes, so all settings of a panel share one compile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from mmjax.configs.image_text import LABELLED, TARGETS, ImageTextParams, ImageTextStatic  # noqa: F401
from mmjax.data.scenes import CONTINUOUS, TEMPLATES, draw_scenes
from mmjax.eval import identifiability as ident
from mmjax.eval.mcc import linear_mcc, mlp_mcc
from mmjax.losses.contrastive import simclr_cosine_loss
from mmjax.models.cnn import ConvEncoder
from mmjax.models.text import TextCNN
from mmjax.train.step import adam_clipped, init_state, make_train_step
from mmjax.train.synthetic import RunResult

Array = jax.Array
def make_image_text_run(static: ImageTextStatic):
    """Build `run(params, world, key) -> RunResult`; results hold (2 encoders, len(TARGETS)) scores:
    MCC for LABELLED targets and R² for CONTINUOUS ones, from the linear and the non-linear probe."""
    scene = static.scene
    enc_x = ConvEncoder(static.channels, static.hidden, static.enc_dim)
    enc_t = TextCNN(vocab_size=static.vocab_size, num_outputs=static.enc_dim)
    n_classes = max(*scene.n_values, len(TEMPLATES))

    def draw(key: Array, n: int, params: ImageTextParams):
        return draw_scenes(key, n, scene, params.selected, params.perturbed, params.p_change, static.max_len)

    def embed(p, images: Array, tokens: Array, mask: Array) -> tuple[Array, Array]:
        """Masked image and text encodings (the encoding size is the mask's count)."""
        return enc_x.apply(p["x"], images) * mask, enc_t.apply(p["t"], tokens) * mask

    def loss_fn(p, key: Array, params: ImageTextParams):
        _, images, tokens = draw(key, static.batch, params)
        hx, ht = embed(p, images, tokens, params.enc_mask)
        return simclr_cosine_loss(hx, ht, tau=params.tau, in_modal=params.in_modal), {}

    def optimizer(params: ImageTextParams):
        return adam_clipped(params.lr, params.clip_norm, static.steps, static.schedule)

    def train(params: ImageTextParams, key: Array):
        """Train both encoders on freshly rendered batches; returns (encoder params, loss per step)."""
        k_x, k_t, k_steps = jax.random.split(key, 3)
        p = {"x": enc_x.init(k_x, jnp.zeros((1, scene.image_size, scene.image_size, 3))),
             "t": enc_t.init(k_t, jnp.zeros((1, static.max_len), jnp.int32))}
        step = make_train_step(lambda q, k: loss_fn(q, k, params), optimizer(params))
        state, metrics = lax.scan(step, init_state(p, optimizer(params)),
                                  jax.random.split(k_steps, static.steps))
        return state.params, metrics["loss"]

    def evaluate(p, params: ImageTextParams, key: Array) -> tuple[Array, Array]:
        """Linear and non-linear probe scores, (2 encoders, len(TARGETS)) each, on fresh scenes."""
        k_data, k_probe = jax.random.split(key)
        n = static.eval_fit + static.eval_test
        factors, images, tokens = draw(k_data, n, params)
        hx, ht = embed(p, images, tokens, params.enc_mask)
        labels = jnp.stack([factors[f] for f in LABELLED])  # (6, n)
        values = jnp.stack([factors[f] for f in CONTINUOUS])  # (3, n)
        fit, test = slice(0, static.eval_fit), slice(static.eval_fit, n)

        def per_encoder(h: Array, key: Array) -> tuple[Array, Array]:
            # The loss compares directions, so the probes see the unit vectors the loss sees.
            h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-6)
            k_cls, k_reg = jax.random.split(key)

            def classify(y: Array, k: Array) -> tuple[Array, Array]:
                lin = linear_mcc(h[fit], y[fit], h[test], y[test], n_classes, steps=static.probe_steps)
                nl = mlp_mcc(k, h[fit], y[fit], h[test], y[test], n_classes, steps=static.probe_steps)
                return lin, nl

            def regress(y: Array, k: Array) -> tuple[Array, Array]:
                lin = ident.linear_r2(h[fit], y[fit], h[test], y[test])
                nl = ident.mlp_r2(k, h[fit], y[fit], h[test], y[test], max_epochs=static.probe_epochs)
                return lin, nl

            c_lin, c_nl = lax.map(lambda a: classify(*a), (labels, jax.random.split(k_cls, len(LABELLED))))
            r_lin, r_nl = lax.map(lambda a: regress(*a), (values, jax.random.split(k_reg, len(CONTINUOUS))))
            return jnp.concatenate([c_lin, r_lin]), jnp.concatenate([c_nl, r_nl])

        k_x, k_t = jax.random.split(k_probe)
        lin_x, nl_x = per_encoder(hx, k_x)
        lin_t, nl_t = per_encoder(ht, k_t)
        return jnp.stack([lin_x, lin_t]), jnp.stack([nl_x, nl_t])

    def run(params: ImageTextParams, world: Array, key: Array) -> RunResult:
        """Train both encoders on rendered batches, then probe every factor from each."""
        k_train, k_eval = jax.random.split(key)
        p, losses = train(params, k_train)
        lin, nl = evaluate(p, params, k_eval)
        curve = losses[: static.steps // static.log_every * static.log_every]
        return RunResult(loss_curve=curve.reshape(-1, static.log_every).mean(1), r2_linear=lin,
                         r2_nonlinear=nl)

    run.train = train
    run.evaluate = evaluate
    run.embed = embed
    return run
