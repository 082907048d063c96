"""tfds I/O without TensorFlow: array_record round trip, missing-dataset errors, a mocked public dataset."""

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmjax.data.pipeline import make_generated_dataset
from mmjax.data.tfds_io import DatasetError, DatasetMissingError, load_source, write_dataset

N = 32


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    train = dict(make_generated_dataset(N, image_size=12, seed=1).columns)
    train["latents"] = rng.normal(size=(N, 5)).astype(np.float32)
    train["tokens"] = rng.integers(0, 100, (N, 7)).astype(np.int32)
    test = {k: v[:8] for k, v in train.items()}
    path = write_dataset("toy_shapes", {"train": train, "test": test}, data_dir)
    return data_dir, path, train


def test_round_trip_with_tfds_data_source(written):
    data_dir, path, train = written
    assert path == data_dir / "toy_shapes" / "1.0.0"
    assert sorted(p.name for p in path.glob("*.array_record*")) == [
        "toy_shapes-test.array_record-00000-of-00001", "toy_shapes-train.array_record-00000-of-00001"]
    source = tfds.data_source("toy_shapes", split="train", data_dir=data_dir)
    assert len(source) == N
    for i in (0, 5, N - 1):
        example = source[i]
        assert set(example) == set(train)
        assert example["caption"].decode() == train["caption"][i]
        for key in ("image", "latents", "tokens"):
            assert example[key].dtype == train[key].dtype
            np.testing.assert_array_equal(example[key], train[key][i])
        for key in ("label", "colour", "shape", "size"):
            assert example[key] == train[key][i]
    assert len(tfds.data_source("toy_shapes", split="test", data_dir=data_dir)) == 8
    assert "tensorflow" not in sys.modules


def test_load_source_and_iterable_input(written, tmp_path):
    data_dir, _, train = written
    source = load_source("toy_shapes", "train[:10]", data_dir)
    assert len(source) == 10
    np.testing.assert_array_equal(source[3]["image"], train["image"][3])
    # A generator of example dicts works too (features inferred from the first example).
    examples = ({"x": np.full(3, i, np.int64), "name": f"n{i}"} for i in range(4))
    write_dataset("from_rows", {"train": examples}, tmp_path)
    rows = load_source("from_rows", "train", tmp_path)
    assert [r["name"] for r in rows] == [b"n0", b"n1", b"n2", b"n3"]


def test_write_errors(written):
    data_dir, _, train = written
    with pytest.raises(DatasetError, match="already exists .* overwrite=True"):
        write_dataset("toy_shapes", {"train": train}, data_dir)
    with pytest.raises(DatasetError, match="name 'Bad-Name' is invalid"):
        write_dataset("Bad-Name", {"train": train}, data_dir)
    with pytest.raises(DatasetError, match="different lengths"):
        write_dataset("ragged", {"train": {"a": np.zeros(3), "b": np.zeros(4)}}, data_dir)


def test_missing_dataset_message(tmp_path, written):
    with pytest.raises(DatasetMissingError) as info:
        load_source("no_such_dataset", "train", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"dataset 'no_such_dataset' is not prepared in {tmp_path}: run `mmjax data build "
                       "no_such_dataset --data_dir DIR` or pass --set data_dir=DIR where it was built")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    # A public tfds dataset that was never prepared is "missing" too: nothing is downloaded.
    with pytest.raises(DatasetMissingError, match="'mnist' is not prepared"):
        load_source("mnist", "train", tmp_path)
    with pytest.raises(DatasetError, match="toy_shapes.*validation"):
        load_source("toy_shapes", "validation", written[0])


def test_mocked_public_dataset():
    # MockPolicy.USE_CODE builds fake examples from the dataset's feature spec, so neither the data nor
    # the metadata files (nor TensorFlow) are needed; tfds.data_source is mocked, and so is
    # download_and_prepare, which load_source(download=True) calls.
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("mnist", split="train")
        via_load = load_source("mnist", "train", download=True)
        assert len(source) == len(via_load) == 6
        example = source[0]
        assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8
        assert 0 <= example["label"] < 10
        np.testing.assert_array_equal(via_load[2]["image"], source[2]["image"])
