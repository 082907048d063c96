"""One run of the modality-structures study on rendered scenes — render, caption, train, evaluate — as a
pure function of traced parameters.

`make_structure_run(static)` returns `run(params, world, key) -> StructureResult` like the image–text
study's `make_image_text_run`, so `mmjax.train.sweep` vmaps it over (setting, seed) jobs: the bias masks,
the three regularizer weights, `br_t`, `sep_tau`, τ and the evaluation split are traced, so every method
and bias setting of a study shares one compile. Each training batch is rendered on device inside the
`lax.scan`. The objective is L_Con (Jiang et al., arXiv 2303.05952, Eq. 1, with a fixed temperature) on
the shared heads plus Σ_r w_r·L_r; L_Sep reads the independent heads (their Sec. 4.1), L_Br and L_GC the
shared features of the augmented view (Sec. 4.2, 4.3). The evaluation probes every factor from every
feature of docs/structures.md on fresh scenes of the val or the test stream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mmjax.configs.structure_scenes import (
    GAP,
    IMAGE_ONLY,
    LABELLED,
    RETRIEVAL,
    StructureParams,
    StructureResult,
    StructureStatic,
)
from mmjax.data.augment import color_jitter, random_swap, word_dropout
from mmjax.data.scenes import DISCRETE, TEMPLATES, caption_tokens, draw_scenes
from mmjax.eval import identifiability as ident
from mmjax.eval.gap import _gap_arrays
from mmjax.eval.mcc import mcc
from mmjax.eval.probes import _draw_k_shot, _logits, fit_logistic_regression
from mmjax.eval.retrieval import retrieval_recall
from mmjax.losses import structure
from mmjax.losses.contrastive import _normalize, con_loss
from mmjax.models.cnn import ConvEncoder
from mmjax.models.text import TextCNN
from mmjax.train.step import adam_clipped, init_state, make_train_step

Array = jax.Array


def prompt_tokens(static: StructureStatic) -> tuple[np.ndarray, list[slice]]:
    """Zero-shot prompts: for each attribute, value and template, the caption naming only that value.

    Returns the token rows (Σ_a n_a · n_templates, max_len), ordered (attribute, value, template), and
    each attribute's row slice.
    """
    scene, rows, spans = static.scene, [], []
    for a, attr in enumerate(DISCRETE):
        n_a = scene.n_values[a]
        values = np.repeat(np.arange(n_a), len(TEMPLATES))
        factors = {f: np.zeros(len(values), np.int32) for f in DISCRETE}
        factors[attr] = values.astype(np.int32)
        factors["template"] = np.tile(np.arange(len(TEMPLATES)), n_a).astype(np.int32)
        only = np.asarray([f == attr for f in DISCRETE], np.int32)
        tokens, _ = caption_tokens(jax.random.key(0), factors, scene, only, np.zeros(5, np.int32), 0.0,
                                   static.max_len)
        start = sum(len(r) for r in rows)
        rows.append(np.asarray(tokens))
        spans.append(slice(start, start + len(values)))
    return np.concatenate(rows), spans


def objective(emb: dict[str, Array], params: StructureParams) -> tuple[Array, Array]:
    """L_Con + Σ_r w_r·L_r with traced weights, and the unweighted terms (TERMS order).

    `emb` holds the shared features `img`, `txt`, their augmented views `img_aug`, `txt_aug`, and the
    independent features `img_ind`, `txt_ind`, `img_ind_aug`, `txt_ind_aug`. Every term is computed
    whatever its weight (they cost a few B×B products), so all methods share one program.
    """
    con = con_loss(emb["img"], emb["txt"], emb["img_aug"], emb["txt_aug"], -jnp.log(params.tau))
    sep, _ = structure.sep_loss(emb["img"], emb["txt"], emb["img_ind"], emb["txt_ind"], emb["img_ind_aug"],
                                emb["txt_ind_aug"], tau=params.sep_tau)
    br = structure.bridge_loss(emb["img"], emb["txt"], emb["img_aug"], t=params.br_t)
    gc, _ = structure.gc_loss(emb["img"], emb["txt"], emb["img_aug"], emb["txt_aug"])
    regs = jnp.stack([sep, br, gc])
    return con + jnp.dot(params.weights, regs), jnp.concatenate([con[None], regs])


def make_structure_run(static: StructureStatic):
    """Build `run(params, world, key) -> StructureResult` (fields documented on StructureResult)."""
    scene, d = static.scene, static.embed_dim
    enc_x = ConvEncoder(static.channels, static.hidden, 2 * d)
    enc_t = TextCNN(vocab_size=static.vocab_size, num_outputs=2 * d, embed_dim=static.text_embed,
                    channels=static.text_channels)
    prompts, spans = prompt_tokens(static)
    n_classes = {f: n for f, n in zip(DISCRETE, scene.n_values, strict=True)} | {"template": len(TEMPLATES)}

    def draw(key: Array, n: int, params: StructureParams):
        return draw_scenes(key, n, scene, params.selected, params.perturbed, params.p_change, static.max_len)

    def heads(out: Array) -> tuple[Array, Array]:
        """(shared, independent) halves of an encoder's output."""
        return out[:, :d], out[:, d:]

    def augment(key: Array, images: Array, tokens: Array) -> tuple[Array, Array]:
        """The second view: brightness/contrast jitter and pixel noise; word dropout and swaps."""
        k_j, k_n, k_d, k_s = jax.random.split(key, 4)
        images = color_jitter(k_j, images, brightness=static.brightness, contrast=static.contrast,
                              saturation=0.0)
        images = jnp.clip(images + static.noise * jax.random.normal(k_n, images.shape), 0, 1)
        tokens = random_swap(k_s, word_dropout(k_d, tokens, static.word_dropout), static.swap_prob)
        return images, tokens

    def loss_fn(p, key: Array, params: StructureParams):
        k_data, k_aug = jax.random.split(key)
        _, images, tokens = draw(k_data, static.batch, params)
        images_aug, tokens_aug = augment(k_aug, images, tokens)
        b = static.batch
        # Both views in one call per tower.
        zx, ux = heads(enc_x.apply(p["x"], jnp.concatenate([images, images_aug])))
        zt, ut = heads(enc_t.apply(p["t"], jnp.concatenate([tokens, tokens_aug])))
        emb = {"img": zx[:b], "img_aug": zx[b:], "img_ind": ux[:b], "img_ind_aug": ux[b:],
               "txt": zt[:b], "txt_aug": zt[b:], "txt_ind": ut[:b], "txt_ind_aug": ut[b:]}
        loss, terms = objective(emb, params)
        return loss, {"terms": terms}

    def train(params: StructureParams, key: Array):
        """Train both encoders; returns (encoder params, total loss per step, loss terms per step)."""
        k_x, k_t, k_steps = jax.random.split(key, 3)
        p = {"x": enc_x.init(k_x, jnp.zeros((1, scene.image_size, scene.image_size, 3))),
             "t": enc_t.init(k_t, jnp.zeros((1, static.max_len), jnp.int32))}
        opt = adam_clipped(params.lr, params.clip_norm, static.steps, static.schedule)
        step = make_train_step(lambda q, k: loss_fn(q, k, params), opt)
        state, metrics = lax.scan(step, init_state(p, opt), jax.random.split(k_steps, static.steps))
        return state.params, metrics["loss"], metrics["terms"]

    def features(p, images: Array, tokens: Array) -> tuple[Array, Array]:
        """(FEATURES, n, 2d) unit features, the shared and independent ones zero-padded to 2d; and the
        shared image and text features (n, d)."""
        zx, ux = (_normalize(h) for h in heads(enc_x.apply(p["x"], images)))
        zt, ut = (_normalize(h) for h in heads(enc_t.apply(p["t"], tokens)))
        pad = lambda h: jnp.pad(h, ((0, 0), (0, d)))
        both = lambda z, u: jnp.concatenate([z, u], -1)
        return jnp.stack([pad(zx), pad(ux), both(zx, ux), pad(zt), pad(ut), both(zt, ut)]), (zx, zt)

    def classify(feats: Array, y: Array, n_c: int, key: Array) -> tuple[Array, Array, Array]:
        """Test accuracy and MCC of logistic regression on all fit rows, and k-shot test accuracy."""
        fit, test = slice(0, static.eval_fit), slice(static.eval_fit, None)
        x_fit, x_test = ident.standardize(feats[fit], feats[test])
        w = fit_logistic_regression(x_fit, y[fit], n_c, steps=static.probe_steps)
        pred = jnp.argmax(_logits(w, x_test), -1)
        idx = _draw_k_shot(key, y[fit], n_c, static.k_shot)
        xk_fit, xk_test = ident.standardize(feats[fit][idx], feats[test])
        wk = fit_logistic_regression(xk_fit, y[fit][idx], n_c, steps=static.probe_steps)
        pred_k = jnp.argmax(_logits(wk, xk_test), -1)
        return jnp.mean(pred == y[test]), mcc(y[test], pred, n_c), jnp.mean(pred_k == y[test])

    def zero_shot(p, zx: Array, factors: dict[str, Array]) -> Array:
        """Top-1 per attribute: the image's nearest class prompt (mean over the templates)."""
        zp = _normalize(heads(enc_t.apply(p["t"], jnp.asarray(prompts)))[0])
        acc = []
        for attr, span, n_a in zip(DISCRETE, spans, scene.n_values, strict=True):
            cls = _normalize(zp[span].reshape(n_a, len(TEMPLATES), d).mean(1))
            acc.append(jnp.mean(jnp.argmax(zx @ cls.T, -1) == factors[attr]))
        return jnp.stack(acc)

    def evaluate(p, params: StructureParams, key: Array) -> StructureResult:
        """Probes, zero-shot, retrieval and gap on fresh scenes of the split's stream (no loss curve)."""
        k_data, k_probe = jax.random.split(jax.random.fold_in(key, params.split))
        n = static.eval_fit + static.eval_test
        factors, images, tokens = draw(k_data, n, params)
        feats, (zx, zt) = features(p, images, tokens)
        test = slice(static.eval_fit, None)
        keys = jax.random.split(k_probe, len(LABELLED))
        acc, mccs, kshot = [], [], []
        for target, k in zip(LABELLED, keys, strict=True):
            a, m, ks = jax.vmap(lambda f, k=k, t=target: classify(f, factors[t], n_classes[t], k))(feats)
            acc.append(a), mccs.append(m), kshot.append(ks)
        fit = slice(0, static.eval_fit)
        r2 = [jax.vmap(lambda f, t=t: ident.linear_r2(f[fit], factors[t][fit], f[test],
                                                      factors[t][test]))(feats) for t in IMAGE_ONLY]
        acc, mccs, kshot, r2 = (jnp.stack(v, 1) for v in (acc, mccs, kshot, r2))
        rec = retrieval_recall(zx[test], zt[test], ks=(1, 5, 10))
        gap = _gap_arrays(zx[test], zt[test])
        test_factors = {f: factors[f][test] for f in DISCRETE}
        return StructureResult(
            loss_curve=jnp.zeros(0), r2_linear=jnp.concatenate([acc, r2], 1),
            r2_nonlinear=jnp.concatenate([mccs, r2], 1), kshot=kshot,
            zeroshot=zero_shot(p, zx[test], test_factors), retrieval=jnp.stack([rec[m] for m in RETRIEVAL]),
            gap=jnp.stack([gap[g] for g in GAP]), terms=jnp.zeros(4))

    def run(params: StructureParams, world: Array, key: Array) -> StructureResult:
        """Train, then evaluate on the params' split."""
        k_train, k_eval = jax.random.split(key)
        p, losses, terms = train(params, k_train)
        res = evaluate(p, params, k_eval)
        w = static.log_every
        curve = losses[: static.steps // w * w].reshape(-1, w).mean(1)
        return res._replace(loss_curve=curve, terms=terms[-w:].mean(0))

    run.train, run.evaluate, run.features = train, evaluate, features
    return run
