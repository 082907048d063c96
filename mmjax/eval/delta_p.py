"""The Δ_p demo: perfectly aligned features lose the label information one modality lacks.

Jiang et al. (arXiv 2303.05952): exact modality alignment is sub-optimal for downstream prediction.

Discrete latent model: a shared z ~ p(z), an image-only u ~ p(u) and a text-only v ~ p(v), all
independent; the image is X_V = (z, u), the text is X_T = (z, v) (each embedded by a fixed invertible
map, which changes no information), and the label is log-linear in (z, v):

    p(y | z, u, v) = p(y | z, v) = softmax(A[z] + beta · B[v])_y.

Since Y ⊥ u | z and u ⊥ (z, v),

    I(X_V; Y) = I(z, u; Y) = H(Y) − H(Y | z, u) = H(Y) − H(Y | z),
    I(X_T; Y) = I(z, v; Y) = H(Y) − H(Y | z, v),

so Δ_p = |I(X_T;Y) − I(X_V;Y)| = H(Y | z) − H(Y | z, v) (≥ 0, conditioning reduces entropy), and the
raw-pair optimum is H(Y | X_V, X_T) = H(Y | z, u, v) = H(Y | z, v). Perfectly aligned features
(Z_V = Z_T, or any bijection between them) can only carry what both inputs share, a function of z,
so their best cross-entropy is ≥ H(Y | z) = H(Y | X_V, X_T) + Δ_p: the gap is at least Δ_p, with
equality when the aligned feature is z itself. At beta = 0 the label ignores v and Δ_p = 0.

The probe is multinomial logistic regression; the label is log-linear in one-hot(z) ⊕ one-hot(v), so
the probe is well specified on every feature set used here and its held-out CE estimates the entropies.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from mmjax.eval.probes import fit_logistic_regression, logistic_proba

FEATURES = ("aligned", "specific", "raw")


@dataclass(frozen=True)
class LatentModel:
    """Marginals of z, u, v and the label logits A (n_z, n_y), B (n_v, n_y) with strength beta."""

    p_z: np.ndarray
    p_u: np.ndarray
    p_v: np.ndarray
    a: np.ndarray
    b: np.ndarray
    beta: float


def make_model(seed: int, beta: float, n_z: int = 4, n_u: int = 3, n_v: int = 4, n_y: int = 3,
               scale: float = 1.0) -> LatentModel:
    """A random latent model; the same seed gives the same marginals and logits for every beta."""
    rng = np.random.default_rng(seed)
    p_z, p_u, p_v = (rng.dirichlet(np.full(n, 5.0)) for n in (n_z, n_u, n_v))
    a = scale * rng.standard_normal((n_z, n_y))
    b = rng.standard_normal((n_v, n_y))
    return LatentModel(p_z, p_u, p_v, a, b, float(beta))


def label_conditional(m: LatentModel) -> np.ndarray:
    """p(y | z, v) as an (n_z, n_v, n_y) table."""
    logits = m.a[:, None, :] + m.beta * m.b[None, :, :]
    logits = logits - logits.max(-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(-1, keepdims=True)


def joint_table(m: LatentModel) -> np.ndarray:
    """p(z, u, v, y) as an (n_z, n_u, n_v, n_y) table."""
    p_zuv = m.p_z[:, None, None] * m.p_u[None, :, None] * m.p_v[None, None, :]
    return p_zuv[..., None] * label_conditional(m)[:, None, :, :]


def entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of a probability table of any shape."""
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def conditional_entropy_y(joint: np.ndarray, keep: tuple[int, ...]) -> float:
    """H(Y | latents on axes `keep`) from p(z, u, v, y); Y is the last axis."""
    drop = tuple(ax for ax in range(joint.ndim - 1) if ax not in keep)
    p_cy = joint.sum(axis=drop)
    return entropy(p_cy) - entropy(p_cy.sum(-1))


