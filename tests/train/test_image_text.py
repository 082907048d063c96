"""The image–text run through the sweep: rows, roles and columns; config validation; a learning check."""

import dataclasses

import pytest

from mmjax.configs.common import ConfigError
from mmjax.configs.image_text import ImageTextConfig, image_text_cases
from mmjax.report import read_csv
from mmjax.train.sweep import Experiment, Setting, run_sweep


@pytest.mark.parametrize("fields, message", [
    (dict(selected=()), "selected=() is invalid"),
    (dict(selected=("colour",), perturbed=("colour",)), "perturbed=('colour',) is invalid: must be a proper"),
    (dict(selected=("hue",)), "selected=('hue',) is invalid: distinct attribute names from colour, shape"),
    (dict(shapes=("square", "circle", "triangle")), "need a tuple of >= 4 distinct words"),
    (dict(p_change=1.5), "p_change=1.5 is invalid"),
    (dict(negatives="in"), "negatives='in' is invalid: allowed: all, cross"),
])
def test_invalid_configs_fail_in_one_line(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ImageTextConfig(**fields)


@pytest.mark.parametrize("fields, size", [
    (dict(selected=("colour",)), 2),  # one unbiased attribute still gets a circle, not {±1}
    (dict(), 5),
    (dict(perturbed=("height", "background")), 3),
    (dict(perturbed=("shape", "size", "height", "background")), 2),
    (dict(encoding_size=7), 7),
])
def test_encoding_size_is_the_unbiased_count_at_least_two(fields, size):
    assert ImageTextConfig(**fields).to_params().enc_mask.sum() == size


def test_negatives_field_sets_the_traced_flag():
    assert ImageTextConfig().to_params().in_modal == 1.0
    assert ImageTextConfig(negatives="cross").to_params().in_modal == 0.0


def test_cpu_scale_trains_one_unbiased_attribute_at_higher_tau_and_set_wins():
    from mmjax.configs.image_text import CPU_ONE_UNBIASED, image_text_experiment

    def knobs(kind, scale, overrides):
        return {s.label: (s.config.tau, s.config.negatives)
                for s in image_text_experiment("e", kind, scale, overrides).settings}

    default = (ImageTextConfig().tau, ImageTextConfig().negatives)
    one = (CPU_ONE_UNBIASED["tau"], CPU_ONE_UNBIASED["negatives"])
    sel, per = knobs("selection", "cpu", {}), knobs("perturbation", "cpu", {})
    assert sel.pop("θ=co") == per.pop("ρ=sh+si+he+ba") == one == (0.3, "cross")
    assert set(sel.values()) == set(per.values()) == {default} == {(0.02, "all")}
    assert set(knobs("perturbation", "smoke", {}).values()) == {default}
    forced = knobs("perturbation", "cpu", {"tau": "0.05", "negatives": "all"})
    assert set(forced.values()) == {(0.05, "all")}


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_sweep_rows_roles_and_learning(tmp_path):
    # 200 steps of batch 64: τ = 0.1 with a 3-d encoding learns colour that fast (colour MCC 1.0 for
    # both towers, as with 300 steps of batch 128); the cpu defaults (τ = 0.02, the unbiased count) need
    # more steps than this check can afford (text colour MCC 0.36 at 300 steps of batch 128).
    base = ImageTextConfig(batch=64, steps=200, log_every=50, eval_fit=512, eval_test=512, probe_steps=100,
                           probe_epochs=5, tau=0.1, encoding_size=3)
    cases = [image_text_cases("selection")[1], image_text_cases("perturbation")[1]]
    exp = Experiment("it", tuple(Setting(label, dataclasses.replace(base, **f)) for label, f in cases))
    record = run_sweep(exp, tmp_path, [0])
    assert all(j["status"] == "ok" for j in record["jobs"].values())
    rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == 2 * 2 * 9  # settings x encoders x factors
    by = {(r["setting"], r["encoder"], r["factor"]): r for r in rows}
    sel, per = cases[0][0], cases[1][0]
    assert by[(sel, "x", "shape")]["role"] == "unbiased" and by[(sel, "x", "size")]["role"] == "omitted"
    assert by[(per, "t", "background")]["role"] == "perturbed"
    assert by[(per, "x", "pos_x")]["role"] == "specific"
    assert by[(sel, "x", "colour")]["r2_linear"] == "" and by[(sel, "x", "pos_x")]["mcc_linear"] == ""
    # 200 steps already tie colour (the easiest attribute) across the two towers.
    assert by[(sel, "t", "colour")]["mcc_nonlinear"] > 0.8
    assert by[(sel, "x", "colour")]["mcc_nonlinear"] > 0.5
    assert abs(by[(sel, "x", "pos_y")]["r2_nonlinear"]) < 0.3
