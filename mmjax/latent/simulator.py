"""The latent-variable model of Cai et al. (arXiv 2504.10143) in jax.numpy: latents, selection/perturbation
bias, mixings. The causal option is an mmjax extension (docs/design.md#mmjax-extensions).

Everything that only changes values (bias masks, p_change, dependent/causal switches) is a traced
array, so one compiled program serves every bias setting of the same shape. Shapes come from the
static `LatentShape`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclass(frozen=True)
class LatentShape:
    """Static sizes: semantic/image-specific/text-specific dims and the text's semantic slots."""

    n_s: int = 10
    n_x: int = 5
    n_t: int = 5
    # Number of semantic coordinates the text mixing reads. Equal to |I_theta| reproduces the paper's
    # text dimension exactly; n_s lets every selection share one compile (unused slots are zero, so
    # the text is still an injective function of (s~_theta, m_t)).
    text_slots: int = 10
    mixing_layers: int = 3
    cond_samples: int = 25_000
    cond_rank: int = 25

    @property
    def x_dim(self) -> int:
        """Image observation dimension."""
        return self.n_s + self.n_x

    @property
    def t_dim(self) -> int:
        """Text observation dimension."""
        return self.text_slots + self.n_t


class Bias(NamedTuple):
    """Traced description of one generative setting (all arrays, vmappable)."""

    theta: Array  # (n_s,) 0/1 selection mask
    rho: Array  # (n_s,) 0/1 perturbation mask, a proper subset of theta
    p_change: Array  # () probability that a perturbed coordinate is distorted
    dependent: Array  # () 0/1: Wishart covariances instead of identities
    causal: Array  # () 0/1: linear-Gaussian DAG over s
    reference_cov: Array  # () 0/1: the reference's shared draws (Sigma_eps = Sigma_s, Sigma_mt = Sigma_mx)


class World(NamedTuple):
    """Everything drawn once per seed: covariance factors, DAG, and the two mixing networks."""

    g_s: Array  # Wishart factors: s ~ N(0, g_s g_sᵀ) in the dependent setting
    g_x: Array
    g_t: Array
    g_eps: Array
    dag: Array  # (I - B)^-1 of the causal option
    dag_bias: Array
    mix_x: tuple[Array, ...]
    mix_t: tuple[Array, ...]


class Sample(NamedTuple):
    """One batch of observations with its ground truth."""

    x: Array
    t: Array
    s: Array
    s_tilde: Array
    m_x: Array
    m_t: Array


def wishart_factor(key: Array, n: int) -> Array:
    """G with G Gᵀ ~ Wishart(df=n, scale=I), unnormalised as in the reference."""
    return jax.random.normal(key, (n, n))


def _column_normalised_uniform(key: Array, count: int, dim: int) -> Array:
    w = jax.random.uniform(key, (count, dim, dim), minval=-1.0, maxval=1.0)
    return w / jnp.linalg.norm(w, axis=1, keepdims=True)


def condition_numbers(w: Array) -> Array:
    """Condition numbers σ_max / σ_min of a stack of square matrices, from their singular values.

    A backward-stable SVD returns each σ_i with absolute error ≤ p(n)·ε·σ_max, so the relative error
    of κ is ≤ p(n)·ε·(1 + κ) to first order (n = matrix size, ε = the dtype's machine epsilon).
    The eigenvalues of WᵀW would instead carry relative error ~ε·κ² in λ_min: κ = 288 in float32
    already cost 1.7e-3.
    """
    sv = jnp.linalg.svd(w, compute_uv=False)
    return sv[..., 0] / jnp.maximum(sv[..., -1], jnp.finfo(sv.dtype).tiny)


def well_conditioned_matrix(key: Array, dim: int, samples: int, rank: int) -> Array:
    """A U(-1,1) column-normalised matrix whose condition number is at most the rank/samples quantile.

    The reference redraws until cond < the `rank`-th smallest of `samples` draws. Keeping one of those
    `rank` sub-threshold draws (picked at random) gives a matrix from the same conditional
    distribution without the ~samples/rank extra redraws.
    """
    k_draw, k_pick = jax.random.split(key)
    w = _column_normalised_uniform(k_draw, samples, dim)
    cond = condition_numbers(w)
    best = jnp.argsort(cond)[:rank]
    return w[best[jax.random.randint(k_pick, (), 0, rank)]]


def mixing_network(key: Array, dim: int, shape: LatentShape) -> tuple[Array, ...]:
    """Weights (out x in) of a bias-free invertible MLP with `shape.mixing_layers` layers."""
    keys = jax.random.split(key, shape.mixing_layers)
    return tuple(
        well_conditioned_matrix(k, dim, shape.cond_samples, shape.cond_rank) for k in keys
    )


def apply_mixing(weights: tuple[Array, ...], z: Array) -> Array:
    """Apply the mixing: W z with LeakyReLU(0.2) between layers, none after the last."""
    for i, w in enumerate(weights):
        z = z @ w.T
        if i < len(weights) - 1:
            z = jax.nn.leaky_relu(z, 0.2)
    return z