def exact_quantities(m: LatentModel) -> dict[str, float]:
    """I(X_T;Y), I(X_V;Y), Δ_p and the entropies H(Y), H(Y|z), H(Y|z,v), H(Y|X_V,X_T) in nats."""
    p = joint_table(m)
    h_y = entropy(p.sum(axis=(0, 1, 2)))
    h_zu, h_zv, h_raw = (conditional_entropy_y(p, keep) for keep in ((0, 1), (0, 2), (0, 1, 2)))
    i_t, i_v = h_y - h_zv, h_y - h_zu
    return {"H_Y": h_y, "I_T_Y": i_t, "I_V_Y": i_v, "delta_p": abs(i_t - i_v),
            "H_Y_given_z": conditional_entropy_y(p, (0,)), "H_Y_given_zv": h_zv, "H_Y_given_raw": h_raw}


def sample(rng: np.random.Generator, m: LatentModel, n: int) -> dict[str, np.ndarray]:
    """n draws of (z, u, v, y)."""
    z = rng.choice(len(m.p_z), size=n, p=m.p_z)
    u = rng.choice(len(m.p_u), size=n, p=m.p_u)
    v = rng.choice(len(m.p_v), size=n, p=m.p_v)
    cdf = np.cumsum(label_conditional(m)[z, v], axis=-1)
    y = np.minimum((rng.random((n, 1)) > cdf).sum(-1), cdf.shape[-1] - 1)
    return {"z": z, "u": u, "v": v, "y": y}


def random_embedding(rng: np.random.Generator, n: int) -> np.ndarray:
    """A fixed random invertible (orthogonal) map R^n -> R^n for one-hot inputs."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


def features(kind: str, s: dict[str, np.ndarray], m: LatentModel, emb_v: np.ndarray,
             emb_t: np.ndarray) -> np.ndarray:
    """aligned: one-hot z; specific: one-hot z ⊕ one-hot v; raw: embedded X_V = (z, u) ⊕ X_T = (z, v)."""
    n_z, n_u, n_v = len(m.p_z), len(m.p_u), len(m.p_v)
    oh_z, oh_v = np.eye(n_z)[s["z"]], np.eye(n_v)[s["v"]]
    if kind == "aligned":
        return oh_z
    if kind == "specific":
        return np.concatenate([oh_z, oh_v], axis=1)
    if kind == "raw":
        x_v = np.eye(n_z * n_u)[s["z"] * n_u + s["u"]] @ emb_v
        x_t = np.eye(n_z * n_v)[s["z"] * n_v + s["v"]] @ emb_t
        return np.concatenate([x_v, x_t], axis=1)
    raise ValueError(f"unknown feature kind {kind!r}; expected one of {FEATURES}")


def heldout_ce(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
               n_classes: int, l2: float = 1e-5) -> float:
    """Held-out mean cross-entropy (nats) of a logistic-regression probe fitted on the train split."""
    params = fit_logistic_regression(jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train), n_classes,
                                     l2=l2, steps=500)
    proba = np.asarray(logistic_proba(params, jnp.asarray(x_test, jnp.float32)), np.float64)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y_test)), y_test], 1e-12, None))))


def measure(seed: int, m: LatentModel, n_train: int, n_test: int) -> dict[str, float]:
    """Held-out probe CE from aligned, modality-specific and raw features on fresh samples."""
    rng = np.random.default_rng(seed)
    emb_v = random_embedding(rng, len(m.p_z) * len(m.p_u))
    emb_t = random_embedding(rng, len(m.p_z) * len(m.p_v))
    train, test = sample(rng, m, n_train), sample(rng, m, n_test)
    n_y = m.a.shape[1]
    return {f"ce_{k}": heldout_ce(features(k, train, m, emb_v, emb_t), train["y"],
                                  features(k, test, m, emb_v, emb_t), test["y"], n_y)
            for k in FEATURES}
