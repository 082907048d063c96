"""The one train step: value_and_grad of a loss, an optax update. Every trainer builds on it.

A loss may carry state that gradients do not train (`make_train_step(..., carry_state=True)`): the
fusion trainer's feature queues go through it, micro-batch by micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict[str, Array]]]


class TrainState(NamedTuple):
    """Step counter, parameters and optimiser state."""

    step: Array
    params: Any
    opt_state: Any


def init_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh TrainState at step 0."""
    return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                      opt_state=optimizer.init(params))


def micro_batches(batch: Any, k: int) -> Any:
    """Split every leaf's leading axis B into (k, B/k): micro-batch i holds rows i, i+k, i+2k, ...

    Striding (not blocking) keeps each micro-batch spread evenly over a batch-sharded leading axis,
    so the split needs no communication between devices.
    """
    return jax.tree.map(lambda x: jax.numpy.moveaxis(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 1, 0),
                        batch)


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, accum_steps: int = 1, *,
    carry_state: bool = False,
) -> Callable[..., tuple]:
    """Build `step(state, key, *batch) -> (state, metrics)` for `loss_fn(params, key, *batch) -> (loss, aux)`.

    With `accum_steps` = k > 1 every batch leaf is split into k micro-batches (`micro_batches`); loss,
    aux and gradients are averaged over them (each micro-batch's loss sees only its own rows, so
    contrastive negatives come from the micro-batch) before one optimiser update.

    With `carry_state`, the loss also reads and returns state that gradients do not train (a queue of
    features, say): `loss_fn(params, extra, key, *batch) -> (loss, (aux, extra))`, and the step is
    `step(state, extra, key, *batch) -> (state, extra, metrics)`. Under accumulation `extra` is threaded
    through the micro-batches in order (micro-batch i sees what micro-batch i − 1 returned), not averaged.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if carry_state:
        stateful = grad_fn
    else:
        def stateful(params: Any, extra: Any, key: Array, *batch: Any):
            """The stateless loss as a stateful one whose state passes through unchanged."""
            (loss, aux), grads = grad_fn(params, key, *batch)
            return (loss, (aux, extra)), grads

    def accumulated(params: Any, extra: Any, key: Array, *batch: Any):
        def body(carry, xs):
            total, extra = carry
            i, micro = xs
            (loss, (aux, extra)), grads = stateful(params, extra, jax.random.fold_in(key, i), *micro)
            total = jax.tree.map(lambda a, b: a + b / accum_steps, total, ((loss, aux), grads))
            return (total, extra), None

        micro = micro_batches(batch, accum_steps)
        first = jax.tree.map(lambda x: x[0], micro)
        (loss_s, (aux_s, _)), grads_s = jax.eval_shape(stateful, params, extra, key, *first)
        zeros = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), ((loss_s, aux_s), grads_s))
        (total, extra), _ = jax.lax.scan(body, (zeros, extra), (jax.numpy.arange(accum_steps), micro))
        (loss, aux), grads = total
        return (loss, (aux, extra)), grads

    def update(state: TrainState, extra: Any, key: Array, *batch: Any):
        if accum_steps > 1:
            (loss, (aux, extra)), grads = accumulated(state.params, extra, key, *batch)
        else:
            (loss, (aux, extra)), grads = stateful(state.params, extra, key, *batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(state.step + 1, params, opt_state), extra, metrics

    if carry_state:
        return update

    def step(state: TrainState, key: Array, *batch: Any) -> tuple[TrainState, dict[str, Array]]:
        state, _, metrics = update(state, (), key, *batch)
        return state, metrics

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
