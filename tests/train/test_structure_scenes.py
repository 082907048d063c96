"""The modality-structures testbed run (mmjax.train.structure_scenes) and its study (structure_study)."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import cli
from mmjax.configs.clip import ClipConfig
from mmjax.configs.common import ConfigError
from mmjax.configs.structure_scenes import FEATURES, LABELLED, TARGETS, with_method
from mmjax.configs.structure_study import bias_settings, modality_structures_study
from mmjax.data.scenes import DISCRETE, caption_strings
from mmjax.train import structure_study as ss
from mmjax.train.clip import make_objective
from mmjax.train.structure_scenes import make_structure_run, objective, prompt_tokens

SMOKE = modality_structures_study("smoke", {}).base


@pytest.mark.parametrize("overrides, message", [
    ({"split": "train"}, "split='train' is invalid"),
    ({"perturbed": "background"}, "perturbed=('background',) is invalid"),
    ({"tau": "0.001"}, "tau=0.001 is invalid"),
    ({"br_t": "2"}, "br_t=2.0 is invalid"),
    ({"k_shot": "100", "eval_fit": "64"}, "k_shot=100 is invalid"),
])
def test_config_rejects_bad_input_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SMOKE.with_overrides(overrides)


def test_methods_and_roles():
    cfg = with_method(SMOKE, "sep+gc", {"sep": 0.3, "br": 0.5, "gc": 0.1})
    assert (cfg.sep_weight, cfg.br_weight, cfg.gc_weight, cfg.method) == (0.3, 0.0, 0.1, "sep+gc")
    assert with_method(cfg, "clip", {"sep": 1, "br": 1, "gc": 1}).method == "clip"
    with pytest.raises(ConfigError, match=r"methods='sep\+foo' is invalid"):
        with_method(cfg, "sep+foo", {})
    # The testbed: background unstated, height perturbed, position and rotation image-only, the
    # template text-only.
    assert [SMOKE.role(f) for f in TARGETS] == ["unbiased", "unbiased", "unbiased", "perturbed", "omitted",
                                                "text-only", "image-only", "image-only", "image-only"]


def test_prompts_name_only_their_attribute_value():
    static = SMOKE.to_static()
    tokens, spans = prompt_tokens(static)
    texts = caption_strings(tokens, static.scene)
    colour = texts[spans[0]]
    assert colour[:4] == ["a red", "there is a red", "the is red", "the image shows a with red colour"]
    assert len(texts) == 4 * sum(static.scene.n_values)
    for attr, span in zip(DISCRETE, spans, strict=True):
        words = {w for t in texts[span] for w in t.split()}
        others = {v for f in DISCRETE if f != attr for v in static.scene.values(f)}
        assert set(static.scene.values(attr)) <= words and not words & others


def test_objective_equals_the_two_tower_trainers():
    """L_Con + Σ w·L_r with traced weights = the two-tower trainer's objective with static ones, float64."""
    weights = (0.3, 0.7, 1.3)
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), 8)
        names = ("img", "txt", "img_aug", "txt_aug", "img_ind", "txt_ind", "img_ind_aug", "txt_ind_aug")
        emb = {k: jax.random.normal(kk, (16, 6), jnp.float64) for k, kk in zip(names, keys, strict=True)}
        cfg = dataclasses.replace(SMOKE, tau=0.07, sep_tau=0.2, br_t=0.4, sep_weight=weights[0],
                                  br_weight=weights[1], gc_weight=weights[2])
        # The traced values in float64 as the Python floats the two-tower config holds (to_params rounds
        # them to float32, which would move the result by ~1e-8 relative).
        f64 = jnp.float64
        params = cfg.to_params()._replace(tau=f64(0.07), sep_tau=f64(0.2), br_t=f64(0.4),
                                          weights=jnp.asarray(weights, f64))
        ours, terms = objective(emb, params)
        clip = ClipConfig(loss="con", sep_weight=weights[0], br_weight=weights[1], gc_weight=weights[2],
                          br_t=0.4, sep_tau=0.2)
        scalars = {"log_scale": jnp.log(jnp.asarray(1 / 0.07, jnp.float64)), "logit_bias": 0.0, "key": None}
        theirs, _ = make_objective(clip)(emb, scalars)
        # Same formulas in another order of summation: a few ulps of float64.
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
        assert terms.shape == (4,)


