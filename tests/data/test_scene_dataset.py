"""Scene dataset on disk: tfds round trip, bias record vs captions, stored config, chunk-independence."""

import json
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmjax.configs.common import ConfigError
from mmjax.data.scene_dataset import (
    CONFIG_FILE,
    SceneDataConfig,
    build_scenes,
    iter_chunks,
    load_scene_config,
    load_scenes,
    parse_scene_overrides,
)
from mmjax.data.scenes import CONTINUOUS, DISCRETE, SceneConfig, caption_max_len, caption_strings
from mmjax.data.tfds_io import DatasetMissingError

CFG = SceneDataConfig(scene=SceneConfig(image_size=16), selected=("colour", "shape", "size", "background"),
                      perturbed=("shape", "background"), p_change=1.0, seed=3, num_train=32, num_test=8)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("scenes")
    path = build_scenes(CFG, data_dir, progress=False, chunk_size=16)
    return data_dir, path


def rows(source) -> list[dict]:
    return [source[i] for i in range(len(source))]


def test_features_and_splits(built):
    data_dir, path = built
    assert path == data_dir / "scenes" / "1.0.0"
    train = tfds.data_source("scenes", split="train", data_dir=data_dir)
    test = load_scenes("scenes", "test", data_dir)
    assert (len(train), len(test)) == (32, 8)
    example = train[0]
    expected = {"image", "caption", "tokens", *DISCRETE, *CONTINUOUS, "template", "dropped", "changed",
                "text_values"}
    assert set(example) == expected
    assert example["image"].dtype == np.uint8 and example["image"].shape == (16, 16, 3)
    assert example["tokens"].dtype == np.int32 and example["tokens"].shape == (caption_max_len(CFG.scene),)
    for key in ("dropped", "changed"):
        assert example[key].dtype == np.bool_ and example[key].shape == (5,)
    assert example["text_values"].dtype == np.int32
    for i, row in enumerate(rows(train)):
        assert row["caption"].decode() == caption_strings(row["tokens"], CFG.scene)[0], i
        assert 0 <= row["pos_x"] < 1 and -0.5 <= row["pos_y"] < 0.5 and 0 <= row["rotation"] < 2 * np.pi
        for n, name in zip(CFG.scene.n_values, DISCRETE, strict=True):
            assert 0 <= row[name] < n
    # Train and test are different streams; images are not constant.
    assert not np.array_equal(train[0]["image"], test[0]["image"])
    assert len({train[i]["image"].tobytes() for i in range(32)}) == 32
    assert "tensorflow" not in sys.modules


def test_bias_record_matches_captions(built):
    data_dir, _ = built
    examples = rows(load_scenes("scenes", "train", data_dir)) + rows(load_scenes("scenes", "test", data_dir))
    changed_any = np.zeros(5, bool)
    for row in examples:
        words = row["caption"].decode().split()
        true = np.asarray([row[f] for f in DISCRETE])
        np.testing.assert_array_equal(row["dropped"], [f not in CFG.selected for f in DISCRETE])
        for j, factor in enumerate(DISCRETE):
            values = CFG.scene.values(factor)
            if row["dropped"][j]:
                assert row["text_values"][j] == -1 and not row["changed"][j]
                assert not set(values) & set(words), (factor, words)  # a dropped attribute's word is absent
            else:
                stated = values[row["text_values"][j]]
                assert stated in words and sum(w in values for w in words) == 1, (factor, words)
                assert row["changed"][j] == (row["text_values"][j] != true[j])
                if factor not in CFG.perturbed:
                    assert row["text_values"][j] == true[j]
        changed_any |= row["changed"]
    # p_change = 1 over 4 shapes / 3 backgrounds: 40 examples change both at least once.
    np.testing.assert_array_equal(changed_any, [f in CFG.perturbed for f in DISCRETE])


def test_config_json_and_chunk_independence(built):
    data_dir, path = built
    record = json.loads((path / CONFIG_FILE).read_text())
    assert record["config"]["selected"] == ["colour", "shape", "size", "background"]
    assert record["config"]["perturbed"] == ["shape", "background"]
    assert record["discrete"] == list(DISCRETE)
    assert load_scene_config("scenes", data_dir) == CFG
    info = tfds.builder("scenes", data_dir=data_dir).info
    assert '"perturbed": [' in info.description
    # Built with chunks of 16; one chunk of 32 gives the same examples.
    (chunk,) = iter_chunks(CFG, "train", chunk_size=32)
    source = load_scenes("scenes", "train", data_dir)
    for i in (0, 17, 31):
        np.testing.assert_array_equal(chunk["image"][i], source[i]["image"])
        np.testing.assert_array_equal(chunk["tokens"][i], source[i]["tokens"])
    with pytest.raises(DatasetMissingError, match="scene config .* not found"):
        load_scene_config("nope", data_dir)


def test_config_validation_messages():
    with pytest.raises(ConfigError, match=r"perturbed=\('height',\) is invalid: height not selected"):
        SceneDataConfig(selected=("colour",), perturbed=("height",))
    with pytest.raises(ConfigError, match=r"selected=\('colour', 'hue'\) is invalid: must be distinct names"):
        SceneDataConfig(selected=("colour", "hue"))
    with pytest.raises(ConfigError, match="selected='colour' is invalid"):
        SceneDataConfig(selected="colour")
    with pytest.raises(ConfigError, match="p_change=1.5 is invalid"):
        SceneDataConfig(p_change=1.5)
    with pytest.raises(ConfigError, match="num_test=0 is invalid"):
        SceneDataConfig(num_test=0)
    # Canonical DISCRETE order.
    assert SceneDataConfig(selected=("shape", "colour")).selected == ("colour", "shape")


def test_overrides():
    cfg = parse_scene_overrides(SceneDataConfig(), {"selected": "shape,colour", "perturbed": "colour",
                                                    "image_size": "32", "p_change": "1", "causal": "true",
                                                    "colours": "red,green,blue,cyan"})
    assert cfg.selected == ("colour", "shape") and cfg.perturbed == ("colour",) and cfg.p_change == 1.0
    assert cfg.scene.image_size == 32 and cfg.scene.causal and cfg.scene.colours[-1] == "cyan"
    assert parse_scene_overrides(cfg, {"perturbed": "none", "selected": "all"}).selected == DISCRETE
    with pytest.raises(ConfigError, match="--set hue=1: unknown field; allowed fields: .*image_size"):
        parse_scene_overrides(cfg, {"hue": "1"})
    with pytest.raises(ConfigError, match="image_size=8 is invalid"):
        parse_scene_overrides(cfg, {"image_size": "8"})
    with pytest.raises(ConfigError, match="num_train='many' is invalid"):
        parse_scene_overrides(cfg, {"num_train": "many"})


def test_seed_changes_the_data():
    a = next(iter_chunks(SceneDataConfig(scene=CFG.scene, num_train=32, num_test=8, seed=0), "test"))
    b = next(iter_chunks(SceneDataConfig(scene=CFG.scene, num_train=32, num_test=8, seed=1), "test"))
    assert a["image"].shape == (8, 16, 16, 3) and len(a["caption"]) == 8
    assert not np.array_equal(a["image"], b["image"])
