"""Matthews correlation (MCC) of discrete factors predicted from a representation.

The metric of the image–text experiments of Cai et al. (arXiv 2504.10143).

Linear probe: multinomial logistic regression (`probes.fit_logistic_regression`); non-linear probe: a
one-hidden-layer ReLU classifier (100 units, Adam, full batch). Both run on features standardised with
fit-split statistics and are pure, jittable and vmappable (class counts are static).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.eval.downstream import fit_mlp_probe, mlp_apply
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
    params = fit_mlp_probe(key, x_fit, y_fit, n_classes, classify=True, steps=steps, hidden=hidden, lr=lr,
                           l2=l2)
    return mcc(y_test, jnp.argmax(mlp_apply(params, x_test), -1), n_classes)