@pytest.fixture(scope="module")
def smoke_run():
    cfg = dataclasses.replace(SMOKE, sep_weight=0.5, br_weight=0.5, gc_weight=0.5)
    run = jax.jit(make_structure_run(cfg.to_static()))
    key = jax.random.key(3)
    return cfg, run, key, run(cfg.to_params(), jnp.zeros(()), key)


# A smoke-scale run compiles for about a minute: the two tests that read it are in the slow set.
@pytest.mark.slow
def test_run_shapes_ranges_and_determinism(smoke_run):
    cfg, run, key, res = smoke_run
    assert res.r2_linear.shape == res.r2_nonlinear.shape == (len(FEATURES), len(TARGETS))
    assert res.kshot.shape == (len(FEATURES), len(LABELLED)) and res.zeroshot.shape == (len(DISCRETE),)
    assert res.loss_curve.shape == (cfg.steps // cfg.log_every,)
    acc = np.asarray(res.r2_linear[:, : len(LABELLED)])
    assert np.all((acc >= 0) & (acc <= 1)) and np.all((res.zeroshot >= 0) & (res.zeroshot <= 1))
    again = run(cfg.to_params(), jnp.zeros(()), key)
    for a, b in zip(res, again, strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit
    # The val stream is other scenes: other probe scores from the same trained model.
    val = run(dataclasses.replace(cfg, split="val").to_params(), jnp.zeros(()), key)
    np.testing.assert_array_equal(val.loss_curve, res.loss_curve)
    assert not np.array_equal(val.r2_linear, res.r2_linear)


@pytest.mark.slow
def test_rows_skip_untrained_heads(smoke_run):
    cfg, _, _, res = smoke_run
    rows = cfg.result_rows(res)
    assert {r["feature"] for r in rows} == {*FEATURES, ""}
    plain = dataclasses.replace(cfg, sep_weight=0.0).result_rows(res)
    assert {r["feature"] for r in plain} == {"img", "txt", ""}
    metric = {(r["feature"], r["factor"], r["metric"]): r["value"] for r in rows}
    assert metric[("img", "colour", "linear")] == pytest.approx(float(res.r2_linear[0, 0]))
    assert metric[("", "", "loss/gc")] == pytest.approx(float(res.terms[3]))


def test_t_quantiles_match_scipy():
    from scipy import stats

    for df in (1, 2, 4, 9, 30):
        assert ss.t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)


def _rows(setting_values: dict[tuple[str, int], dict[str, float]], **extra) -> list[dict]:
    rows = []
    for (setting, seed), values in setting_values.items():
        for key, value in values.items():
            feature, factor, metric = key.split("|")
            rows.append({"setting": setting, "seed": seed, "feature": feature, "factor": factor,
                         "metric": metric, "value": value, "method": setting.split(" ")[0], **extra})
    return rows


def _values(level: float, study) -> dict[str, float]:
    v = {f"img|{a}|zeroshot": level for a in DISCRETE}
    for feat in ("img", "img_both"):
        v |= {f"{feat}|{t}|linear": level for t in TARGETS}
    v |= {f"img|{a}|{study.base.k_shot}shot": level for a in DISCRETE}
    v |= {"txt|template|linear": level, **{f"||{n}": level for n in
                                          ("i2t_R@10", "t2i_R@10", "gap/centroid_distance",
                                           "gap/mean_paired_distance")}}
    return v


def test_tuning_picks_the_best_val_point_per_regularizer():
    study = modality_structures_study("cpu", {})
    labels = [s.label for s in study.tune_experiment().settings]
    assert labels[0] == "clip" and len(labels) == 1 + sum(len(g) for g in study.tune_grid.values())
    scores = {label: i / 100 for i, label in enumerate(labels)}
    scores["sep w=0.1 sep_tau=0.3"] = 0.99  # the best sep point
    rows = _rows({(label, s): _values(v, study) for label, v in scores.items() for s in study.tune_seeds})
    tuned, table = ss.choose_tuned(rows, study)
    assert tuned["sep"] == {"sep_weight": 0.1, "sep_tau": 0.3}
    assert tuned["br"] == {"br_weight": 1.0, "br_t": 0.5} and tuned["gc"] == {"gc_weight": 1.0}
    assert {t["seeds"] for t in table} == {len(study.tune_seeds)}
    cfg = study.method_config("sep+br", tuned)
    assert (cfg.sep_weight, cfg.sep_tau, cfg.br_weight, cfg.br_t, cfg.gc_weight) == (0.1, 0.3, 1.0, 0.5, 0.0)
    assert cfg.split == "test" and study.tune_experiment().settings[1].config.split == "val"


def test_paired_differences_and_intervals():
    study = modality_structures_study("cpu", {})
    clip = [0.5, 0.6, 0.7, 0.8, 0.9]
    gain = [0.1, 0.2, 0.1, 0.3, 0.1]
    runs = {}
    for s, (c, g) in enumerate(zip(clip, gain, strict=True)):
        runs[("clip", s)] = _values(c, study)
        for m in study.test_methods[1:]:
            runs[(m, s)] = _values(c + g, study)
    table = ss.paired_table(_rows(runs), study)
    row = next(r for r in table if r["method"] == "br" and r["metric"] == "zero-shot mean")
    d = np.asarray(gain)
    half = 2.776 * d.std(ddof=1) / math.sqrt(5)
    assert row["diff"] == pytest.approx(d.mean()) and row["ci_low"] == pytest.approx(d.mean() - half)
    assert row["mean"] == pytest.approx(np.mean(clip) + d.mean())
    line = next(t for t in ss.format_paired(table, study).splitlines() if t.startswith("| zero-shot mean"))
    assert line.count("**+0.160** [+0.049, +0.271]") == 4  # d̄ ± t(4)·s/√5, s = 0.0894


def test_misalignment_settings_and_tables():
    labels = [label for label, _ in bias_settings()]
    assert labels == ["θ=co", "θ=co+sh", "θ=co+sh+si", "θ=co+sh+si+he", "θ=co+sh+si+he+ba", "ρ=ba",
                      "ρ=he+ba", "ρ=si+he+ba", "ρ=sh+si+he+ba"]
    study = modality_structures_study("cpu", {})
    biases = [s.grid[1][1] for s in study.misalignment_experiment({}).settings]
    assert sorted(set(biases)) == sorted(set(labels) - {"θ=co+sh+si", "ρ=he+ba"})  # the default seven
    assert len(biases) == 7 * len(study.misalignment_methods)
    every = modality_structures_study("cpu", {"misalignment_settings": "all"}).misalignment_experiment({})
    assert [s.grid[1][1] for s in every.settings][::4] == labels
    two = modality_structures_study("cpu", {"misalignment_settings": "ρ=ba, θ=co"})
    two = two.misalignment_experiment({})
    assert [s.grid[1][1] for s in two.settings][::4] == ["θ=co", "ρ=ba"]  # in bias_settings() order
    rows = [{"method": "clip", "feature": "img", "bias": b, "factor": f, "metric": "mcc", "value": 0.5}
            for b in labels[:2] for f in DISCRETE]
    rows += [{"method": "clip", "feature": "img", "bias": "θ=co", "factor": "pos_x", "metric": "linear",
              "value": 0.25}]
    tables = ss.misalignment_tables(rows)
    factors, settings, mat = tables[("clip", "img")]
    assert settings == labels[:2] and factors[-3:] == ["pos_x", "pos_y", "rotation"]
    assert mat[0, 0] == 0.5 and mat[-3, 0] == 0.25 and np.isnan(mat[-3, 1])
    # role summary: colour unbiased in both settings, shape omitted under θ=co, unbiased under θ=co+sh
    rows += [{**r, "method": "sep", "value": r["value"] + (0.25 if r["factor"] == "shape" else 0.0)}
             for r in rows if r["bias"] == "θ=co"]
    roles = {label: {f: cfg.role(f) for f in (*DISCRETE, "pos_x")} for label, cfg in
             ((lab, dataclasses.replace(study.base, **bias)) for lab, bias in bias_settings())}
    summary = {(r["method"], r["role"]): r for r in ss.role_summary(ss.misalignment_tables(rows), roles)}
    assert summary[("clip", "unbiased")]["cells"] == 3 and summary[("clip", "omitted")]["cells"] == 7
    assert summary[("clip", "image-only")]["mean"] == 0.25
    assert np.isnan(summary[("clip", "omitted")]["diff_to_clip"])
    assert summary[("sep", "omitted")]["mean"] == pytest.approx(0.5 + 0.25 / 4)  # shape, size, height, bg
    assert summary[("sep", "omitted")]["diff_to_clip"] == pytest.approx(0.25 / 4)
    assert summary[("sep", "unbiased")]["cells"] == 1  # sep ran θ=co only
    text = ss.format_role_summary(list(summary.values()))
    assert "| sep, img | 0.50 (+0.00) | 0.56 (+0.06) | 0.25 (+0.00) |" in text.splitlines()


def test_study_bad_input_is_one_line(capsys, tmp_path):
    for argv, message in ((["--set", "seeds=a"], "seeds='a' is invalid"),
                          (["--scale", "paper"], "scale='paper' is invalid"),
                          (["--set", "misalignment_settings=θ=x"], "misalignment_settings='θ=x' is invalid"),
                          (["--grid", "lr=1,2"], "three-stage study")):
        assert cli.main(["sweep", "modality_structures", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_smoke_study_writes_every_table_and_resumes(tmp_path, capsys):
    argv = ["sweep", "modality_structures", "--scale", "smoke", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    for name in ("tuned.json", "test.md", "paired.csv", "paired.png", "misalignment.md", "misalignment.png",
                 "misalignment_roles.csv", "sweep.json", "tune/results.csv", "test/results.csv",
                 "misalignment/results.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    tuned = json.loads((tmp_path / "tuned.json").read_text())["tuned"]
    assert set(tuned) == {"sep", "br", "gc"}
    first = (tmp_path / "test" / "results.csv").read_text()
    stages = json.loads((tmp_path / "sweep.json").read_text())["stage_seconds"]
    assert cli.main(argv) == 0  # every chunk is found finished
    assert (tmp_path / "test" / "results.csv").read_text() == first
    # the stages' seconds still count the resumed chunks' recorded compile + run time
    assert json.loads((tmp_path / "sweep.json").read_text())["stage_seconds"] == stages
    assert min(stages.values()) > 0
    record = json.loads((tmp_path / "test" / "sweep.json").read_text())
    chunks = len(list((tmp_path / "test" / "chunks").glob("*.json")))
    assert sum(g["resumed_chunks"] for g in record["groups"]) == chunks > 0


@pytest.mark.slow  # ~25-50 s of compile
@pytest.mark.needs_8_devices
def test_sharded_chunk_has_no_collectives():
    """Runs share nothing, so a chunk over 8 devices must compile without any cross-device op: under
    plain jit + vmap every L-BFGS probe's while loop waited on an all-reduce of its predicate (48 of
    them here), and such a program aborted the slow smoke study twice on 8 fake devices."""
    from mmjax.train.sweep import Job, Runner, _local_mesh

    study = modality_structures_study("smoke", {})
    setting = study.tune_experiment().settings[0]
    mesh = _local_mesh()
    runner = Runner(setting.config.to_static(), mesh, mesh.devices.size)
    jobs = [Job(i, setting, i) for i in range(mesh.devices.size)]
    text = runner._fn.lower(*runner.inputs(jobs)).compile().as_text()
    for op in ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter"):
        assert op not in text, op
