"""Config validation: one-line errors naming field, value and what is allowed; CLI exit code 2."""

import pytest

from mmjax.cli import main
from mmjax.configs.common import ConfigError
from mmjax.configs.synthetic import SyntheticConfig, apply_overrides


@pytest.mark.parametrize(
    "fields, needle",
    [
        (dict(theta=()), "theta=()"),
        (dict(theta=(1, 2), rho=(1, 2)), "rho=(1, 2)"),
        (dict(theta=(1, 2), rho=(3,)), "rho=(3,)"),
        (dict(theta_code=1023), "theta_code=1023"),
        (dict(theta_code=-1), "theta_code=-1"),
        (dict(rho_code=2000), "rho_code=2000"),
        (dict(n_s=-3), "n_s=-3"),
        (dict(theta=(0, 1)), "theta=(0, 1)"),
        (dict(encoding_size=11), "encoding_size=11"),
        (dict(p_change=1.5), "p_change=1.5"),
        (dict(loss="nce"), "loss='nce'"),
        (dict(widths="64,x"), "widths='64,x'"),
        (dict(compare_probe="mlp"), "compare_probe='mlp'"),  # the same as nonlinear_probe
        (dict(compare_probe="svm"), "compare_probe='svm'"),
        (dict(nonlinear_probe="nystrom", nystrom_landmarks=0), "nystrom_landmarks=0"),
    ],
)
def test_invalid_fields_name_field_and_value(fields, needle):
    with pytest.raises(ConfigError) as err:
        SyntheticConfig(**fields)
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_codes_resolve_like_index_sets():
    by_code = SyntheticConfig(theta_code=55, rho_code=0)
    by_set = SyntheticConfig(theta=(1, 2, 3), rho=(1,))
    assert by_code.theta_set == by_set.theta_set == (0, 1, 2)
    assert by_code.rho_set == by_set.rho_set == (0,)
    assert by_set.code_theta == 55 and by_set.code_rho == 0
    assert by_set.n_unbiased == 2
    assert [by_set.role(i) for i in range(4)] == ["perturbed", "unbiased", "unbiased", "omitted"]


def test_overrides_parse_types_and_reject_unknown_fields():
    cfg = apply_overrides(SyntheticConfig(), {"batch": "64", "lr": "3e-3", "theta": "1,2",
                                              "dependent": "true", "widths": "32,32"})
    assert (cfg.batch, cfg.lr, cfg.theta_set, cfg.dependent) == (64, 3e-3, (0, 1), True)
    assert cfg.hidden_widths(15) == (32, 32)
    with pytest.raises(ConfigError, match="unknown field"):
        apply_overrides(cfg, {"batchsize": "3"})
    with pytest.raises(ConfigError, match="batch='many'"):
        apply_overrides(cfg, {"batch": "many"})


def test_params_masks_and_static_shapes():
    cfg = SyntheticConfig(theta=(1, 2, 3, 4), rho=(2,), encoding_size=None)
    p = cfg.to_params()
    assert p.bias.theta.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert p.bias.rho.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert p.enc_mask.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    # Different biases share one static config (one compile) in the padded text layout ...
    assert cfg.to_static() == SyntheticConfig(theta=(5,)).to_static()
    # ... while the exact layout reproduces the paper's text dimension |theta| + n_t.
    exact = SyntheticConfig(theta=(1, 2, 3), text_layout="exact")
    assert exact.to_static().shape.t_dim == 8 and exact.to_static().enc_dim == 3


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sweep", "selection_independent", "--set", "theta=", "--scale", "smoke"], "theta=()"),
        (["sweep", "selection_independent", "--set", "rho_code=5000"], "rho_code=5000"),
        (["sweep", "no_such_experiment"], "experiment='no_such_experiment'"),
        (["sweep", "selection_independent", "--set", "steps=-1"], "steps=-1"),
        (["sweep", "selection_independent", "--seeds", "0"], "--seeds=0"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    code = main(argv + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "out").exists()


def test_cpu_perturbation_sweep_trains_small_codes_longer_and_set_steps_wins():
    from mmjax.configs.numeric import CPU_PERTURBATION_STEPS, perturbation_sweep

    steps = {s.label: s.config.steps for s in perturbation_sweep("p", "cpu", {}, dependent=False).settings}
    assert steps["ρ=∅"] == steps["ρ=[4]"] == SyntheticConfig().steps == 10_000
    assert steps["ρ=[9]"] == CPU_PERTURBATION_STEPS[9] == 50_000 and steps["ρ=[5]"] == 20_000
    forced = perturbation_sweep("p", "cpu", {"steps": "700"}, dependent=True).settings
    assert {s.config.steps for s in forced} == {700}
    assert {s.config.steps for s in perturbation_sweep("p", "smoke", {}, dependent=False).settings} == {300}
