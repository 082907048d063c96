"""The two-tower (CLIP-style) trainer: model, optimiser, the sharded train step, data and evaluation.

One `jax.jit`-compiled step runs over a mesh whose data axis spans every device of every process: the
batch is sharded along it, the towers run under GSPMD, and the contrastive loss runs inside
`jax.shard_map`, scoring each device's rows against embeddings gathered from all devices. The state is
created replicated (`jit(init, out_shardings=...)`) and donated to each step. Per-step randomness is
`fold_in(rng, step)`, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
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
from mmjax.eval import gap, probes, retrieval, zeroshot
from mmjax.losses.contrastive import clamped_scale, clip_loss, con_loss, siglip_loss, simclr_cosine_loss
from mmjax.models.two_tower import TwoTower, build_two_tower
from mmjax.train.step import init_state, make_train_step

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(cfg: ClipConfig, vocab_size: int) -> TwoTower:
    """The two-tower model of a config, for a tokenizer with `vocab_size` ids."""
    dtype = DTYPES[cfg.dtype]
    return build_two_tower(cfg.image_tower, cfg.text_tower,
                           image_kwargs={**cfg.image_kwargs(), "dtype": dtype},
                           text_kwargs={**cfg.text_kwargs(vocab_size), "dtype": dtype},
                           embed_dim=cfg.embed_dim)


def make_optimizer(cfg: ClipConfig) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, global-norm clipping; no decay on biases/norms/scalars."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.steps)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                       optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask))


def make_loss(cfg: ClipConfig, model: TwoTower, mesh: Mesh) -> Callable:
    """`loss(variables, key, images, tokens) -> (loss, aux)` with the contrastive term in shard_map."""
    aug = AugmentConfig()
    n_emb = 4 if cfg.loss == "con" else 2
    n_scalar = {"clip": 1, "con": 1, "siglip": 2, "simclr": 1}[cfg.loss]

    def contrastive(*args, axis_name=None):
        emb, scalars = args[:n_emb], args[n_emb:]
        if cfg.loss == "clip":
            return clip_loss(*emb, scalars[0], axis_name=axis_name)
        if cfg.loss == "con":
            return con_loss(*emb, scalars[0], axis_name=axis_name)
        # Every loss sees the scale clamped at 100, as CLIP's does.
        if cfg.loss == "siglip":
            return siglip_loss(*emb, jnp.log(clamped_scale(scalars[0])), scalars[1], axis_name=axis_name)
        # SimCLR-style: the temperature is 1 / the learnable scale.
        return simclr_cosine_loss(*emb, tau=1.0 / clamped_scale(scalars[0]), axis_name=axis_name)

    sharded = parallel.sharded_loss(contrastive, mesh, n_emb, n_scalar)

    def loss_fn(variables: Any, key: Array, images: Array, tokens: Array):
        if cfg.two_views:
            (img_a, img_b), (tok_a, tok_b) = two_views(key, images, tokens, aug)
        else:
            img_a, tok_a = images, tokens
        out = model.apply(variables, img_a, tok_a)
        emb = [out["img"], out["txt"]]
        if cfg.loss == "con":
            out_b = model.apply(variables, img_b, tok_b)
            emb += [out_b["img"], out_b["txt"]]
        log_scale = variables["params"]["logit_scale"]
        scalars = [log_scale, variables["params"]["logit_bias"]] if cfg.loss == "siglip" else [log_scale]
        loss = sharded(*emb, *scalars)
        return loss, {"logit_scale": out["logit_scale"]}

    return loss_fn


@dataclasses.dataclass
class Trainer:
    """Compiled init and step of one config on one mesh."""

    cfg: ClipConfig
    model: TwoTower
    mesh: Mesh
    optimizer: optax.GradientTransformation
    init: Callable[[Array], dict]
    step: Callable[[dict, Mapping[str, Array]], tuple[dict, dict]]

    def abstract_state(self) -> Any:
        """Shapes, dtypes and shardings of the state (the restore target of a checkpoint)."""
        return jax.eval_shape(self.init, jax.random.key(0))


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
    return Trainer(cfg=cfg, model=model, mesh=mesh, optimizer=optimizer,
                   init=jax.jit(init, out_shardings=repl),
                   step=jax.jit(step, in_shardings=(repl, batch_shardings), out_shardings=(repl, repl),
                                donate_argnums=0))


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

    def run(fn, x):
        if x is None:
            return None
        # Pad the last batch to full size, so every call has one shape and compiles once.
        padded = np.concatenate([x, np.repeat(x[-1:], -len(x) % batch, 0)]) if len(x) > batch else x
        out = [np.asarray(fn(variables, padded[i: i + batch])) for i in range(0, len(padded), batch)]
        return np.concatenate(out)[: len(x)]

    return run(enc_i, images), run(enc_t, tokens)


def evaluate(model: TwoTower, variables: Any, eval_data: Mapping[str, np.ndarray],
             probe_data: Mapping[str, np.ndarray] | None = None, class_prompts: np.ndarray | None = None,
             shots: int = 5, seed: int = 0) -> dict[str, float]:
    """Retrieval R@1/5/10, modality-gap metrics, and (with labels) zero-shot and linear/k-shot probes.

    `class_prompts` are tokenized prompts of shape (n_classes, n_templates, L); `probe_data` (images,
    labels) is the probes' training split.
    """
    img, txt = embed_all(model, variables, eval_data[IMAGE_KEY], eval_data[TOKENS_KEY])
    out = {k: float(v) for k, v in retrieval.retrieval_recall(img, txt).items()}
    out.update({f"gap/{k}": float(v) for k, v in gap.gap_metrics(img, txt).items()})
    labels = eval_data.get("label")
    if labels is not None and class_prompts is not None:
        n_cls, n_tpl, length = class_prompts.shape
        _, prompt_emb = embed_all(model, variables, None, class_prompts.reshape(-1, length))
        classes = zeroshot.class_embeddings(prompt_emb.reshape(n_cls, n_tpl, -1))
        acc = zeroshot.zero_shot_accuracy(img, classes, labels, topk=(1, 5))
        out.update({f"zeroshot/{k}": float(v) for k, v in acc.items()})
    if labels is not None and probe_data is not None:
        n_cls = int(max(labels.max(), probe_data["label"].max())) + 1
        train_img, _ = embed_all(model, variables, probe_data[IMAGE_KEY], None)
        out["probe/linear"] = float(probes.linear_probe(train_img, probe_data["label"], img, labels, n_cls))
        out[f"probe/{shots}shot"] = float(probes.k_shot_probe(
            jax.random.key(seed), train_img, probe_data["label"], img, labels, n_cls, shots))
    return out

