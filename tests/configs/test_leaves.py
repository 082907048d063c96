"""Configs are leaves: importing every config module loads nothing of mmjax.train, and the sweepable
configs follow the one protocol the sweep relies on."""

import pkgutil
import subprocess
import sys

import mmjax.configs
from mmjax.configs.experiment import Sweepable
from mmjax.configs.image_text import ImageTextConfig
from mmjax.configs.numeric import base_config
from mmjax.configs.structure_scenes import StructureConfig

CONFIG_MODULES = sorted(m.name for m in pkgutil.iter_modules(mmjax.configs.__path__))


def test_every_config_module_is_checked():
    assert {"clip", "fusion", "finetune", "fusion_study", "numeric", "structures", "structure_scenes",
            "structure_study"} <= set(CONFIG_MODULES)


def test_config_modules_do_not_import_train():
    code = ("import sys, importlib\n"
            f"for m in {CONFIG_MODULES!r}: importlib.import_module('mmjax.configs.' + m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('mmjax.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sweepable_configs_follow_the_protocol():
    for cfg in (base_config("smoke"), ImageTextConfig(), StructureConfig()):
        assert isinstance(cfg, Sweepable)
        assert hash(cfg.to_static()) == hash(cfg.to_static())  # compile groups key on it
        assert cfg.with_overrides({"lr": "0.5"}).lr == 0.5
