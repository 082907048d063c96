"""`train_and_evaluate(config, workdir)`: data, trainer, checkpoints, logging, evaluation, resumption.

The one training loop of every trainer (`mmjax.train.trainer`): the two-tower model of a `ClipConfig`
and the fusion model of a `FusionConfig` alike. The trainer names the batch keys its step reads, its
evaluators' predict functions and its config type; the config names the evaluators (`evals`).

Workdir layout: `config.json` (the config's `kind` and fields), `tokenizer.json`, `metrics.jsonl` (one
JSON object per logged step), `tb/` (TensorBoard events), `checkpoints/<step>/` (the whole train state:
for the fusion model also its momentum model and feature queues), `eval.json` (the last evaluation).
Rerunning on the same workdir restores the newest readable checkpoint, including the data-iterator
position, and continues bit-identically.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from mmjax import parallel
from mmjax.configs.clip import ClipConfig
from mmjax.configs.common import ConfigError
from mmjax.data.pipeline import (
    CAPTION_KEY,
    COLOURS,
    IMAGE_KEY,
    SHAPES,
    SIZES,
    TOKENS_KEY,
    ArraySource,
    make_dataset,
    make_generated_dataset,
    make_iterator,
    per_process_batch_size,
)
from mmjax.data.scene_dataset import attribute_tasks, scene_arrays
from mmjax.data.tfds_io import load_source
from mmjax.data.tokenizer import Tokenizer, as_strings, make_tokenizer
from mmjax.eval.evaluators import run_evaluators
from mmjax.eval.zeroshot import prompt_texts
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.trainer import Trainer, config_from_json, config_to_json, make_trainer

PROBE_TRAIN_ROWS = 2048


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class ResumeMismatch(RuntimeError):
    """The processes of a multi-host run restored different checkpoint steps."""


@dataclasses.dataclass
class Data:
    """Training source, evaluation arrays and the tokenizer of a run."""

    train: Any
    eval: dict[str, np.ndarray]
    probe: dict[str, np.ndarray] | None
    tokenizer: Tokenizer
    # label column → tokenized prompts (n_classes, n_templates, max_len), or None (probes only)
    tasks: dict[str, np.ndarray | None]
    # label column → the word each label value is named by in the captions (MLM on attribute words)
    attributes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def _columns(source: Any, rows: int) -> dict[str, np.ndarray]:
    """The first `rows` examples of a random-access source as stacked numpy columns."""
    items = [source[i] for i in range(min(rows, len(source)))]
    return {k: np.stack([np.asarray(it[k]) for it in items]) for k in items[0]}


def _model_arrays(columns: Mapping[str, np.ndarray], tokenizer: Tokenizer, max_len: int,
                  labels: tuple[str, ...] = ()) -> dict:
    """Images as float32 in [0, 1], captions as tokens, the `labels` columns kept as int32."""
    images = columns[IMAGE_KEY]
    out = {IMAGE_KEY: images.astype(np.float32) / 255 if images.dtype == np.uint8 else images,
           TOKENS_KEY: tokenizer.encode(as_strings(columns[CAPTION_KEY]), max_len)}
    out.update({k: np.asarray(columns[k]).astype(np.int32) for k in labels})
    return out


def load_data(cfg: ClipConfig, workdir: Path) -> Data:
    """Sources and tokenizer of a config; the tokenizer is built once and then read from the workdir.

    Tasks: the generated data has one ("label": colour and shape), the scenes one per attribute, and a
    tfds dataset with a `label` column a probe-only one. Attributes (named words): the generated data's
    colour, shape and size, the scenes' five attributes. A config that `needs_mask_token` (MLM) gets a
    tokenizer with [MASK].
    """
    if cfg.kind == "finetune":  # a downstream task's generated splits (mmjax.train.finetune)
        from mmjax.train.finetune import load_task_run

        return load_task_run(cfg, workdir)
    prompts_of: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    attributes: dict[str, tuple[str, ...]] = {}
    if cfg.dataset == "generated":
        full = make_generated_dataset(cfg.num_train + cfg.num_eval, cfg.image_size, seed=1234)
        cols = full.columns
        train = ArraySource({k: v[: cfg.num_train] for k, v in cols.items()})
        eval_cols = {k: v[cfg.num_train:] for k, v in cols.items()}
        prompts_of["label"] = (full.class_names, full.prompt_templates)
        attributes = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES}
    elif cfg.dataset == "scenes":
        train_cols, eval_cols = scene_arrays(cfg.num_train, cfg.num_eval, cfg.image_size, seed=1234)
        # The scene-vocabulary token ids are dropped: captions go through this run's tokenizer.
        train = ArraySource({k: v for k, v in train_cols.items() if k != TOKENS_KEY})
        prompts_of.update(attribute_tasks())
        attributes = {name: names for name, (names, _) in prompts_of.items()}
    else:
        train = load_source(cfg.dataset, cfg.train_split, cfg.data_dir)
        eval_cols = _columns(load_source(cfg.dataset, cfg.eval_split, cfg.data_dir), cfg.num_eval)
    tok_path = workdir / "tokenizer.json"
    if tok_path.exists():
        tokenizer = Tokenizer.load(tok_path)
        if cfg.needs_mask_token and tokenizer.mask_id is None:
            raise ConfigError(f"workdir {workdir} holds a tokenizer without [MASK], which the {cfg.kind} "
                              "model needs: use a new --workdir")
    else:
        captions = (train.columns[CAPTION_KEY] if isinstance(train, ArraySource)
                    else [train[i][CAPTION_KEY] for i in range(len(train))])
        kwargs = {} if cfg.tokenizer == "word" else {"vocab_size": cfg.vocab_size}
        if cfg.needs_mask_token:
            kwargs["mask_token"] = True
        tokenizer = make_tokenizer(cfg.tokenizer, captions, **kwargs)
        if jax.process_index() == 0:
            tokenizer.save(tok_path.with_suffix(".tmp"))
            tok_path.with_suffix(".tmp").replace(tok_path)  # atomic: other hosts never read half a file
    labels = tuple(prompts_of) or (("label",) if "label" in eval_cols else ())
    kept = labels + tuple(a for a in attributes if a not in labels)  # label columns and attribute columns
    evald = _model_arrays(eval_cols, tokenizer, cfg.max_len, kept)
    probe = None
    if labels:
        probe = _model_arrays(_columns(train, PROBE_TRAIN_ROWS), tokenizer, cfg.max_len, kept)
    tasks: dict[str, np.ndarray | None] = {}
    for name in labels:
        if name in prompts_of:
            texts = prompt_texts(*prompts_of[name])
            tasks[name] = np.stack([tokenizer.encode(row, cfg.max_len) for row in texts])
        else:
            tasks[name] = None
    return Data(train=train, eval=evald, probe=probe, tokenizer=tokenizer, tasks=tasks, attributes=attributes)


class MetricsLog:
    """metrics.jsonl plus TensorBoard events, written by process 0 only."""

    def __init__(self, workdir: Path, start: int = 0):
        self.active = jax.process_index() == 0
        self.path = workdir / "metrics.jsonl"
        self.tb = None
        if self.active:
            from tensorboardX import SummaryWriter

            # A run killed between checkpoints logged steps it will now redo: drop them first.
            if self.path.exists():
                rows = self.path.read_text().splitlines()
                kept = [r for r in rows if json.loads(r)["step"] <= start]
                if len(kept) != len(rows):
                    self.path.write_text("".join(r + "\n" for r in kept))
            self.tb = SummaryWriter(str(workdir / "tb"), purge_step=start + 1 if start else None)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one record and its scalars."""
        if not self.active:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.tb is not None:
            self.tb.close()


