"""The two-tower (CLIP-style) trainer: model, optimiser, the sharded train step, data and evaluation.

One `jax.jit`-compiled step runs over a mesh whose data axis spans every device of every process: the
batch is sharded along it, the towers run under GSPMD, and the contrastive loss runs inside
`jax.shard_map`, scoring each device's rows against embeddings gathered from all devices. The state is
created replicated (`jit(init, out_shardings=...)`) and donated to each step. Per-step randomness is
`fold_in(rng, step)`, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from mmjax import parallel
from mmjax.configs.clip import ClipConfig
from mmjax.data.augment import AugmentConfig, two_views
from mmjax.data.pipeline import IMAGE_KEY, TOKENS_KEY
from mmjax.eval.evaluators import batched, make_evaluators, run_evaluators
from mmjax.losses import structure
from mmjax.losses.contrastive import clamped_scale, clip_loss, con_loss, siglip_loss, simclr_cosine_loss
from mmjax.models.two_tower import TwoTower, build_two_tower
from mmjax.train.step import init_state, make_train_step
from mmjax.train.trainer import Trainer

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(cfg: ClipConfig, vocab_size: int) -> TwoTower:
    """The two-tower model of a config, for a tokenizer with `vocab_size` ids."""
    dtype = DTYPES[cfg.dtype]
    return build_two_tower(cfg.image_tower, cfg.text_tower,
                           image_kwargs={**cfg.image_kwargs(), "dtype": dtype},
                           text_kwargs={**cfg.text_kwargs(vocab_size), "dtype": dtype},
                           embed_dim=cfg.embed_dim, independent_heads=cfg.sep_weight > 0)


def make_optimizer(cfg: ClipConfig) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, global-norm clipping; no decay on biases/norms/scalars."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.steps)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                       optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask))


def structure_terms(cfg: ClipConfig, emb: Mapping[str, Array], key: Array | None,
                    axis_name: str | None = None) -> dict[str, Array]:
    """The structure regularizers switched on in `cfg` (Jiang et al., arXiv 2303.05952), unweighted, as
    `reg/<name>`, on the local rows of a batch.

    `emb` holds the features `img`, `txt` and their augmented view `img_aug`, `txt_aug` (L_Br, L_GC), and
    with L_Sep the independent features `img_ind`, `txt_ind`, `img_ind_aug`, `txt_ind_aug`. `key` (raw
    key data) draws the bridge position when `cfg.br_sample_t`.
    """
    img, txt = emb["img"], emb["txt"]
    terms = {}
    if cfg.sep_weight > 0:
        terms["reg/sep"], _ = structure.sep_loss(
            img, txt, emb["img_ind"], emb["txt_ind"], emb["img_ind_aug"], emb["txt_ind_aug"],
            tau=cfg.sep_tau, axis_name=axis_name)
    if cfg.br_weight > 0:
        k = jax.random.wrap_key_data(key) if cfg.br_sample_t else None
        terms["reg/br"] = structure.bridge_loss(img, txt, emb["img_aug"], t=cfg.br_t, key=k,
                                                stop_gradient_bridge=cfg.br_stop_gradient,
                                                axis_name=axis_name)
    if cfg.gc_weight > 0:
        terms["reg/gc"], _ = structure.gc_loss(img, txt, emb["img_aug"], emb["txt_aug"], axis_name=axis_name)
    return terms


def weighted_regularizers(cfg: ClipConfig, terms: Mapping[str, Array]) -> Array:
    """Σ_r weight_r · reg/<r> over the regularizers switched on."""
    return sum(getattr(cfg, f"{r}_weight") * terms[f"reg/{r}"] for r in cfg.regularizers)


def make_objective(cfg: ClipConfig) -> Callable:
    """`objective(emb, scalars, axis_name=None) -> (loss, terms)`: the contrastive loss of `cfg.loss`
    plus each weighted structure regularizer, on the local rows of a batch.

    `emb` holds `img`, `txt` (first view) and, when `cfg.embeds_second_view`, `img_aug`, `txt_aug`; with
    L_Sep also `img_ind`, `txt_ind`, `img_ind_aug`, `txt_ind_aug`. `scalars` holds `log_scale`,
    `logit_bias` and `key` (raw key data, for a sampled bridge position). `terms` has each weighted
    regularizer's unweighted value under `reg/<name>` and the contrastive loss under `reg/contrastive`.
    """

    def objective(emb: Mapping[str, Array], scalars: Mapping[str, Array], axis_name: str | None = None):
        img, txt, log_scale = emb["img"], emb["txt"], scalars["log_scale"]
        if cfg.loss == "clip":
            loss = clip_loss(img, txt, log_scale, axis_name=axis_name)
        elif cfg.loss == "con":
            loss = con_loss(img, txt, emb["img_aug"], emb["txt_aug"], log_scale, axis_name=axis_name)
        elif cfg.loss == "siglip":  # every loss sees the scale clamped at 100, as CLIP's does
            loss = siglip_loss(img, txt, jnp.log(clamped_scale(log_scale)), scalars["logit_bias"],
                               axis_name=axis_name)
        else:  # SimCLR-style: the temperature is 1 / the learnable scale
            loss = simclr_cosine_loss(img, txt, tau=1.0 / clamped_scale(log_scale), axis_name=axis_name)
        if not cfg.regularizers:
            return loss, {}
        terms = {"reg/contrastive": loss, **structure_terms(cfg, emb, scalars["key"], axis_name)}
        return loss + weighted_regularizers(cfg, terms), terms

    return objective


def make_loss(cfg: ClipConfig, model: TwoTower, mesh: Mesh) -> Callable:
    """`loss(variables, key, images, tokens) -> (loss, aux)` with the whole objective in shard_map."""
    aug = AugmentConfig()
    sharded = parallel.sharded_loss(make_objective(cfg), mesh, n_sharded=1, n_replicated=1)

    def loss_fn(variables: Any, key: Array, images: Array, tokens: Array):
        k_aug, k_loss = jax.random.split(key)
        if cfg.two_views:
            (img_a, img_b), (tok_a, tok_b) = two_views(k_aug, images, tokens, aug)
        else:
            img_a, tok_a = images, tokens
        out = model.apply(variables, img_a, tok_a)
        emb = {k: out[k] for k in ("img", "txt", "img_ind", "txt_ind") if k in out}
        if cfg.embeds_second_view:
            out_b = model.apply(variables, img_b, tok_b)
            emb.update({f"{k}_aug": out_b[k] for k in ("img", "txt", "img_ind", "txt_ind") if k in out_b})
        params = variables["params"]
        scalars = {"log_scale": params["logit_scale"], "logit_bias": params["logit_bias"],
                   "key": jax.random.key_data(k_loss)}
        loss, terms = sharded(emb, scalars)
        return loss, {"logit_scale": out["logit_scale"], **terms}

    return loss_fn


def make_trainer(cfg: ClipConfig, vocab_size: int, mesh: Mesh | None = None,
                 for_training: bool = True) -> Trainer:
    """Model, optimiser and the jit-compiled (sharded, donated) init and train step of a config."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    if for_training:
        parallel.check_batch_divisible(cfg.batch, mesh)
    if for_training and cfg.accum_steps > 1:
        parallel.check_batch_divisible(cfg.batch // cfg.accum_steps, mesh, "batch / accum_steps")
    model = build_model(cfg, vocab_size)
    optimizer = make_optimizer(cfg)
    loss_fn = make_loss(cfg, model, mesh)
    train_step = make_train_step(loss_fn, optimizer, cfg.accum_steps)
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    def init(key: Array) -> dict:
        k_params, k_rng = jax.random.split(key)
        images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
        tokens = jnp.zeros((1, cfg.max_len), jnp.int32)
        variables = model.init(k_params, images, tokens)
        return {"train": init_state(variables, optimizer), "rng": jax.random.key_data(k_rng)}

    def step(state: dict, batch: Mapping[str, Array]) -> tuple[dict, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["train"].step)
        train, metrics = train_step(state["train"], key, batch[IMAGE_KEY], batch[TOKENS_KEY])
        return {"train": train, "rng": state["rng"]}, metrics

    batch_shardings = {IMAGE_KEY: data, TOKENS_KEY: data}
    enc_i, enc_t = _encoders(model)
    return Trainer(cfg=cfg, model=model, mesh=mesh, optimizer=optimizer,
                   init=jax.jit(init, out_shardings=repl),
                   step=jax.jit(step, in_shardings=(repl, batch_shardings), out_shardings=(repl, repl),
                                donate_argnums=0),
                   predict_fns={"embed_image": enc_i, "embed_text": enc_t},
                   batch_keys=(IMAGE_KEY, TOKENS_KEY))


@functools.lru_cache(maxsize=8)
def _encoders(model: TwoTower) -> tuple[Callable, Callable]:
    """Jitted image and text encoders of a model, built once per model (modules hash by value)."""
    return (jax.jit(lambda v, x: model.apply(v, x, method=TwoTower.encode_image)),
            jax.jit(lambda v, x: model.apply(v, x, method=TwoTower.encode_text)))


def embed_all(model: TwoTower, variables: Any, images: np.ndarray | None, tokens: np.ndarray | None,
              batch: int = 256) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Unit-norm image and text embeddings of whole arrays, `batch` rows at a time."""
    enc_i, enc_t = _encoders(model)
    variables = jax.device_put(variables)  # once, not once per batch
    run = lambda fn, x: None if x is None else batched(fn, variables, x, batch=batch)
    return run(enc_i, images), run(enc_t, tokens)


def evaluate(model: TwoTower, variables: Any, eval_data: Mapping[str, np.ndarray],
             probe_data: Mapping[str, np.ndarray] | None = None,
             tasks: Mapping[str, np.ndarray | None] | None = None, shots: int = 5,
             seed: int = 0) -> dict[str, float]:
    """Retrieval R@1/5/10, modality-gap metrics, and per labelled task zero-shot and linear/k-shot probes.

    `tasks` maps a label column of `eval_data` (and `probe_data`, the probes' training split) to its
    tokenized prompts (n_classes, n_templates, L), or to None for probes only. The task "label" reports
    as `zeroshot/top1`, `probe/linear`, ...; any other task `t` as `zeroshot/t/top1`, `probe/t/linear`.
    (The evaluators "retrieval", "gap", "zeroshot", "probe" of `mmjax.eval.evaluators`, which the loop
    runs through the trainer's predict functions.)
    """
    enc_i, enc_t = _encoders(model)
    data = types.SimpleNamespace(eval=eval_data, probe=probe_data, tasks=dict(tasks or {}))
    evaluators = make_evaluators(("retrieval", "gap", "zeroshot", "probe"),
                                 {"embed_image": enc_i, "embed_text": enc_t}, data, seed=seed, shots=shots)
    return run_evaluators(evaluators, variables)
