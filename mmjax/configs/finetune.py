"""Validated config of fine-tuning a pre-trained fusion model on a downstream task.

The tasks are the generated versions of ALBEF's downstream tasks (Li et al. 2021, arXiv 2107.07651, §5):
`qa` (question answering, VQA v2), `pairs` (reasoning over an image pair, NLVR²) and `entailment` (visual
entailment, SNLI-VE), from `mmjax.data.vl_tasks`. The model, its sizes, image size and tokenizer come
from the pre-training workdir named by `pretrained` (a `mmjax train` run of a `FusionConfig`); this
config holds the task, the data sizes, the head, the optimiser and the loop. `inputs` gives the
learned unimodal baselines: `text` blanks every image (one constant image), `image` blanks every text
(one constant `[CLS] [SEP]` row), so the same model and head can only use the other modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mmjax.configs.common import _fail

FINETUNE_TASKS = ("qa", "pairs", "entailment")
FINETUNE_INPUTS = ("both", "text", "image")
FINETUNE_INITS = ("pretrained", "scratch")
FINETUNE_EVALS = ("task",)


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run: task, pre-training workdir, data sizes, head, optimiser and loop."""

    task: str = "qa"
    pretrained: str = ""  # the pre-training workdir (a fusion run: config.json, tokenizer.json, checkpoints/)
    inputs: str = "both"  # "text": images blanked (text-only baseline); "image": texts blanked
    init: str = "pretrained"  # "scratch": the same model from a random init (what pre-training adds)
    # data (mmjax.data.vl_tasks): sizes of the generated splits; the image size is the pre-training one
    num_train: int = 8192
    num_val: int = 1024
    num_test: int = 1024
    data_seed: int = 0
    types: tuple[str, ...] | None = None  # the task's question / statement / hypothesis types; None: default
    max_len: int = 0  # token rows of the texts; 0 = the pre-training max_len (its position embeddings' count)
    # head: an MLP (hidden width, ReLU) on the fused CLS feature (pairs: on both images' fused CLS)
    head_hidden: int = 0  # 0 = the model width
    # optimiser and loop (as ClipConfig's)
    batch: int = 64
    steps: int = 600
    lr: float = 5e-4
    warmup_steps: int = 30
    weight_decay: float = 0.02
    clip_norm: float = 1.0
    accum_steps: int = 1
    seed: int = 0
    log_every: int = 20
    eval_every: int = 100
    ckpt_every: int = 100
    keep: int = 2
    final_eval: bool = True
    evals: tuple[str, ...] = FINETUNE_EVALS

    kind: ClassVar[str] = "finetune"
    allowed_evals: ClassVar[tuple[str, ...]] = FINETUNE_EVALS
    needs_mask_token: ClassVar[bool] = False

    def __post_init__(self) -> None:
        # lists (config.json, a config file) are stored as tuples, so a config equals its JSON round trip
        object.__setattr__(self, "evals", tuple(self.evals))
        if self.types is not None:
            object.__setattr__(self, "types", tuple(self.types))
        choices = (("task", FINETUNE_TASKS), ("inputs", FINETUNE_INPUTS), ("init", FINETUNE_INITS))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                _fail(name, getattr(self, name), f"allowed: {', '.join(allowed)}")
        for name in ("num_train", "num_val", "num_test", "batch", "steps", "accum_steps",
                     "log_every", "eval_every", "ckpt_every", "keep"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                _fail(name, value, "must be a positive integer")
        if self.max_len != 0 and not 3 <= self.max_len:
            _fail("max_len", self.max_len, "must be 0 (the pre-training max_len) or at least 3")
        if self.head_hidden < 0:
            _fail("head_hidden", self.head_hidden, "must be >= 0 (0: the model width)")
        if self.batch % self.accum_steps:
            _fail("accum_steps", self.accum_steps, f"must divide batch={self.batch}")
        if self.batch > self.num_train:
            _fail("batch", self.batch, f"must be at most num_train={self.num_train}")
        if not self.lr > 0:
            _fail("lr", self.lr, "must be > 0")
        if not 0 <= self.warmup_steps < self.steps:
            _fail("warmup_steps", self.warmup_steps, f"must be in [0, steps={self.steps})")
        if self.weight_decay < 0 or not self.clip_norm > 0:
            name = "weight_decay" if self.weight_decay < 0 else "clip_norm"
            _fail(name, getattr(self, name), "must be >= 0" if name == "weight_decay" else "must be > 0")
        if self.types is not None and not self.types:
            _fail("types", self.types, "must name at least one type (or None: the task's default)")
        if not self.evals or len(set(self.evals)) != len(self.evals) or not set(self.evals) <= set(
                self.allowed_evals):
            _fail("evals", ",".join(self.evals),
                  f"must be distinct names from {', '.join(self.allowed_evals)}")
