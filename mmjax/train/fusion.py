"""The ALBEF fusion trainer (Li et al. 2021, "Align before Fuse", arXiv 2107.07651): ITC with a momentum
queue and distillation, ITM with hard negatives, MLM, momentum model — one jitted step in the one loop.

Per step, on a batch of (image, caption) pairs (§3.2, §3.3):

1. The image tokens and the clean text's text-only tokens; their unimodal ITC features g_v(v_cls),
   g_w(w_cls), and the momentum model's g'_v, g'_w of the same inputs.
2. **ITC** against the global batch and the queues of earlier momentum features, with momentum-distilled
   targets (weight α), inside `jax.shard_map`; the structure regularizers of Jiang et al. (arXiv
   2303.05952) on the same unimodal features, the momentum features as the augmented view.
3. **ITM**: for each image one hard-negative caption and for each caption one hard-negative image, drawn
   over the *global* batch ∝ softmax of the ITC similarities (`sample_hard_negatives`); the positive and
   both negative pairs go through the fusion layers and the ITM head.
4. **MLM**: BERT masking (`mask_tokens`) of the caption, fused with the image; the loss is distilled
   from the momentum model's MLM softmax on the same masked input and momentum image tokens.
5. loss = ITC + ITM + MLM (equal weights, as ALBEF) + Σ weight · regularizer; one AdamW update; the
   temperature is clamped to [0.001, 0.5]; the momentum model takes its EMA step θ_m ← m·θ_m + (1 − m)·θ
   (of the whole parameter tree); the queues take the global batch's momentum features (after the loss).

State: `train` (TrainState: step, params, opt_state), `rng` (key data; step t draws from
`fold_in(rng, t)`, so a resumed run is bit-identical), and `momentum`: `params` (the momentum model's
variables), `img_queue`, `txt_queue` (queue_size × embed_dim, unit rows) and `ptr` (int32, the next row
to write). With `accum_steps` > 1 the queues are threaded through the micro-batches in order: micro-batch
i scores against a queue holding micro-batch i − 1's features (`make_train_step(carry_state=True)`); the
momentum model steps once, after the update.

Sharding: the batch is split over the mesh's data axis; the model runs under GSPMD; ITC (with the
regularizers and the hard-negative draw) and ITM/MLM run in two `shard_map`s, each device scoring its rows
against what it gathers from all devices. Masking and the queue update act on the global batch (keys are
per global row), so what is drawn does not depend on the device count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from mmjax import parallel
from mmjax.configs.fusion import FusionConfig
from mmjax.data.augment import AugmentConfig, two_views
from mmjax.data.pipeline import IMAGE_KEY, TOKENS_KEY
from mmjax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from mmjax.losses.fusion import (
    ema_update,
    enqueue,
    init_queue,
    itc_loss,
    itm_accuracy,
    itm_loss,
    mask_tokens,
    mlm_accuracy,
    mlm_loss,
    sample_hard_negatives,
)
from mmjax.models.fusion import Fusion, build_fusion, clamp_temp
from mmjax.train.clip import DTYPES, make_optimizer, structure_terms, weighted_regularizers
from mmjax.train.step import init_state, make_train_step
from mmjax.train.trainer import Trainer

Array = jax.Array
SPECIAL_IDS = (PAD_ID, BOS_ID, EOS_ID, UNK_ID)  # never masked (nor [MASK] itself)


def build_model(cfg: FusionConfig, vocab_size: int) -> Fusion:
    """The fusion model of a config, for a tokenizer with `vocab_size` ids ([MASK] included)."""
    dtype = DTYPES[cfg.dtype]
    return build_fusion(cfg.image_tower, image_kwargs={**cfg.image_kwargs(), "dtype": dtype},
                        text_kwargs={**cfg.text_kwargs(vocab_size), "dtype": dtype},
                        embed_dim=cfg.embed_dim, independent_heads=cfg.sep_weight > 0)


def _unimodal(model: Fusion, variables: Any, images: Array, tokens: Array, independent: bool) -> dict:
    """Image tokens, text-only tokens and the ITC features (and independent features) of one model."""
    def run(m: Fusion) -> dict:
        tok_i, tok_t = m.image_tokens(images), m.text_tokens(tokens)
        out = {"tok_i": tok_i, "tok_t": tok_t, "img": m.image_feature(tok_i), "txt": m.text_feature(tok_t)}
        if independent:
            out.update(img_ind=m.image_ind_feature(tok_i), txt_ind=m.text_ind_feature(tok_t))
        return out

    return model.apply(variables, method=run)


def make_objectives(cfg: FusionConfig) -> tuple[Callable, Callable]:
    """The two sharded parts of the loss, as functions of the local rows (`axis_name` inside shard_map).

    `itc_part(emb, shared)` → (terms, (neg_txt, neg_img)): ITC (`itc`) and the regularizers
    (`reg/<name>`, on `img`, `txt` with `img_m`, `txt_m` as the augmented view), and the hard negatives
    (global indices, per local row). `shared` holds the queues, the clamped `temp` and raw key data
    `key_neg`, `key_reg`.
    `head_part(heads)` → terms: `itm`, `itm_accuracy`, `mlm`, `mlm_accuracy` from the ITM logits of the
    positive pairs and both negatives (`pos`, `neg_img`, `neg_txt`) and the MLM logits, labels and the
    momentum model's softmax (`mlm`, `labels`, `soft`).
    """

    def itc_part(emb: Mapping[str, Array], shared: Mapping[str, Array], axis_name: str | None = None):
        itc = itc_loss(emb["img"], emb["txt"], emb["img_m"], emb["txt_m"], shared["img_queue"],
                       shared["txt_queue"], temp=shared["temp"], alpha=cfg.alpha, axis_name=axis_name)
        # The momentum features are the regularizers' augmented view (Jiang et al. on ALBEF).
        views = {"img": emb["img"], "txt": emb["txt"], "img_aug": emb["img_m"], "txt_aug": emb["txt_m"]}
        if cfg.sep_weight > 0:
            views.update(img_ind=emb["img_ind"], txt_ind=emb["txt_ind"], img_ind_aug=emb["img_ind_m"],
                         txt_ind_aug=emb["txt_ind_m"])
        terms = {"itc": itc.loss, **structure_terms(cfg, views, shared["key_reg"], axis_name)}
        negatives = sample_hard_negatives(jax.random.wrap_key_data(shared["key_neg"]), itc.sim_i2t,
                                          itc.sim_t2i, axis_name=axis_name)
        return terms, negatives

    def head_part(h: Mapping[str, Array], axis_name: str | None = None):
        itm_args = (h["pos"], h["neg_img"], h["neg_txt"])
        return {"itm": itm_loss(*itm_args, axis_name=axis_name),
                "itm_accuracy": itm_accuracy(*itm_args, axis_name=axis_name),
                "mlm": mlm_loss(h["mlm"], h["labels"], soft_targets=h["soft"], alpha=cfg.alpha,
                                axis_name=axis_name),
                "mlm_accuracy": mlm_accuracy(h["mlm"], h["labels"], axis_name=axis_name)}

    return itc_part, head_part


def make_loss(cfg: FusionConfig, model: Fusion, mesh: Mesh, vocab_size: int, mask_id: int) -> Callable:
    """`loss(variables, momentum, key, images, tokens) -> (loss, (aux, momentum))` for
    `make_train_step(carry_state=True)`: the whole ALBEF objective; `momentum` comes back with the
    batch's momentum features enqueued (its `params` unchanged: the EMA follows the update)."""
    aug = AugmentConfig()
    itc_fn, head_fn = make_objectives(cfg)
    itc_part = parallel.sharded_loss(itc_fn, mesh, n_sharded=1, n_replicated=1,
                                     out_specs=(P(), P(parallel.DATA_AXIS)))
    head_part = parallel.sharded_loss(head_fn, mesh, n_sharded=1)
    independent = cfg.sep_weight > 0
    pad = model.text_model.pad_id

    def fuse_heads(variables: Any, tok_t: Array, valid: Array, tok_i: Array, head: str) -> Array:
        return model.apply(variables, method=lambda m: getattr(m, head)(m.fuse(tok_t, valid, tok_i)))

    def loss_fn(variables: Any, momentum: Mapping[str, Any], key: Array, images: Array, tokens: Array):
        k_aug, k_mask, k_neg, k_reg = jax.random.split(key, 4)
        if cfg.augment:  # one augmented view: the momentum model sees the same one
            (images, _), (tokens, _) = two_views(k_aug, images, tokens, aug)
        sg = lax.stop_gradient
        params_m = momentum["params"]
        on = _unimodal(model, variables, images, tokens, independent)
        mo = jax.tree.map(sg, _unimodal(model, params_m, images, tokens, independent))
        emb = {k: on[k] for k in ("img", "txt", "img_ind", "txt_ind") if k in on}
        emb.update({f"{k}_m": mo[k] for k in ("img", "txt", "img_ind", "txt_ind") if k in mo})
        temp = model.apply(variables, method=Fusion.temp)
        shared = {"img_queue": momentum["img_queue"], "txt_queue": momentum["txt_queue"], "temp": temp,
                  "key_neg": jax.random.key_data(k_neg), "key_reg": jax.random.key_data(k_reg)}
        terms, (neg_txt, neg_img) = itc_part(emb, shared)

        # ITM: each image with its caption, with its negative caption, and each caption with its negative
        # image, fused as one batch of 3B (interleaved per row, so it stays split like the batch).
        valid = tokens != pad
        tok_t, tok_i = on["tok_t"], on["tok_i"]
        stack = lambda a, b, c: jnp.stack([a, b, c], 1).reshape(-1, *a.shape[1:])
        itm = fuse_heads(variables, stack(tok_t, tok_t[neg_txt], tok_t),
                         stack(valid, valid[neg_txt], valid), stack(tok_i, tok_i, tok_i[neg_img]),
                         "itm_logits").reshape(tokens.shape[0], 3, 2)

        # MLM on the masked caption, fused with the image; the momentum model's softmax as soft targets.
        masked, labels = mask_tokens(k_mask, tokens, vocab_size=vocab_size, special_ids=SPECIAL_IDS,
                                     pad_id=pad, mask_id=mask_id, mask_prob=cfg.mask_prob)
        text_masked = model.apply(variables, masked, method=Fusion.text_tokens)
        mlm = fuse_heads(variables, text_masked, valid, tok_i, "mlm_logits")
        text_masked_m = model.apply(params_m, masked, method=Fusion.text_tokens)
        soft = sg(jax.nn.softmax(fuse_heads(params_m, text_masked_m, valid, mo["tok_i"], "mlm_logits"), -1))
        terms.update(head_part({"pos": itm[:, 0], "neg_txt": itm[:, 1], "neg_img": itm[:, 2], "mlm": mlm,
                                "labels": labels, "soft": soft}))

        loss = terms["itc"] + terms["itm"] + terms["mlm"] + weighted_regularizers(cfg, terms)
        # The queues take this (micro-)batch's global momentum features, after the loss has used them.
        img_queue, ptr = enqueue(momentum["img_queue"], momentum["ptr"], mo["img"])
        txt_queue, _ = enqueue(momentum["txt_queue"], momentum["ptr"], mo["txt"])
        new = {**momentum, "img_queue": img_queue, "txt_queue": txt_queue, "ptr": ptr}
        return loss, ({**terms, "temp": temp}, new)

    return loss_fn


