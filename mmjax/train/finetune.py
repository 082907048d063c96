"""Fine-tuning a pre-trained fusion model on a downstream task, on the one training loop.

`mmjax finetune --task qa|pairs|entailment --from WORKDIR --workdir DIR` (or `train_and_evaluate` of a
`FinetuneConfig`): the pre-training workdir gives the model (its `FusionConfig`), the tokenizer and the
newest checkpoint; `mmjax.data.vl_tasks` generates the task's train / val / test splits; the model is
`mmjax.models.fusion.FusionClassifier` (the fused [CLS] feature, or both images' for `pairs`, through
an MLP head), trained with cross-entropy on the answer / true-false / 3-way entailment label.

The trainer is a `mmjax.train.trainer.Trainer` like the pre-training ones, so checkpoints, resumption,
NaN stop, logging, evaluation and sharding are the loop's. What it adds:

- `warm_start`: on a fresh run, the fusion parameters are copied from the pre-training checkpoint (its
  trained parameters, not the momentum model), the head starts from its random init (`init="scratch"`
  keeps the whole random init instead). Words of the task texts that the pre-training tokenizer lacks
  are appended to it, and their embedding rows start from the random init (`extend_tokenizer`).
- `inputs`: "text" replaces every image by one constant (zero) image and "image" every text by the
  constant row `[CLS] [SEP]`, in training and evaluation: the learned text-only and image-only
  baselines with the same model, head and budget.
- The `task` evaluator reports `val/...` and `test/...` accuracy, overall and per question / statement
  type, at every evaluation; `best_on_val` picks the evaluation with the best validation accuracy and
  reports its test accuracy (model selection on val only), written to `result.json` by the CLI.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from mmjax import parallel
from mmjax.configs.common import ConfigError
from mmjax.configs.finetune import FinetuneConfig
from mmjax.configs.fusion import FusionConfig
from mmjax.data.pipeline import IMAGE_KEY, TOKENS_KEY, ArraySource
from mmjax.data.tokenizer import BOS_ID, EOS_ID, SPECIAL_TOKENS, Tokenizer, WordTokenizer
from mmjax.models.fusion import FusionClassifier
from mmjax.train.step import init_state, make_train_step
from mmjax.train.trainer import Trainer

Array = jax.Array
IMAGE2_KEY, LABEL_KEY, TYPE_KEY = "image2", "label", "type"


# ------------------------------------------------------------------------------------------------ inputs


def read_pretrained(workdir: str | Path) -> tuple[FusionConfig, Tokenizer]:
    """The `FusionConfig` and tokenizer of a pre-training workdir (one-line ConfigError if it is not one)."""
    from mmjax.train.trainer import config_from_json

    workdir = Path(workdir)
    if not str(workdir) or str(workdir) == ".":
        raise ConfigError("pretrained='' is invalid: name a fusion pre-training workdir (--from DIR)")
    path = workdir / "config.json"
    if not path.exists():
        raise ConfigError(f"pretrained={str(workdir)!r} is invalid: no config.json there (pre-train with "
                          "`mmjax train --config experiments/fusion_tiny.py --workdir DIR` first)")
    cfg = config_from_json(json.loads(path.read_text()))
    if cfg.kind != "fusion":
        raise ConfigError(f"pretrained={str(workdir)!r} is invalid: it holds a {cfg.kind} run; fine-tuning "
                          "needs a fusion one")
    tok_path = workdir / "tokenizer.json"
    if not tok_path.exists():
        raise ConfigError(f"pretrained={str(workdir)!r} is invalid: no tokenizer.json there")
    return cfg, Tokenizer.load(tok_path)


def extend_tokenizer(tokenizer: Tokenizer, words) -> tuple[Tokenizer, np.ndarray]:
    """`tokenizer` with the `words` it lacks appended, and for each new id the old id it had (-1: new).

    A word-level tokenizer keeps every old id except [MASK], which stays last (so it moves by the number of
    new words); a subword tokenizer is returned unchanged (it spells new words with its pieces).
    """
    if not isinstance(tokenizer, WordTokenizer):
        return tokenizer, np.arange(tokenizer.vocab_size)
    known = set(tokenizer.words) | set(SPECIAL_TOKENS)
    new = [w for w in dict.fromkeys(words) if w not in known]
    if not new:
        return tokenizer, np.arange(tokenizer.vocab_size)
    out = WordTokenizer(tokenizer.words + tuple(new), mask_token=tokenizer.mask_token)
    n_old_words = len(SPECIAL_TOKENS) + len(tokenizer.words)
    source = np.full(out.vocab_size, -1, np.int64)
    source[:n_old_words] = np.arange(n_old_words)
    if tokenizer.mask_token:
        source[-1] = tokenizer.mask_id
    return out, source


def task_data_config(cfg: FinetuneConfig, image_size: int):
    """The `mmjax.data.vl_tasks.TaskDataConfig` of a fine-tuning config at the pre-training image size."""
    from mmjax.data.vl_tasks import TaskDataConfig

    field = {"qa": "question_types", "pairs": "statement_types", "entailment": "hypothesis_types"}[cfg.task]
    extra = {} if cfg.types is None else {field: cfg.types}
    try:
        return TaskDataConfig(task=cfg.task, num_train=cfg.num_train, num_val=cfg.num_val,
                              num_test=cfg.num_test, image_size=image_size, seed=cfg.data_seed, **extra)
    except ValueError as err:  # the generator's one-line message, as a config error
        raise ConfigError(str(err)) from None


@functools.lru_cache(maxsize=4)
def _task_data(tcfg):
    from mmjax.data.vl_tasks import make_task_data

    return make_task_data(tcfg)


@dataclasses.dataclass
class TaskRun:
    """What the loop and the `task` evaluator read of a fine-tuning run (duck-types `loop.Data`)."""

    train: ArraySource  # image (uint8), [image2], tokens, label, type
    eval: dict[str, np.ndarray]  # the val split, same columns
    test: dict[str, np.ndarray]
    tokenizer: Tokenizer
    labels: tuple[str, ...]
    types: tuple[str, ...]
    texts: dict[str, np.ndarray]  # split → the raw texts (for showing examples)
    probe: None = None
    tasks: dict = dataclasses.field(default_factory=dict)
    attributes: dict = dataclasses.field(default_factory=dict)

    @property
    def splits(self) -> dict[str, dict[str, np.ndarray]]:
        """The evaluation splits by name: val and test."""
        return {"val": self.eval, "test": self.test}


def _max_len(cfg: FinetuneConfig, pcfg: FusionConfig) -> int:
    if cfg.max_len > pcfg.max_len:
        raise ConfigError(f"max_len={cfg.max_len} is invalid: at most the pre-training "
                          f"max_len={pcfg.max_len} (its position embeddings)")
    return cfg.max_len or pcfg.max_len


def load_task_run(cfg: FinetuneConfig, workdir: Path) -> TaskRun:
    """The task's splits, tokenized with the (extended) pre-training tokenizer (saved as the run's)."""
    pcfg, ptok = read_pretrained(cfg.pretrained)
    data = _task_data(task_data_config(cfg, pcfg.image_size))
    tok_path = workdir / "tokenizer.json"
    if tok_path.exists():
        tokenizer = Tokenizer.load(tok_path)
    else:
        tokenizer, _ = extend_tokenizer(ptok, data.words)
        if jax.process_index() == 0:
            tokenizer.save(tok_path.with_suffix(".tmp"))
            tok_path.with_suffix(".tmp").replace(tok_path)
    max_len = _max_len(cfg, pcfg)
    longest = max(len(str(t).split()) for split in data.splits.values() for t in split["text"])
    if longest + 2 > max_len:
        raise ConfigError(f"max_len={max_len} is invalid: the task's longest text has {longest} words, "
                          f"which need {longest + 2} tokens with [CLS] and [SEP]")

    def columns(split: str) -> dict[str, np.ndarray]:
        rows = data.splits[split]
        tokens = tokenizer.encode([str(t) for t in rows["text"]], max_len)
        out = {IMAGE_KEY: rows["image"], TOKENS_KEY: tokens,
               LABEL_KEY: np.asarray(rows["label"], np.int32), TYPE_KEY: np.asarray(rows["type"], np.int32)}
        if cfg.task == "pairs":
            out[IMAGE2_KEY] = rows["image2"]
        return out

    return TaskRun(train=ArraySource(columns("train")), eval=columns("val"), test=columns("test"),
                   tokenizer=tokenizer, labels=tuple(data.labels), types=tuple(data.types),
                   texts={s: np.asarray(data.splits[s]["text"]) for s in ("train", "val", "test")})


# ------------------------------------------------------------------------------------------------ trainer


def _as_float(images: Array) -> Array:
    return images.astype(jnp.float32) / 255 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


def make_trainer(cfg: FinetuneConfig, vocab_size: int, mesh: Mesh | None = None,
                 for_training: bool = True) -> Trainer:
    """Model, optimiser, jitted init and step of a fine-tuning config, and its warm start.

    `vocab_size` is the run's (extended) tokenizer's.
    """
    from mmjax.train.clip import make_optimizer
    from mmjax.train.fusion import build_model
    from mmjax.train.fusion import make_trainer as make_fusion_trainer

    if not isinstance(cfg, FinetuneConfig):
        raise TypeError(f"the fine-tuning trainer needs a FinetuneConfig, not {type(cfg).__name__}")
    mesh = parallel.data_mesh() if mesh is None else mesh
    if for_training:
        parallel.check_batch_divisible(cfg.batch, mesh)
        if cfg.accum_steps > 1:
            parallel.check_batch_divisible(cfg.batch // cfg.accum_steps, mesh, "batch / accum_steps")
    pcfg, ptok = read_pretrained(cfg.pretrained)
    data = _task_data(task_data_config(cfg, pcfg.image_size))
    max_len = _max_len(cfg, pcfg)
    pair = cfg.task == "pairs"
    model = FusionClassifier(build_model(pcfg, vocab_size), n_classes=len(data.labels),
                             hidden=cfg.head_hidden, pair=pair)
    optimizer = make_optimizer(cfg)
    blank_text = np.zeros((max_len,), np.int32)
    blank_text[:2] = (BOS_ID, EOS_ID)

    def inputs(images: Array, tokens: Array, images2: Array | None) -> tuple:
        """The model's inputs, with the modality that `cfg.inputs` leaves out replaced by a constant."""
        images = _as_float(images)
        images2 = None if images2 is None else _as_float(images2)
        if cfg.inputs == "text":
            images = jnp.zeros_like(images)
            images2 = None if images2 is None else jnp.zeros_like(images2)
        elif cfg.inputs == "image":
            tokens = jnp.broadcast_to(jnp.asarray(blank_text), tokens.shape)
        return (images, tokens) if images2 is None else (images, tokens, images2)

    def logits_fn(variables: Any, images: Array, tokens: Array, images2: Array | None = None) -> Array:
        return model.apply(variables, *inputs(images, tokens, images2))

    def loss_fn(variables: Any, key: Array, images: Array, tokens: Array, labels: Array, *rest: Array):
        logits = logits_fn(variables, images, tokens, *rest)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce, {"ce": ce, "accuracy": (jnp.argmax(logits, -1) == labels).mean()}

    train_step = make_train_step(loss_fn, optimizer, cfg.accum_steps)
    repl, rows = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    batch_keys = (IMAGE_KEY, TOKENS_KEY, LABEL_KEY) + ((IMAGE2_KEY,) if pair else ())

    def init(key: Array) -> dict:
        k_params, k_rng = jax.random.split(key)
        images = jnp.zeros((1, pcfg.image_size, pcfg.image_size, 3), jnp.float32)
        tokens = jnp.zeros((1, max_len), jnp.int32)
        variables = model.init(k_params, images, tokens, *((images,) if pair else ()))
        return {"train": init_state(variables, optimizer), "rng": jax.random.key_data(k_rng)}

    def step(state: dict, batch: Mapping[str, Array]) -> tuple[dict, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["train"].step)
        train, metrics = train_step(state["train"], key, *(batch[k] for k in batch_keys))
        return {"train": train, "rng": state["rng"]}, metrics

    jit_init = jax.jit(init, out_shardings=repl)
    rebuild = jax.jit(lambda variables: init_state(variables, optimizer), out_shardings=repl)

    def warm_start(state: dict) -> dict:
        """`state` (fresh) with the fusion parameters of the pre-training checkpoint (`init="pretrained"`)."""
        if cfg.init == "scratch":
            return state
        from mmjax.train.checkpoint import Checkpointer

        _, source = extend_tokenizer(ptok, data.words)
        pre = make_fusion_trainer(pcfg, ptok.vocab_size, mesh, for_training=False)
        ckpt = Checkpointer(Path(cfg.pretrained) / "checkpoints", every=pcfg.ckpt_every, keep=pcfg.keep)
        try:
            restored = ckpt.restore_latest(pre.abstract_state())
        finally:
            ckpt.close()
        if restored is None:
            raise ConfigError(f"pretrained={cfg.pretrained!r} is invalid: no readable checkpoint under "
                              "checkpoints/")
        pretrained = jax.device_get(restored[1]["train"].params["params"])
        fresh = jax.device_get(state["train"].params)
        fusion = transplant(fresh["params"]["fusion"], pretrained, source)
        variables = {**fresh, "params": {**fresh["params"], "fusion": fusion}}
        return {"train": rebuild(variables), "rng": state["rng"]}

    fns = {"task_logits": jax.jit(logits_fn)}
    return Trainer(cfg=cfg, model=model, mesh=mesh, optimizer=optimizer, init=jit_init,
                   step=jax.jit(step, in_shardings=(repl, {k: rows for k in batch_keys}),
                                out_shardings=(repl, repl), donate_argnums=0),
                   predict_fns=fns, batch_keys=batch_keys, warm_start=warm_start)


