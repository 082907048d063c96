"""Tests for the Δ_p demo (Jiang et al., arXiv 2303.05952)."""

import numpy as np
import pytest

from mmjax.eval.delta_p import exact_quantities, joint_table, make_model, measure


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_delta_p_identity(beta: float) -> None:
    """Δ_p = H(Y|z) − H(Y|z,v) and the raw-pair optimum is H(Y|z,v)."""
    q = exact_quantities(make_model(3, beta, n_z=3, n_u=2, n_v=3, n_y=2))
    assert np.isclose(joint_table(make_model(3, beta)).sum(), 1.0)
    assert q["delta_p"] > 1e-3
    assert np.isclose(q["delta_p"], q["H_Y_given_z"] - q["H_Y_given_zv"], atol=1e-10)
    assert np.isclose(q["H_Y_given_raw"], q["H_Y_given_zv"], atol=1e-10)
    assert np.isclose(q["I_V_Y"], q["H_Y"] - q["H_Y_given_z"], atol=1e-10)


def test_delta_p_zero_at_beta_zero() -> None:
    """When the label ignores v, both modalities carry the same label information."""
    q = exact_quantities(make_model(3, 0.0, n_z=3, n_u=2, n_v=3, n_y=2))
    assert q["delta_p"] < 1e-10
    assert np.isclose(q["H_Y_given_z"], q["H_Y_given_zv"], atol=1e-10)


def test_measured_ce_matches_entropies() -> None:
    """Held-out probe CE ≈ H(Y|z) for aligned and ≈ H(Y|z,v) for modality-specific features; gap ≥ Δ_p."""
    m = make_model(0, 2.0)
    q, ce = exact_quantities(m), measure(1, m, 20000, 20000)
    assert abs(ce["ce_aligned"] - q["H_Y_given_z"]) < 0.03
    assert abs(ce["ce_specific"] - q["H_Y_given_zv"]) < 0.03
    assert abs(ce["ce_raw"] - q["H_Y_given_raw"]) < 0.03
    assert ce["ce_aligned"] - ce["ce_specific"] >= q["delta_p"] - 0.05
