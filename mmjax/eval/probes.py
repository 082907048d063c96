"""Linear, k-shot and nearest-class-mean probes on frozen features (as in Jiang et al., arXiv 2303.05952).

The linear probe is multinomial logistic regression fitted full batch by L-BFGS (optax, zoom line
search) on features standardised with train-split statistics. It minimises

    mean_i CE(W x_i + b, y_i) + ½ · l2 · ‖W‖²        (the bias is not penalised),

which has the same minimiser as scikit-learn's ``LogisticRegression(C=C)`` (``C · Σ_i CE + ½‖W‖²``)
when ``l2 = 1 / (C · n_train)``. The objective is strictly convex in W, so both solvers find the same
probabilities. The probes are jitted with ``n_classes`` (and k) static; only ``sample_k_shot``'s
input check runs on the host.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from jax import lax

from mmjax.eval.gap import l2_normalize
from mmjax.eval.identifiability import standardize

Array = jax.Array

_HI = lax.Precision.HIGHEST


def _logits(params: dict[str, Array], x: Array) -> Array:
    return jnp.matmul(x, params["w"], precision=_HI) + params["b"]


def _accuracy(logits: Array, labels) -> Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == jnp.asarray(labels, jnp.int32))


@functools.partial(jax.jit, static_argnames="n_classes")
def fit_logistic_regression(
    x, labels, n_classes: int, *, l2: float = 1e-4, steps: int = 1000, tol: float = 1e-6
) -> dict[str, Array]:
    """Full-batch L-BFGS on mean cross-entropy + ½·l2·‖W‖²; stops at ‖grad‖ < tol or after `steps`."""
    x = jnp.asarray(x, jnp.float32)
    targets = jax.nn.one_hot(jnp.asarray(labels, jnp.int32), n_classes)

    def objective(p: dict[str, Array]) -> Array:
        ce = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(_logits(p, x)), axis=-1))
        return ce + 0.5 * l2 * jnp.sum(p["w"] ** 2)

    opt = optax.lbfgs()
    # Reuses the value and gradient the line search already computed at the accepted point.
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=objective)
        return optax.apply_updates(p, updates), state

    def keep_going(carry) -> Array:
        _, state = carry
        count = otu.tree_get(state, "count")
        grad_norm = otu.tree_norm(otu.tree_get(state, "grad"))
        # At count 0 the stored gradient is a placeholder of zeros, not the real one.
        return (count == 0) | ((count < steps) & (grad_norm >= tol))

    # Zero start, as scikit-learn: the optimum is unique, and it avoids a key argument.
    params = {"w": jnp.zeros((x.shape[1], n_classes), jnp.float32), "b": jnp.zeros((n_classes,), jnp.float32)}
    params, _ = lax.while_loop(keep_going, step, (params, opt.init(params)))
    return params


@jax.jit
def logistic_proba(params: dict[str, Array], x) -> Array:
    """Class probabilities (n, n_classes) of a fitted logistic regression on (standardised) features."""
    return jax.nn.softmax(_logits(params, jnp.asarray(x, jnp.float32)), axis=-1)


@functools.partial(jax.jit, static_argnames="n_classes")
def linear_probe(
    train_feats,
    train_labels,
    test_feats,
    test_labels,
    n_classes: int,
    *,
    l2: float = 1e-4,
    steps: int = 1000,
    tol: float = 1e-6,
) -> Array:
    """Test accuracy of multinomial logistic regression on train-standardised frozen features."""
    x_train, x_test = standardize(train_feats, test_feats)
    params = fit_logistic_regression(x_train, train_labels, n_classes, l2=l2, steps=steps, tol=tol)
    return _accuracy(_logits(params, x_test), test_labels)


@functools.partial(jax.jit, static_argnames="n_classes")
def nearest_class_mean_accuracy(train_feats, train_labels, test_feats, test_labels, n_classes: int) -> Array:
    """Test accuracy of the nearest class mean by cosine, means taken over L2-normalised features."""
    onehot = jax.nn.one_hot(jnp.asarray(train_labels, jnp.int32), n_classes)
    means = l2_normalize(jnp.matmul(onehot.T, l2_normalize(train_feats), precision=_HI))
    return _accuracy(jnp.matmul(l2_normalize(test_feats), means.T, precision=_HI), test_labels)


def sample_k_shot(key: Array, labels, n_classes: int, k: int) -> Array:
    """Indices of k train examples per class, drawn without replacement, grouped by class (host check)."""
    labels_np = np.asarray(labels)
    if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= n_classes):
        lo, hi = labels_np.min(), labels_np.max()
        raise ValueError(f"sample_k_shot: labels must lie in [0, {n_classes}), got {lo}..{hi}")
    counts = np.bincount(labels_np, minlength=n_classes)
    if counts.min() < k:
        raise ValueError(
            f"sample_k_shot: k={k} but the smallest class count is {counts.min()} (class {counts.argmin()})"
        )
    return _draw_k_shot(key, jnp.asarray(labels_np, jnp.int32), n_classes, k)


@functools.partial(jax.jit, static_argnames=("n_classes", "k"))
def _draw_k_shot(key: Array, labels: Array, n_classes: int, k: int) -> Array:
    # Sorting by (label, random key) shuffles within each class; the first k of each block are the draw.
    order = jnp.lexsort((jax.random.uniform(key, labels.shape), labels))
    starts = jnp.searchsorted(labels[order], jnp.arange(n_classes))
    return order[(starts[:, None] + jnp.arange(k)[None, :]).reshape(-1)]


def k_shot_probe(
    key: Array,
    feats,
    labels,
    test_feats,
    test_labels,
    n_classes: int,
    k: int,
    *,
    method: str = "linear",
    l2: float = 1e-4,
    steps: int = 1000,
    tol: float = 1e-6,
) -> Array:
    """Test accuracy of a probe ("linear" or "ncm") fitted on k random train examples per class."""
    if method not in ("linear", "ncm"):
        raise ValueError(f"k_shot_probe: method must be 'linear' or 'ncm', got {method!r}")
    idx = sample_k_shot(key, labels, n_classes, k)
    x, y = jnp.asarray(feats, jnp.float32)[idx], jnp.asarray(labels, jnp.int32)[idx]
    if method == "ncm":
        return nearest_class_mean_accuracy(x, y, test_feats, test_labels, n_classes)
    return linear_probe(x, y, test_feats, test_labels, n_classes, l2=l2, steps=steps, tol=tol)