def host_copy(tree: Any) -> Any:
    """This process's copy of a replicated global tree, as numpy (works across hosts)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def check_workdir_config(workdir: Path, cfg: ClipConfig,
                         hint: str = "use a new --workdir (or the same config) to resume") -> None:
    """ConfigError if the workdir's config.json differs from `cfg` in a field that changes the results."""
    path = workdir / "config.json"
    if not path.exists():
        return
    stored = json.loads(path.read_text())
    kind = stored.pop("kind", ClipConfig.kind)  # older config.json files are two-tower runs'
    if kind != cfg.kind:
        raise ConfigError(f"workdir {workdir} holds a {kind} run, not a {cfg.kind} one: {hint}")
    # Compared as JSON (tuples read back as lists); a field missing from an older config.json had its
    # default value then.
    as_json = lambda c: json.loads(json.dumps(dataclasses.asdict(c)))
    current = as_json(cfg)
    stored = {**as_json(type(cfg)()), **stored}
    diff = sorted(k for k in current if stored[k] != current[k] and k not in _RESUMABLE)
    if diff:
        k = diff[0]
        raise ConfigError(f"workdir {workdir} holds a run with {k}={stored[k]!r}, not {current[k]!r}: {hint}")


def _check_config(workdir: Path, cfg: ClipConfig, resuming: bool) -> None:
    """Write config.json, or refuse to resume a workdir whose checkpoints came from another config."""
    path = workdir / "config.json"
    current = config_to_json(cfg)
    if resuming:
        check_workdir_config(workdir, cfg)
    if jax.process_index() == 0:
        path.with_suffix(".tmp").write_text(json.dumps(current, indent=1))
        path.with_suffix(".tmp").replace(path)


# Fields that may change between a run and its resumption without changing what is computed.
_RESUMABLE = {"log_every", "eval_every", "ckpt_every", "keep", "final_eval", "data_dir", "evals"}


