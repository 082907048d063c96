"""The image–text run through the sweep: rows, roles and columns; config validation; a learning check."""

import dataclasses

import pytest

from mmjax.configs.common import ConfigError
from mmjax.configs.image_text import ImageTextConfig, image_text_cases
from mmjax.train.sweep import Experiment, Setting, run_sweep, tidy_rows


@pytest.mark.parametrize("fields, message", [
    (dict(selected=()), "selected=() is invalid"),
    (dict(selected=("colour",), perturbed=("colour",)), "perturbed=('colour',) is invalid: must be a proper"),
    (dict(selected=("hue",)), "selected=('hue',) is invalid: distinct attribute names from colour, shape"),
    (dict(shapes=("square", "circle", "triangle")), "need a tuple of >= 4 distinct words"),
    (dict(p_change=1.5), "p_change=1.5 is invalid"),
])
def test_invalid_configs_fail_in_one_line(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ImageTextConfig(**fields)


def test_sweep_rows_roles_and_learning(tmp_path):
    base = ImageTextConfig(steps=300, log_every=50, eval_fit=512, eval_test=512, probe_steps=100,
                           probe_epochs=5)
    cases = [image_text_cases("selection")[1], image_text_cases("perturbation")[1]]
    exp = Experiment("it", tuple(Setting(label, dataclasses.replace(base, **f)) for label, f in cases))
    record = run_sweep(exp, tmp_path, [0])
    assert all(j["status"] == "ok" for j in record["jobs"].values())
    rows = tidy_rows(exp, record)
    assert len(rows) == 2 * 2 * 9  # settings x encoders x factors
    by = {(r["setting"], r["encoder"], r["factor"]): r for r in rows}
    sel, per = cases[0][0], cases[1][0]
    assert by[(sel, "x", "shape")]["role"] == "unbiased" and by[(sel, "x", "size")]["role"] == "omitted"
    assert by[(per, "t", "background")]["role"] == "perturbed"
    assert by[(per, "x", "pos_x")]["role"] == "specific"
    assert by[(sel, "x", "colour")]["r2_linear"] == "" and by[(sel, "x", "pos_x")]["mcc_linear"] == ""
    # 300 steps already tie colour (the easiest attribute) across the two towers.
    assert by[(sel, "t", "colour")]["mcc_nonlinear"] > 0.8
    assert by[(sel, "x", "colour")]["mcc_nonlinear"] > 0.5
    assert abs(by[(sel, "x", "pos_y")]["r2_nonlinear"]) < 0.3
