"""Real-value checks of the latent-variable simulator (Cai et al., arXiv 2504.10143)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.latent.simulator import (
    Bias,
    LatentShape,
    apply_mixing,
    condition_numbers,
    covariance_factors,
    make_world,
    sample,
    text_semantics,
    well_conditioned_matrix,
)

# Small condition-number search (2 best of 2000 draws) keeps world creation fast.
SHAPE = LatentShape(cond_samples=2000, cond_rank=2)
N_BIG = 20_000
# Jitted, and always called with batch N_BIG: every extra compile costs seconds on a busy CPU.
_sample = jax.jit(sample, static_argnums=(3, 4))


def make_bias(theta=range(10), rho=(), p_change=0.75, dependent=0, causal=0, reference_cov=0,
              n_s=10):
    """A Bias from 0-based index sets."""
    theta_m = np.zeros(n_s, np.float32)
    theta_m[list(theta)] = 1
    rho_m = np.zeros(n_s, np.float32)
    rho_m[list(rho)] = 1
    return Bias(
        theta=jnp.asarray(theta_m),
        rho=jnp.asarray(rho_m),
        p_change=jnp.float32(p_change),
        dependent=jnp.float32(dependent),
        causal=jnp.float32(causal),
        reference_cov=jnp.float32(reference_cov),
    )


@pytest.fixture(scope="module")
def world():
    return jax.jit(make_world, static_argnums=1)(jax.random.key(0), SHAPE)


def _draw(world, bias, batch=N_BIG, seed=1):
    return jax.tree.map(np.asarray, _sample(jax.random.key(seed), world, bias, SHAPE, batch))


def _cov(x):
    return np.cov(np.asarray(x, np.float64), rowvar=False)


def _rel_fro(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _np_conds(w):
    return np.linalg.cond(np.asarray(w, np.float64))


def _np_column_normalised(rng, count, dim):
    w = rng.uniform(-1.0, 1.0, (count, dim, dim))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def test_shapes(world):
    out = _draw(world, make_bias(theta=(0, 2)))
    assert out.x.shape == (N_BIG, SHAPE.x_dim) == (N_BIG, 15)
    assert out.t.shape == (N_BIG, SHAPE.t_dim) == (N_BIG, 15)
    assert out.s.shape == out.s_tilde.shape == (N_BIG, 10)
    assert out.m_x.shape == (N_BIG, 5) and out.m_t.shape == (N_BIG, 5)
    assert len(world.mix_x) == len(world.mix_t) == SHAPE.mixing_layers
    assert all(np.all(np.isfinite(v)) for v in out)


def test_independent_setting_is_standard_normal(world):
    out = _draw(world, make_bias(dependent=0))
    for z, n in ((out.s, 10), (out.m_x, 5), (out.m_t, 5)):
        np.testing.assert_allclose(z.mean(0), 0.0, atol=0.05)
        np.testing.assert_allclose(_cov(z), np.eye(n), atol=0.05)


def test_dependent_identity_factors_when_switched_off(world):
    for ref in (0, 1):
        for g in covariance_factors(world, make_bias(dependent=0, reference_cov=ref)):
            np.testing.assert_array_equal(np.asarray(g), np.eye(g.shape[0]))


def test_dependent_setting_covariance(world):
    g_s, g_x, g_t, _ = covariance_factors(world, make_bias(dependent=1, reference_cov=0))
    np.testing.assert_array_equal(np.asarray(g_s), np.asarray(world.g_s))
    np.testing.assert_array_equal(np.asarray(g_x), np.asarray(world.g_x))
    np.testing.assert_array_equal(np.asarray(g_t), np.asarray(world.g_t))
    out = _draw(world, make_bias(dependent=1, reference_cov=0))
    for z, g in ((out.s, world.g_s), (out.m_x, world.g_x), (out.m_t, world.g_t)):
        g = np.asarray(g, np.float64)
        target = g @ g.T
        assert _rel_fro(_cov(z), target) < 0.08
    # Unnormalised Wishart(df=n, I): per-dimension variance has mean n (=10 for s).
    assert 3.0 < np.trace(np.asarray(world.g_s) @ np.asarray(world.g_s).T) / 10 < 30.0


def test_reference_mode_shares_draws_exactly(world):
    g_s, g_x, g_t, g_eps = covariance_factors(world, make_bias(dependent=1, reference_cov=1))
    np.testing.assert_array_equal(np.asarray(g_eps), np.asarray(g_s))
    np.testing.assert_array_equal(np.asarray(g_t), np.asarray(g_x))
    # independent-draws mode: different factors
    _, g_x0, g_t0, g_eps0 = covariance_factors(world, make_bias(dependent=1, reference_cov=0))
    assert not np.allclose(np.asarray(g_eps0), np.asarray(g_s))
    assert not np.allclose(np.asarray(g_t0), np.asarray(g_x0))


def test_reference_mode_sample_covariances(world):
    # p_change = 1: every perturbed coordinate is distorted, so s~ - s on rho is exactly eps.
    rho = tuple(range(9))
    bias = make_bias(rho=rho, p_change=1.0, dependent=1, reference_cov=1)
    out = _draw(world, bias)
    gs = np.asarray(world.g_s, np.float64)
    sigma_s = gs @ gs.T
    eps = (out.s_tilde - out.s)[:, list(rho)]
    assert _rel_fro(_cov(eps), sigma_s[np.ix_(rho, rho)]) < 0.08
    gx = np.asarray(world.g_x, np.float64)
    assert _rel_fro(_cov(out.m_t), gx @ gx.T) < 0.08
    assert _rel_fro(_cov(out.m_x), gx @ gx.T) < 0.08


@pytest.mark.parametrize("dependent, causal", [(0, 0), (1, 0), (0, 1)])
def test_perturbation_only_on_rho_with_frequency_p_change(world, dependent, causal):
    rho = (0, 3, 5)
    p = 0.75
    out = _draw(world, make_bias(rho=rho, p_change=p, dependent=dependent, causal=causal))
    changed = out.s_tilde != out.s
    others = [i for i in range(10) if i not in rho]
    np.testing.assert_array_equal(out.s_tilde[:, others], out.s[:, others])
    freq = changed[:, list(rho)].mean(0)
    np.testing.assert_allclose(freq, p, atol=0.02)


def test_no_perturbation_when_p_change_zero_or_rho_empty(world):
    for bias in (make_bias(rho=(1, 2), p_change=0.0), make_bias(rho=(), p_change=1.0)):
        out = _draw(world, bias)
        np.testing.assert_array_equal(out.s_tilde, out.s)


def test_text_ignores_omitted_semantics_direct(world):
    theta = (0, 2, 7)
    theta_m = make_bias(theta=theta).theta
    rng = np.random.default_rng(0)
    s = rng.standard_normal((64, 10)).astype(np.float32)
    m_t = rng.standard_normal((64, 5)).astype(np.float32)

    @jax.jit
    def _text(s_tilde):
        z = jnp.concatenate([text_semantics(s_tilde, theta_m, SHAPE.text_slots), m_t], -1)
        return apply_mixing(world.mix_t, z)

    text = lambda s_tilde: np.asarray(_text(jnp.asarray(s_tilde)))

    packed = np.asarray(text_semantics(jnp.asarray(s), theta_m, SHAPE.text_slots))
    np.testing.assert_array_equal(packed[:, :3], s[:, list(theta)])
    np.testing.assert_array_equal(packed[:, 3:], 0.0)

    t0 = text(s)
    s_omit = s.copy()
    s_omit[:, [1, 4, 9]] += rng.standard_normal((64, 3)).astype(np.float32) * 5
    np.testing.assert_array_equal(text(s_omit), t0)
    s_sel = s.copy()
    s_sel[:, 2] += 1.0
    assert np.all(np.abs(text(s_sel) - t0).max(1) > 1e-4)


def test_text_ignores_omitted_semantics_via_sample(world):
    # Dependent, non-causal: s = e g_sᵀ, so replacing the rows of g_s at omitted indices changes s
    # exactly there. The text must be bit-identical; the image must change.
    theta, omitted = (0, 1, 2, 5), [3, 4, 6, 7, 8, 9]
    bias = make_bias(theta=theta, rho=(1,), dependent=1, reference_cov=0)
    g_s2 = world.g_s.at[jnp.asarray(omitted)].set(
        jax.random.normal(jax.random.key(9), (len(omitted), 10)))
    world2 = world._replace(g_s=g_s2)
    a, b = _draw(world, bias), _draw(world2, bias)
    np.testing.assert_array_equal(a.s[:, list(theta)], b.s[:, list(theta)])
    assert np.all(a.s[:, omitted] != b.s[:, omitted])
    np.testing.assert_array_equal(a.t, b.t)
    assert not np.allclose(a.x, b.x)


def test_mixing_matrices_have_unit_norm_columns(world):
    for ws, dim in ((world.mix_x, SHAPE.x_dim), (world.mix_t, SHAPE.t_dim)):
        for w in ws:
            w = np.asarray(w, np.float64)
            assert w.shape == (dim, dim)
            np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, atol=1e-5)
            assert np.all(np.abs(w) <= 1.0)


def _cond_rtol(dim, cond):
    """Relative error bound of a float32 κ from a backward-stable SVD: p(n)·ε·(1 + κ), p(n) = 4n.

    (|δσ_i| ≤ p(n)·ε·σ_max; LAPACK's bound has a modest p(n), 4n covers its Householder
    bidiagonalisation plus the QR iteration. Measured here: at most 0.3·n·ε·κ on 25 000 draws of size 15.)
    """
    return 4 * dim * np.finfo(np.float32).eps * (1 + cond)


@pytest.mark.parametrize("dim", [6, 15])
def test_condition_numbers_match_numpy(dim):
    # The same float32 matrices in float64 numpy are the reference; the float32 SVD's error bound
    # is the tolerance (it holds on any CPU and thread count: each SVD is one LAPACK call).
    w = np.asarray(_np_column_normalised(np.random.default_rng(1), 2000, dim), np.float32)
    ref = _np_conds(w)
    got = np.asarray(condition_numbers(jnp.asarray(w)), np.float64)
    assert ref.max() > 100  # the bound is exercised at large κ, where eigvalsh(WᵀW) failed
    np.testing.assert_array_less(np.abs(got - ref) / ref, _cond_rtol(dim, ref))


def test_well_conditioned_matrix_below_quantile_of_its_draws():
    # White-box on the key use: the candidates are the uniform draws from the first split key.
    key, dim, samples, rank = jax.random.key(3), 15, 2000, 2
    w = np.asarray(well_conditioned_matrix(key, dim, samples, rank), np.float64)
    k_draw, _ = jax.random.split(key)
    draws = np.asarray(jax.random.uniform(k_draw, (samples, dim, dim), minval=-1.0, maxval=1.0),
                       np.float64)
    draws /= np.linalg.norm(draws, axis=1, keepdims=True)
    conds = np.sort(_np_conds(draws))
    threshold = conds[rank - 1]
    # The float32 κ that ranked the draws may err by _cond_rtol, which can swap near-ties.
    assert np.linalg.cond(w) <= threshold * (1 + 2 * _cond_rtol(dim, threshold))
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, atol=1e-5)


def test_world_mixing_condition_below_fresh_quantile(world):
    # Fresh numpy draws of the same distribution. Each matrix is among the 2 best of 2000 draws
    # (0.1% tail), so it lies below the 1% quantile of 25 000 fresh draws except with prob ~1e-7,
    # and far below the median.
    conds = np.sort(_np_conds(_np_column_normalised(np.random.default_rng(2), 25_000, 15)))
    q_01pct, q_1pct, median = conds[24], conds[249], conds[12_500]
    ws = [np.asarray(w, np.float64) for w in (*world.mix_x, *world.mix_t)]
    for w in ws:
        c = np.linalg.cond(w)
        assert c <= q_1pct
        assert c < median / 3
    # The typical pick is near the 0.1% quantile (25th smallest of 25 000).
    assert np.median([np.linalg.cond(w) for w in ws]) <= q_01pct * 1.25


def test_apply_mixing_is_injective(world):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((5, SHAPE.x_dim)).astype(np.float32) * 3
    jacs = jax.jit(jax.vmap(jax.jacfwd(lambda v: apply_mixing(world.mix_x, v))))(jnp.asarray(z))
    for jac in np.asarray(jacs, np.float64):
        assert jac.shape == (SHAPE.x_dim, SHAPE.x_dim)
        sv = np.linalg.svd(jac, compute_uv=False)
        assert sv.min() > 1e-3 * sv.max()


def test_text_map_is_injective_in_selected_semantics_and_m_t(world):
    theta = (1, 4, 6, 8)
    theta_m = make_bias(theta=theta).theta

    def g(u):  # (s_theta, m_t) -> t
        s = jnp.zeros(10).at[jnp.asarray(theta)].set(u[:4])
        z = jnp.concatenate([text_semantics(s, theta_m, SHAPE.text_slots), u[4:]])
        return apply_mixing(world.mix_t, z)

    rng = np.random.default_rng(5)
    u = rng.standard_normal((5, 9)).astype(np.float32) * 3
    for jac in np.asarray(jax.jit(jax.vmap(jax.jacfwd(g)))(jnp.asarray(u)), np.float64):
        assert jac.shape == (SHAPE.t_dim, 9)
        sv = np.linalg.svd(jac, compute_uv=False)
        assert sv.min() > 1e-3 * sv.max()


def test_causal_mode(world):
    base = _draw(world, make_bias(causal=0), seed=7)
    causal = _draw(world, make_bias(causal=1), seed=7)
    assert not np.allclose(base.s, causal.s)
    dag, dag_bias = np.asarray(world.dag, np.float64), np.asarray(world.dag_bias, np.float64)
    # Same noise: s_causal = (I - B)^-1 (e + a) with e the independent-setting draw.
    np.testing.assert_allclose(causal.s, (base.s + dag_bias) @ dag.T, rtol=1e-4, atol=1e-4)
    # B = I - dag^-1 is a DAG adjacency: zero diagonal, nilpotent, and not empty.
    b = np.eye(10) - np.linalg.inv(dag)
    np.testing.assert_allclose(np.diag(b), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.matrix_power(b, 10), 0.0, atol=1e-4)
    assert np.abs(b).max() > 0.1
    # m_x, m_t are untouched by the causal switch.
    np.testing.assert_array_equal(base.m_x, causal.m_x)
    np.testing.assert_array_equal(base.m_t, causal.m_t)


def test_vmap_over_bias_matches_separate_calls(world):
    b1 = make_bias(theta=(0, 1, 2), rho=(1,), p_change=0.5, dependent=0, causal=0, reference_cov=0)
    b2 = make_bias(theta=range(8), rho=(0, 3, 4), p_change=0.9, dependent=1, causal=1,
                   reference_cov=1)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), b1, b2)
    key = jax.random.key(11)
    f = lambda b: _sample(key, world, b, SHAPE, N_BIG)
    batched = jax.jit(jax.vmap(f))(stacked)
    for i, b in enumerate((b1, b2)):
        single = f(b)
        for name, got, want in zip(single._fields, batched, single, strict=True):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=1e-5,
                                       atol=1e-5, err_msg=name)
