"""The fusion × regularizer study: its plan, its config's one-line errors, and (slow) a smoke run through the
CLI that resumes without re-running anything."""

import csv
import json
from pathlib import Path

import pytest

from mmjax.cli import main
from mmjax.configs.common import ConfigError
from mmjax.configs.fusion_study import fusion_structures_study
from mmjax.train.fusion_study import format_study_table, plan


def test_plan_fine_tunes_every_pretraining_after_it_and_the_baselines_from_the_plain_one(tmp_path):
    study = fusion_structures_study("smoke", {"methods": "albef,sep", "tasks": "qa,pairs"})
    assert study.pretrain["sep"].sep_weight == 1.0 and study.pretrain["albef"].sep_weight == 0.0
    jobs = plan(study, tmp_path, [0, 1])
    names = [j.name for j in jobs]
    assert names[:4] == ["pretrain/albef/seed0", "pretrain/sep/seed0", "pretrain/albef/seed1",
                         "pretrain/sep/seed1"]
    assert len(jobs) == 4 + 2 * 2 * 4  # (2 methods + text-only + image-only) x 2 tasks x 2 seeds
    by = {j.name: j for j in jobs}
    assert by["qa/sep/seed1"].cfg.pretrained == str(by["pretrain/sep/seed1"].workdir)
    assert by["pairs/text-only/seed0"].cfg.pretrained == str(by["pretrain/albef/seed0"].workdir)
    assert by["pairs/text-only/seed0"].cfg.inputs == "text"
    assert by["qa/image-only/seed1"].cfg.inputs == "image"
    assert by["qa/sep/seed1"].cfg.seed == 1 and by["qa/sep/seed1"].cfg.data_seed == 0  # paired: same data
    assert not fusion_structures_study("smoke", {"baselines": "false"}).baselines


@pytest.mark.parametrize("sets, message", [
    ({"methods": "albef,foo"}, "methods='albef,foo' is invalid"),
    ({"tasks": "qa,vqa"}, "tasks='qa,vqa' is invalid: distinct names from qa, pairs, entailment"),
    ({"steps": "3"}, "--set steps=3: unknown field; allowed: methods, tasks, baselines, pretrain."),
    ({"pretrain.queue_size": "30"}, "queue_size=30 is invalid: must be a positive multiple of batch=16"),
    ({"finetune.lr": "-1"}, "lr=-1.0 is invalid: must be > 0"),
    ({"baselines": "maybe"}, "baselines='maybe' is invalid: must be true or false"),
])
def test_bad_settings_are_one_line(sets, message):
    with pytest.raises(ConfigError, match=None) as err:
        fusion_structures_study("smoke", sets)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_table_lists_methods_by_task_with_seed_spreads():
    rows = [{"method": m, "seed": s, "task": t, "metric": "test/accuracy", "value": v}
            for m, t, s, v in [("albef", "qa", 0, 0.8), ("albef", "qa", 1, 0.9), ("majority", "qa", 0, 0.5),
                               ("majority", "qa", 1, 0.5), ("albef", "pretrain", 0, 0.1)]]
    table = format_study_table(rows, ["qa", "pairs"]).splitlines()
    assert table[2] == "| albef | 0.850 ± 0.071 | – |" and table[3] == "| majority | 0.500 | – |"


@pytest.mark.slow  # two fusion pre-trainings and four fine-tunings at smoke size (about 2-3 minutes)
def test_smoke_study_through_the_cli_writes_results_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["sweep", "fusion_structures", "--scale", "smoke", "--seeds", "1", "--out", str(out),
            "--set", "methods=albef,gc", "--set", "tasks=qa"]
    assert main(argv) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert set(record["jobs"]) == {"pretrain/albef/seed0", "pretrain/gc/seed0", "qa/albef/seed0",
                                   "qa/gc/seed0", "qa/text-only/seed0", "qa/image-only/seed0"}
    assert all(j["status"] == "ok" for j in record["jobs"].values()), record["jobs"]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    qa = {(r["method"], r["metric"]) for r in rows if r["task"] == "qa"}
    for method in ("albef", "gc", "text-only", "image-only", "majority", "text-only Bayes",
                   "image-only Bayes"):
        assert (method, "test/accuracy") in qa, method
    assert ("albef", "val/accuracy") in qa
    assert any(r["task"] == "pretrain" and r["metric"] == "itm/auc" for r in rows)
    assert (out / "results.png").stat().st_size > 0
    assert "| albef |" in capsys.readouterr().out
    # Rerun: every job is cached, nothing trains again, the same results.
    before = (out / "results.csv").read_text()
    assert main(argv) == 0
    again = json.loads((out / "sweep.json").read_text())
    assert all(j["status"] == "ok (cached)" for j in again["jobs"].values())
    assert (out / "results.csv").read_text() == before
    assert Path(again["jobs"]["qa/gc/seed0"]["workdir"]).is_dir()
