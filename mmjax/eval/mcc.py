"""Matthews correlation (MCC) of discrete factors predicted from a representation (SPEC A5).

Linear probe: multinomial logistic regression (`probes.fit_logistic_regression`); non-linear probe: a
one-hidden-layer ReLU classifier (100 units, Adam, full batch). Both run on features standardised with
fit-split statistics and are pure, jittable and vmappable (class counts are static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mmjax.eval.identifiability import standardize
from mmjax.eval.probes import _logits, fit_logistic_regression

Array = jax.Array


def mcc(y_true, y_pred, n_classes: int) -> Array:
    """Multiclass Matthews correlation coefficient (scikit-learn's `matthews_corrcoef`); 0 if undefined."""
    conf = jnp.zeros((n_classes, n_classes)).at[jnp.asarray(y_true), jnp.asarray(y_pred)].add(1.0)
    t, p = conf.sum(1), conf.sum(0)
    s, c = conf.sum(), jnp.trace(conf)
    cov = c * s - jnp.dot(t, p)
    denom = jnp.sqrt((s * s - jnp.dot(p, p)) * (s * s - jnp.dot(t, t)))
    return jnp.where(denom > 0, cov / jnp.where(denom > 0, denom, 1.0), 0.0)


def linear_mcc(x_fit, y_fit, x_test, y_test, n_classes: int, l2: float = 1e-4, steps: int = 200) -> Array:
    """Test MCC of logistic regression on standardised features."""
    x_fit, x_test = standardize(x_fit, x_test)
    params = fit_logistic_regression(x_fit, y_fit, n_classes, l2=l2, steps=steps)
    return mcc(y_test, jnp.argmax(_logits(params, x_test), -1), n_classes)


def mlp_mcc(key, x_fit, y_fit, x_test, y_test, n_classes: int, hidden: int = 100, steps: int = 300,
            lr: float = 1e-2, l2: float = 1e-4) -> Array:
    """Test MCC of a one-hidden-layer ReLU classifier trained full batch with Adam."""
    x_fit, x_test = standardize(x_fit, x_test)
    k1, k2 = jax.random.split(key)
    d = x_fit.shape[1]
    params = {"w1": jax.random.normal(k1, (d, hidden)) * jnp.sqrt(2.0 / d), "b1": jnp.zeros(hidden),
              "w2": jax.random.normal(k2, (hidden, n_classes)) * jnp.sqrt(1.0 / hidden),
              "b2": jnp.zeros(n_classes)}
    apply = lambda p, x: jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    targets = jax.nn.one_hot(y_fit, n_classes)

    def loss(p):
        ce = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(apply(p, x_fit)), -1))
        return ce + 0.5 * l2 * (jnp.sum(p["w1"] ** 2) + jnp.sum(p["w2"] ** 2))

    opt = optax.adam(lr)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return mcc(y_test, jnp.argmax(apply(params, x_test), -1), n_classes)