def random_dag(key: Array, n: int, edge_prob: float = 0.5) -> tuple[Array, Array]:
    """(I - B)^-1 and intercepts of a linear-Gaussian SCM along a random topological order."""
    k_perm, k_edge, k_w, k_sign, k_b = jax.random.split(key, 5)
    order = jax.random.permutation(k_perm, n)
    rank = jnp.argsort(order)
    parent_before = rank[None, :] < rank[:, None]  # [child, parent]
    edges = parent_before & (jax.random.uniform(k_edge, (n, n)) < edge_prob)
    weights = jax.random.uniform(k_w, (n, n), minval=0.5, maxval=1.5)
    weights = weights * jnp.where(jax.random.bernoulli(k_sign, 0.5, (n, n)), 1.0, -1.0)
    b = jnp.where(edges, weights, 0.0) / jnp.sqrt(jnp.maximum(edges.sum(1, keepdims=True), 1))
    a = jnp.linalg.inv(jnp.eye(n) - b)
    return a, jax.random.uniform(k_b, (n,), minval=-1.0, maxval=1.0)


def make_world(key: Array, shape: LatentShape) -> World:
    """Draw the per-seed structure: covariance factors, DAG and both mixing networks.

    It does not depend on the bias setting, so a sweep draws one world per seed and shares it across
    settings (as the reference does by seeding every setting alike); `sample` applies the switches.
    """
    ks = jax.random.split(key, 7)
    dag, dag_bias = random_dag(ks[4], shape.n_s)
    return World(
        g_s=wishart_factor(ks[0], shape.n_s),
        g_x=wishart_factor(ks[1], shape.n_x),
        g_t=wishart_factor(ks[2], shape.n_t),
        g_eps=wishart_factor(ks[3], shape.n_s),
        dag=dag,
        dag_bias=dag_bias,
        mix_x=mixing_network(ks[5], shape.x_dim, shape),
        mix_t=mixing_network(ks[6], shape.t_dim, shape),
    )


def covariance_factors(world: World, bias: Bias) -> tuple[Array, Array, Array, Array]:
    """Factors for (s, m_x, m_t, eps): identities unless dependent; shared draws in reference mode."""
    dep, ref = bias.dependent, bias.reference_cov
    g_t = world.g_t
    if world.g_t.shape == world.g_x.shape:
        g_t = jnp.where(ref, world.g_x, world.g_t)
    g_eps = jnp.where(ref, world.g_s, world.g_eps)
    return tuple(
        jnp.where(dep, g, jnp.eye(g.shape[0])) for g in (world.g_s, world.g_x, g_t, g_eps)
    )


def text_semantics(s_tilde: Array, theta: Array, slots: int) -> Array:
    """The selected coordinates of s~ packed into `slots` leading slots, zero-padded."""
    idx = jnp.nonzero(theta, size=slots, fill_value=theta.shape[0])[0]
    padded = jnp.concatenate([s_tilde, jnp.zeros(s_tilde.shape[:-1] + (1,), s_tilde.dtype)], -1)
    return padded[..., idx]


def observe_image(world: World, s: Array, m_x: Array) -> Array:
    """x = g_x(s, m_x); also used to render shifted latents for OOD tests."""
    return apply_mixing(world.mix_x, jnp.concatenate([s, m_x], -1))


def sample(key: Array, world: World, bias: Bias, shape: LatentShape, batch: int) -> Sample:
    """Draw a batch of (x, t) with ground truth s, s~, m_x, m_t."""
    # Two RNG calls per batch, not five: on CPU each threefry call has a fixed cost comparable to
    # the encoders' matmuls at cpu widths.
    k_normal, k_flip = jax.random.split(key)
    n_s, n_x, n_t = shape.n_s, shape.n_x, shape.n_t
    z = jax.random.normal(k_normal, (batch, 2 * n_s + n_x + n_t))
    e_s, u_x, u_t, u_eps = jnp.split(z, [n_s, n_s + n_x, n_s + n_x + n_t], axis=-1)
    g_s, g_x, g_t, g_eps = covariance_factors(world, bias)
    dag = jnp.where(bias.causal, world.dag, jnp.eye(n_s))
    e = e_s @ g_s.T + bias.causal * world.dag_bias
    s = e @ dag.T
    m_x = u_x @ g_x.T
    m_t = u_t @ g_t.T
    flip = jax.random.uniform(k_flip, (batch, n_s)) < bias.p_change
    eps = u_eps @ g_eps.T
    s_tilde = s + bias.rho * flip * eps
    x = observe_image(world, s, m_x)
    z_t = jnp.concatenate([text_semantics(s_tilde, bias.theta, shape.text_slots), m_t], -1)
    t = apply_mixing(world.mix_t, z_t)
    return Sample(x=x, t=t, s=s, s_tilde=s_tilde, m_x=m_x, m_t=m_t)
