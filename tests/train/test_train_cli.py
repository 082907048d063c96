"""`mmjax train` / `mmjax eval`: one-line errors before any compile, and (slow) the tiny config end to end."""

import json
from pathlib import Path

import pytest

from mmjax.cli import main

CONFIG = str(Path(__file__).resolve().parents[2] / "experiments" / "clip_tiny.py")


@pytest.mark.parametrize("sets, message", [
    (["image_tower=vgg"], "image_tower='vgg' is invalid: allowed: vit, resnet18, resnet50"),
    (["loss=triplet"], "loss='triplet' is invalid: allowed: clip, siglip, simclr, con"),
    (["batch=12"], "batch=12 is invalid: must be divisible by the device count 8"),
    (["dataset=no_such_set", "data_dir=/nonexistent"],
     "dataset 'no_such_set' is not prepared in /nonexistent: run `mmjax data build"),
    (["widht=3"], "--set widht=3: unknown field"),
])
def test_bad_input_is_one_line(tmp_path, capsys, sets, message):
    argv = ["train", "--config", CONFIG, "--workdir", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_eval_without_training_is_one_line(tmp_path, capsys):
    assert main(["eval", "--workdir", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_clip_tiny_trains_resumes_and_evaluates(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["train", "--config", CONFIG, "--workdir", str(workdir)]) == 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 300 and rows[-1]["loss"] < rows[0]["loss"] - 1.0
    assert rows[-1]["zeroshot/top1"] > 3 / 12
    # Rerunning resumes at the last checkpoint: nothing left to train, same final evaluation.
    assert main(["train", "--config", CONFIG, "--workdir", str(workdir)]) == 0
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == len(rows)
    assert main(["eval", "--workdir", str(workdir)]) == 0
    evaluated = json.loads((workdir / "eval.json").read_text())
    assert evaluated["step"] == 300
    assert evaluated["zeroshot/top1"] == pytest.approx(rows[-1]["zeroshot/top1"], abs=1e-6)