def train_and_evaluate(cfg: ClipConfig, workdir: str | Path, *, stop_after: int | None = None,
                       progress: bool = True, trainer: Trainer | None = None) -> dict[str, Any]:
    """Train (resuming from `workdir` if it holds checkpoints) and evaluate; returns the final metrics.

    `stop_after` ends this invocation after that many global steps (a pre-emption, for tests); the
    next call on the same workdir continues. `trainer` defaults to the trainer of the config's kind.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    resuming = (workdir / "checkpoints").is_dir() and any(
        p.name.isdigit() for p in (workdir / "checkpoints").iterdir())
    data = load_data(cfg, workdir)
    trainer = trainer or make_trainer(cfg, data.tokenizer.vocab_size)
    local_batch = per_process_batch_size(cfg.batch)
    dataset = make_dataset(data.train, batch_size=local_batch, seed=cfg.seed, tokenizer=data.tokenizer,
                           max_len=cfg.max_len)
    _check_config(workdir, cfg, resuming)  # after set-up succeeded, so bad input never locks a workdir
    ckpt = Checkpointer(workdir / "checkpoints", every=cfg.ckpt_every, keep=cfg.keep)
    restored = ckpt.restore_latest(trainer.abstract_state())
    if restored is None:
        start, state, data_state = 0, trainer.init(jax.random.key(cfg.seed)), None
        if trainer.warm_start is not None:
            state = trainer.warm_start(state)
    else:
        start, state, record = restored
        data_state = record["data"]
    if jax.process_count() > 1:
        # Every host must continue from the same step; one that could not read the newest checkpoint
        # would otherwise train a different model and hang at the next collective.
        from jax.experimental import multihost_utils

        starts = np.asarray(multihost_utils.process_allgather(np.int32(start)))
        if not (starts == start).all():
            raise ResumeMismatch(f"hosts restored different checkpoint steps {starts.tolist()} from "
                                   f"{ckpt.directory}: make every host read the same checkpoint directory")
    evaluators = trainer.evaluators(data)
    iterator = make_iterator(dataset, state=data_state)
    log = MetricsLog(workdir, start)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    pending: list[tuple[int, dict]] = []
    last_good = start if restored is not None else None
    result: dict[str, Any] = {"step": start}

    def flush() -> dict[str, float]:
        """Check every pending loss is finite; return the newest step's host metrics."""
        host = [(s, {k: float(v) for k, v in jax.device_get(m).items()}) for s, m in pending]
        pending.clear()
        for s, m in host:
            if not math.isfinite(m["loss"]):
                where = (f"the last good checkpoint (step {last_good}) is kept in {ckpt.directory}"
                         if last_good is not None else "no checkpoint was written")
                raise TrainingDiverged(f"loss is {m['loss']} at step {s}: training stopped; {where}. "
                                       f"Lower lr (now {cfg.lr}) or raise warmup_steps.")
        return host[-1][1] if host else {}

    bar = tqdm(total=end, initial=start, desc="train", disable=not progress or jax.process_index() != 0)
    try:
        for step in range(start + 1, end + 1):
            local = next(iterator)
            batch = parallel.global_batch({k: local[k] for k in trainer.batch_keys}, trainer.mesh)
            state, metrics = trainer.step(state, batch)
            pending.append((step, metrics))
            bar.update(1)
            is_eval = step % cfg.eval_every == 0 or (step == cfg.steps and cfg.final_eval)
            is_ckpt = step % cfg.ckpt_every == 0 or step == end
            if step % cfg.log_every == 0 or is_eval or is_ckpt:
                logged = flush()
                bar.set_postfix(loss=f"{logged['loss']:.4f}")
                if is_eval:
                    logged.update(run_evaluators(evaluators, host_copy(trainer.eval_variables(state))))
                    if jax.process_index() == 0:
                        (workdir / "eval.json").write_text(json.dumps({"step": step, **logged}, indent=1))
                log.write(step, logged)
                result = {"step": step, **logged}
            if is_ckpt:
                ckpt.save(step, state, {"data": iterator.get_state(), "step": step}, force=True)
                last_good = step
    finally:
        bar.close()
        log.close()
        ckpt.close()
    result["state"] = state
    return result


def evaluate_workdir(workdir: str | Path) -> dict[str, Any]:
    """Evaluate the newest readable checkpoint of a training workdir; writes and returns eval.json."""
    workdir = Path(workdir)
    path = workdir / "config.json"
    if not path.exists():
        raise ConfigError(f"--workdir {workdir} is invalid: no config.json (train there first)")
    try:
        cfg = config_from_json(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--workdir {workdir}: config.json is unreadable ({err})") from None
    data = load_data(cfg, workdir)
    trainer = make_trainer(cfg, data.tokenizer.vocab_size, for_training=False)
    ckpt = Checkpointer(workdir / "checkpoints", every=cfg.ckpt_every, keep=cfg.keep)
    try:
        restored = ckpt.restore_latest(trainer.abstract_state())
    finally:
        ckpt.close()
    if restored is None:
        raise ConfigError(f"--workdir {workdir} is invalid: no readable checkpoint under checkpoints/")
    step, state, _ = restored
    metrics = run_evaluators(trainer.evaluators(data), host_copy(trainer.eval_variables(state)))
    out = {"step": step, **metrics}
    if jax.process_index() == 0:
        (workdir / "eval.json").write_text(json.dumps(out, indent=1))
    return out
