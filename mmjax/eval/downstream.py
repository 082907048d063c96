"""Downstream ID/OOD probes on a frozen image representation (Cai et al., arXiv 2504.10143)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mmjax.eval.identifiability import linear_r2, r2_score

Array = jax.Array

DOWNSTREAM_KS = (3, 5, 7, 9)
METRICS = tuple([f"y{k}_id_r2" for k in DOWNSTREAM_KS] + [f"y{k}_ood_r2" for k in DOWNSTREAM_KS]
                + ["label_id_acc", "label_ood_acc"])


def regression_target(z: Array) -> Array:
    """The reference's f(z): a sum of polynomial, pairwise, triple, trigonometric and log terms."""
    pairs = (jnp.sum(z, -1) ** 2 - jnp.sum(z**2, -1)) / 2.0
    p1, p2, p3 = jnp.sum(z, -1), jnp.sum(z**2, -1), jnp.sum(z**3, -1)
    triples = (p1**3 - 3.0 * p1 * p2 + 2.0 * p3) / 6.0  # e3 via Newton's identities
    return (p2 + 0.3 * p3 + 0.5 * pairs + 0.2 * triples
            + 0.7 * jnp.sum(jnp.sin(z) + jnp.cos(z), -1)
            + 0.4 * jnp.sum(jnp.log1p(jnp.abs(z)), -1) + 0.6 * jnp.sum(jnp.exp(-jnp.abs(z)), -1))


def two_means_threshold(y: Array, iters: int = 50) -> Array:
    """Threshold of 1-d 2-means (Lloyd from the extremes): the midpoint of the two centres."""

    def step(centres, _):
        lo, hi = centres
        upper = y > (lo + hi) / 2.0
        new_hi = jnp.sum(jnp.where(upper, y, 0.0)) / jnp.maximum(jnp.sum(upper), 1)
        new_lo = jnp.sum(jnp.where(upper, 0.0, y)) / jnp.maximum(jnp.sum(~upper), 1)
        return (new_lo, new_hi), None

    (lo, hi), _ = lax.scan(step, (jnp.min(y), jnp.max(y)), None, length=iters)
    return (lo + hi) / 2.0


def ood_shift(key: Array, s: Array, shifted_dims: tuple[int, ...] = (8, 9),
              outlier_rate: float = 0.1, outlier_value: float = 10.0) -> Array:
    """s_9, s_10 <- 2 sign(s) s²; independently per dimension 10 % of samples set to ±10."""
    k_mask, k_sign = jax.random.split(key)
    dims = jnp.zeros(s.shape[-1], bool).at[jnp.array(shifted_dims)].set(True)
    out = jnp.where(dims, 2.0 * jnp.sign(s) * s**2, s)
    hit = jax.random.bernoulli(k_mask, outlier_rate, s.shape)
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, s.shape), 1.0, -1.0)
    return jnp.where(hit, sign * outlier_value, out)


def fit_mlp_probe(key: Array, x: Array, y: Array, out_dim: int, classify: bool,
                  steps: int = 500, hidden: int = 100, lr: float = 1e-3, l2: float = 0.0):
    """Full-batch Adam on a d -> hidden ReLU -> out_dim MLP (optional L2 on the weights); its params."""
    k1, k2 = jax.random.split(key)
    d = x.shape[1]
    params = {"w1": jax.random.normal(k1, (d, hidden)) * jnp.sqrt(2.0 / d), "b1": jnp.zeros(hidden),
              "w2": jax.random.normal(k2, (hidden, out_dim)) / jnp.sqrt(hidden),
              "b2": jnp.zeros(out_dim)}

    def loss(p):
        out = mlp_apply(p, x)
        penalty = 0.5 * l2 * (jnp.sum(p["w1"] ** 2) + jnp.sum(p["w2"] ** 2))
        if classify:
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean() + penalty
        return jnp.mean((out[:, 0] - y) ** 2) + penalty

    opt = optax.adam(lr)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params


def mlp_apply(p, x: Array) -> Array:
    """Forward pass of the probe."""
    return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def _linear_fit(x: Array, y: Array) -> Array:
    xa = jnp.concatenate([x, jnp.ones((x.shape[0], 1))], 1)
    return jnp.linalg.lstsq(xa, y)[0]


def _linear_predict(w: Array, x: Array) -> Array:
    return jnp.concatenate([x, jnp.ones((x.shape[0], 1))], 1) @ w


def downstream_metrics(key: Array, h_fit: Array, s_fit: Array, h_id: Array, s_id: Array,
                       h_ood: Array, s_ood_labels: Array, steps: int = 2000) -> tuple[Array, Array]:
    """(linear, MLP) values of METRICS; labels and targets always come from unshifted latents."""
    keys = jax.random.split(key, len(DOWNSTREAM_KS) + 1)
    lin, mlp = [], []
    lin_ood, mlp_ood = [], []
    for k, pkey in zip(DOWNSTREAM_KS, keys[:-1], strict=False):
        y_fit, y_id, y_ood = (regression_target(s[:, :k]) for s in (s_fit, s_id, s_ood_labels))
        # Targets are standardised with fit-split statistics; R² does not change under that map.
        mu, sd = jnp.mean(y_fit), jnp.std(y_fit) + 1e-8
        z_fit, z_id, z_ood = ((y - mu) / sd for y in (y_fit, y_id, y_ood))
        lin.append(linear_r2(h_fit, z_fit, h_id, z_id))
        lin_ood.append(linear_r2(h_fit, z_fit, h_ood, z_ood))
        p = fit_mlp_probe(pkey, h_fit, z_fit, 1, False, steps)
        mlp.append(r2_score(z_id[:, None], mlp_apply(p, h_id)))
        mlp_ood.append(r2_score(z_ood[:, None], mlp_apply(p, h_ood)))
    y5 = [regression_target(s[:, :5]) for s in (s_fit, s_id, s_ood_labels)]
    thr = two_means_threshold(y5[0])
    labels = [(y > thr).astype(jnp.int32) for y in y5]
    w = _linear_fit(h_fit, labels[0].astype(jnp.float32))
    lin_acc = [jnp.mean((_linear_predict(w, h) > 0.5) == (lab == 1))
               for h, lab in ((h_id, labels[1]), (h_ood, labels[2]))]
    p = fit_mlp_probe(keys[-1], h_fit, labels[0], 2, True, steps)
    mlp_acc = [jnp.mean(jnp.argmax(mlp_apply(p, h), -1) == lab)
               for h, lab in ((h_id, labels[1]), (h_ood, labels[2]))]
    return jnp.stack(lin + lin_ood + lin_acc), jnp.stack(mlp + mlp_ood + mlp_acc)
