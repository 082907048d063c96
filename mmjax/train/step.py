"""The one train step: value_and_grad of a loss, an optax update. Every trainer builds on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

Array = jax.Array
LossFn = Callable[[Any, Array], tuple[Array, dict[str, Array]]]


class TrainState(NamedTuple):
    """Step counter, parameters and optimiser state."""

    step: Array
    params: Any
    opt_state: Any


def init_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh TrainState at step 0."""
    return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                      opt_state=optimizer.init(params))


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Array], tuple[TrainState, dict[str, Array]]]:
    """Build `step(state, key) -> (state, metrics)` for `loss_fn(params, key) -> (loss, aux)`."""

    def step(state: TrainState, key: Array) -> tuple[TrainState, dict[str, Array]]:
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(state.step + 1, params, opt_state), metrics

    return step


def adam_clipped(
    learning_rate: float | Array, clip_norm: float | Array, steps: int, schedule: str = "constant"
) -> optax.GradientTransformation:
    """Adam with global-norm clipping; `schedule` is 'constant' or 'cosine' (decay to 0 over steps).

    `learning_rate` and `clip_norm` may be traced arrays, so one compiled run serves vmapped values.
    """
    if schedule == "constant":
        lr: Any = lambda count: learning_rate
    elif schedule == "cosine":
        cosine = optax.cosine_decay_schedule(1.0, steps)
        lr = lambda count: learning_rate * cosine(count)
    else:
        raise ValueError(f"schedule={schedule!r}: allowed 'constant' or 'cosine'")
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(),
        optax.scale_by_learning_rate(lr),
    )
