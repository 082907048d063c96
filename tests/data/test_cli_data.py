"""`mmjax data build scenes` through a parser built here with `add_data_parser`."""

import argparse
import json

import numpy as np
import pytest

from mmjax.configs.common import ConfigError
from mmjax.data.cli_data import add_data_parser
from mmjax.data.scene_dataset import load_scene_config, load_scenes


def run(argv: list[str]) -> int:
    """Parse and run like mmjax.cli.main: ConfigError is re-raised for the test to inspect."""
    parser = argparse.ArgumentParser(prog="mmjax")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_build_scenes_command(tmp_path, capsys):
    argv = ["data", "build", "scenes", "--num", "32", "--out", str(tmp_path), "--quiet",
            "--set", "image_size=16", "--set", "selected=shape,colour", "--set", "perturbed=colour"]
    assert run(argv) == 0
    assert "wrote" in capsys.readouterr().out
    cfg = load_scene_config("scenes", tmp_path)
    assert (cfg.num_train, cfg.num_test) == (32, 8)  # test = max(N // 4, 1)
    assert cfg.selected == ("colour", "shape") and cfg.perturbed == ("colour",)
    train = load_scenes("scenes", "train", tmp_path)
    assert len(train) == 32 and train[0]["image"].shape == (16, 16, 3)
    np.testing.assert_array_equal(train[5]["dropped"], [False, False, True, True, True])
    record = json.loads((tmp_path / "scenes" / "1.0.0" / "scene_config.json").read_text())
    assert record["config"]["scene"]["image_size"] == 16

    # Rebuilding needs --overwrite; the error is one line naming the dataset.
    with pytest.raises(ConfigError, match="'scenes' already exists .*: pass --overwrite") as info:
        run(argv)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("extra, message", [
    (["--set", "perturbed=height", "--set", "selected=colour"], "perturbed=('height',) is invalid"),
    (["--set", "hue=3"], "--set hue=3: unknown field"),
    (["--set", "image_size"], "--set 'image_size' is invalid: expected field=value"),
    (["--num", "0"], "--num=0 is invalid"),
    (["--set", "image_size=4"], "image_size=4 is invalid"),
])
def test_build_errors_are_config_errors(tmp_path, extra, message):
    with pytest.raises(ConfigError) as info:
        run(["data", "build", "scenes", "--out", str(tmp_path), *extra])
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "scenes").exists()


def test_unknown_dataset_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        run(["data", "build", "mnist"])
    assert "invalid choice: 'mnist'" in capsys.readouterr().err
