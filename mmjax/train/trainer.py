"""The interface between a trainer and the one training loop, and the trainer of each config type.

A `Trainer` is what `mmjax.train.loop` runs: compiled `init` and `step` over a mesh, the batch keys
the step reads, the predict functions its evaluators call and the config it was built from. The loop
knows nothing else of the model, so every trainer gets the same checkpoints, resumption, NaN stop,
metrics logging, multi-host data and sharding. The state is a dict of arrays (for every trainer
`train`: a `TrainState`, `rng`: key data; a trainer may add more, e.g. the fusion trainer's momentum
model and feature queues), so the loop checkpoints all of it.

Each config type has a `kind` ("clip": `ClipConfig`, two towers; "fusion": `FusionConfig`, ALBEF;
"finetune": `FinetuneConfig`, a pre-trained fusion model on a downstream task),
written into config.json; `make_trainer` and `config_from_json` dispatch on it. (A FusionConfig *is*
a ClipConfig, so dispatching on `kind`, never on `isinstance(cfg, ClipConfig)`, keeps them apart.)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax
from jax.sharding import Mesh

from mmjax.configs.clip import ClipConfig
from mmjax.configs.common import ConfigError
from mmjax.configs.finetune import FinetuneConfig
from mmjax.configs.fusion import FusionConfig
from mmjax.data.pipeline import IMAGE_KEY, TOKENS_KEY
from mmjax.eval.evaluators import Evaluator, make_evaluators

Array = jax.Array

CONFIG_TYPES: dict[str, type] = {c.kind: c for c in (ClipConfig, FusionConfig, FinetuneConfig)}
TRAINER_MODULES = {"clip": "mmjax.train.clip", "fusion": "mmjax.train.fusion",
                   "finetune": "mmjax.train.finetune"}


@dataclasses.dataclass
class Trainer:
    """Compiled init and step of one config on one mesh, and what the loop needs to run them.

    `init(key) -> state` and `step(state, batch) -> (state, metrics)` are jitted (the state replicated
    and donated, the batch sharded over the mesh's data axis); `batch` holds `batch_keys`; `metrics`
    holds at least `loss`. `predict_fns` are the named functions of `mmjax.eval.evaluators` this model
    offers, called with `eval_variables(state)`.
    """

    cfg: ClipConfig
    model: Any
    mesh: Mesh
    optimizer: optax.GradientTransformation
    init: Callable[[Array], dict]
    step: Callable[[dict, Mapping[str, Array]], tuple[dict, dict]]
    predict_fns: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
    batch_keys: tuple[str, ...] = (IMAGE_KEY, TOKENS_KEY)
    # A fresh run's state → its starting state (the fine-tuning trainer loads pre-trained parameters);
    # the loop calls it once, before step 1, and never on a resumed run (the checkpoint has them).
    warm_start: Callable[[dict], dict] | None = None

    @property
    def config_type(self) -> type[ClipConfig]:
        """The config type this trainer runs (recorded in config.json as its `kind`)."""
        return type(self.cfg)

    def abstract_state(self) -> Any:
        """Shapes, dtypes and shardings of the state (the restore target of a checkpoint)."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def eval_variables(self, state: Mapping[str, Any]) -> Any:
        """The model variables the evaluators score: the trained parameters."""
        return state["train"].params

    def evaluators(self, data: Any) -> list[Evaluator]:
        """The config's evaluators (`cfg.evals`) on the run's data, with the config's settings."""
        cfg = self.cfg
        return make_evaluators(cfg.evals, self.predict_fns, data, seed=cfg.seed,
                               shots=getattr(cfg, "probe_shots", 5),
                               mask_prob=getattr(cfg, "mask_prob", 0.15))


def make_trainer(cfg: ClipConfig, vocab_size: int, mesh: Mesh | None = None,
                 for_training: bool = True) -> Trainer:
    """The trainer of `cfg`'s kind (`mmjax.train.clip` or `mmjax.train.fusion`'s `make_trainer`)."""
    module = importlib.import_module(TRAINER_MODULES[cfg.kind])
    return module.make_trainer(cfg, vocab_size, mesh, for_training=for_training)


def config_to_json(cfg: ClipConfig) -> dict[str, Any]:
    """config.json's content: the config's `kind`, then its fields."""
    return {"kind": cfg.kind, **dataclasses.asdict(cfg)}


def config_from_json(data: Mapping[str, Any]) -> ClipConfig:
    """The config of a config.json (`kind` picks the type; a file without one is a two-tower run's)."""
    data = dict(data)
    kind = data.pop("kind", ClipConfig.kind)
    if kind not in CONFIG_TYPES:
        raise ConfigError(f"kind={kind!r} is invalid: allowed: {', '.join(CONFIG_TYPES)}")
    return CONFIG_TYPES[kind](**data)