def predict_fns(model: Fusion) -> dict[str, Callable]:
    """The fusion model's predict functions for `mmjax.eval.evaluators` (jitted): the unimodal ITC
    features as the two-tower embeddings, the temperature, ITM and MLM logits of (image, tokens)."""
    pad = model.text_model.pad_id

    def fused(m: Fusion, images: Array, tokens: Array) -> Array:
        return m.fuse(m.text_tokens(tokens), tokens != pad, m.image_tokens(images))

    def of(fn: Callable) -> Callable:
        """jit(v, *inputs -> fn(module, *inputs))."""
        return jax.jit(lambda v, *inputs: model.apply(v, *inputs, method=fn))

    return {"embed_image": of(lambda m, x: m.image_feature(m.image_tokens(x))),
            "embed_text": of(lambda m, t: m.text_feature(m.text_tokens(t))),
            "temperature": of(Fusion.temp),
            "itm_logits": of(lambda m, x, t: m.itm_logits(fused(m, x, t))),
            "mlm_logits": of(lambda m, x, t: m.mlm_logits(fused(m, x, t)))}


def make_trainer(cfg: FusionConfig, vocab_size: int, mesh: Mesh | None = None,
                 for_training: bool = True, mask_id: int | None = None) -> Trainer:
    """Model, optimiser and the jit-compiled (sharded, donated) init and train step of a fusion config.

    `vocab_size` counts [MASK], which is the last id unless `mask_id` says otherwise (the convention of
    `mmjax.data.tokenizer`).
    """
    if not isinstance(cfg, FusionConfig):
        raise TypeError(f"the fusion trainer needs a FusionConfig, not {type(cfg).__name__}")
    mesh = parallel.data_mesh() if mesh is None else mesh
    if for_training:
        parallel.check_batch_divisible(cfg.batch, mesh)
    if for_training and cfg.accum_steps > 1:
        parallel.check_batch_divisible(cfg.batch // cfg.accum_steps, mesh, "batch / accum_steps")
    mask_id = vocab_size - 1 if mask_id is None else mask_id
    model = build_model(cfg, vocab_size)
    optimizer = make_optimizer(cfg)
    loss_fn = make_loss(cfg, model, mesh, vocab_size, mask_id)
    train_step = make_train_step(loss_fn, optimizer, cfg.accum_steps, carry_state=True)
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    def init(key: Array) -> dict:
        k_params, k_rng, k_img, k_txt = jax.random.split(key, 4)
        images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
        tokens = jnp.zeros((1, cfg.max_len), jnp.int32)
        variables = model.init(k_params, images, tokens)
        micro = cfg.batch // cfg.accum_steps  # what each enqueue writes
        img_queue, ptr = init_queue(k_img, cfg.queue_size, cfg.embed_dim, global_batch=micro)
        txt_queue, _ = init_queue(k_txt, cfg.queue_size, cfg.embed_dim, global_batch=micro)
        # The momentum model starts as a copy of the model (ALBEF's copy_params).
        momentum = {"params": jax.tree.map(jnp.copy, variables), "img_queue": img_queue,
                    "txt_queue": txt_queue, "ptr": ptr}
        return {"train": init_state(variables, optimizer), "rng": jax.random.key_data(k_rng),
                "momentum": momentum}

    def step(state: dict, batch: Mapping[str, Array]) -> tuple[dict, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["train"].step)
        train, momentum, metrics = train_step(state["train"], state["momentum"], key, batch[IMAGE_KEY],
                                              batch[TOKENS_KEY])
        params = {**train.params, "params": clamp_temp(train.params["params"], model)}
        momentum = {**momentum, "params": ema_update(momentum["params"], params, cfg.momentum)}
        return {"train": train._replace(params=params), "rng": state["rng"], "momentum": momentum}, metrics

    batch_shardings = {IMAGE_KEY: data, TOKENS_KEY: data}
    return Trainer(cfg=cfg, model=model, mesh=mesh, optimizer=optimizer,
                   init=jax.jit(init, out_shardings=repl),
                   step=jax.jit(step, in_shardings=(repl, batch_shardings), out_shardings=(repl, repl),
                                donate_argnums=0),
                   predict_fns=predict_fns(model), batch_keys=(IMAGE_KEY, TOKENS_KEY))