def transplant(fresh: Any, pretrained: Any, source: np.ndarray, path: str = "") -> Any:
    """`fresh` (a parameter tree) with every leaf taken from `pretrained` at the same path; the token
    embedding's rows follow `source` (row i from pretrained row source[i]; -1 keeps the fresh row).

    A leaf of `fresh` that `pretrained` lacks, or of another shape, is a ValueError naming its path.
    """
    if isinstance(fresh, Mapping):
        if not isinstance(pretrained, Mapping):
            raise ValueError(f"pre-trained parameters differ at {path or '/'}: not a mapping")
        missing = [k for k in fresh if k not in pretrained]
        if missing:
            raise ValueError(f"pre-trained parameters lack {path}/{missing[0]}")
        return {k: transplant(v, pretrained[k], source, f"{path}/{k}") for k, v in fresh.items()}
    old = np.asarray(pretrained)
    new = np.asarray(fresh)
    if path.endswith("token_embed/embedding"):
        rows = np.where((source >= 0)[:, None], old[np.maximum(source, 0)], new)
        return rows.astype(new.dtype)
    if old.shape != new.shape:
        raise ValueError(f"pre-trained parameter {path} has shape {old.shape}, the model {new.shape}")
    return old.astype(new.dtype)


# ------------------------------------------------------------------------------------------------ results


def best_on_val(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Of the logged evaluations (metrics.jsonl rows with `val/accuracy`), the one with the best validation
    accuracy (the earliest of ties): its step and every val/test metric. Model selection on val only."""
    evals = [r for r in rows if "val/accuracy" in r]
    if not evals:
        raise ValueError("no evaluation logged (metrics.jsonl has no val/accuracy)")
    best = max(evals, key=lambda r: (r["val/accuracy"], -r["step"]))
    return {"step": best["step"], **{k: v for k, v in best.items() if k.startswith(("val/", "test/"))}}
