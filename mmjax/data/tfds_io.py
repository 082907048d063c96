"""Write numpy examples as a tensorflow-datasets dataset (array_record) and read it back, without TensorFlow.

The files are a regular tfds dataset (`<data_dir>/<name>/<version>/`), so `tfds.data_source(name,
data_dir=...)` reads them too. Arrays go through `tfds.features.Tensor`: the `Image` feature would
PNG-encode with TensorFlow, which mmjax does not require.
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

Example = Mapping[str, Any]
SplitData = Mapping[str, Sequence | np.ndarray] | Iterable[Example]

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


class DatasetError(ValueError):
    """A dataset cannot be written or read as asked (message: what, where, how to fix)."""


class DatasetMissingError(DatasetError, FileNotFoundError):
    """The dataset has not been prepared in the data directory."""


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A tfds builder for in-memory examples: features and split generators are given at construction."""

    # The base class locates a checksums file next to the builder's module and, to do so, probes
    # `importlib_resources`, an optional package; None (as for notebook-defined builders) means "no
    # checksums", which is right since nothing is downloaded.
    code_path = None

    def __init__(self, *, name: str, version: str, features: tfds.features.FeaturesDict,
                 splits: Mapping[str, Iterable[Example]], description: str = "", **kwargs):
        self.name = name
        self.VERSION = tfds.core.Version(version)
        self._features = features
        self._splits = splits
        self._description = description
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # Written order is kept so example i on disk is example i given (grain shuffles at read time).
        return tfds.core.DatasetInfo(builder=self, description=self._description, features=self._features,
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(examples) for split, examples in self._splits.items()}

    def _generate_examples(self, examples: Iterable[Example]):
        yield from enumerate(examples)


def iter_rows(columns: Mapping[str, Sequence | np.ndarray]) -> Iterator[dict[str, Any]]:
    """Examples of a dict of equal-length columns, one dict per row."""
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise DatasetError(f"columns have different lengths: {lengths}")
    for i in range(next(iter(lengths.values()), 0)):
        yield {k: v[i] for k, v in columns.items()}


def feature_for(value: Any) -> tfds.features.FeatureConnector:
    """The tfds feature storing `value` losslessly: Text for strings, Scalar/Tensor of its dtype otherwise."""
    if isinstance(value, str | bytes):
        return tfds.features.Text()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise DatasetError(f"cannot store a value of dtype {array.dtype}: use strings or numeric arrays")
    if array.ndim == 0:
        return tfds.features.Scalar(dtype=array.dtype)
    return tfds.features.Tensor(shape=array.shape, dtype=array.dtype)


def features_for(example: Example) -> tfds.features.FeaturesDict:
    """Features inferred from one example (every example must have the same keys, dtypes and shapes)."""
    return tfds.features.FeaturesDict({k: feature_for(v) for k, v in example.items()})


def write_dataset(name: str, splits: Mapping[str, SplitData], data_dir: str | Path, *,
                  version: str = "1.0.0", features: tfds.features.FeaturesDict | None = None,
                  description: str = "", overwrite: bool = False) -> Path:
    """Write each split (a columns dict or iterable of example dicts) as array_record; returns its dir."""
    if not _NAME_RE.fullmatch(name):
        raise DatasetError(f"dataset name {name!r} is invalid: use lowercase letters, digits and _")
    if not splits:
        raise DatasetError(f"dataset {name!r}: no splits given")
    streams = {s: iter_rows(d) if isinstance(d, Mapping) else iter(d) for s, d in splits.items()}
    if features is None:
        split, stream = next(iter(streams.items()))
        first = next(stream, None)
        if first is None:
            raise DatasetError(f"dataset {name!r}: split {split!r} is empty, features cannot be inferred")
        features = features_for(first)
        streams[split] = itertools.chain([first], stream)
    target = Path(data_dir) / name / version
    if target.exists():
        if not overwrite:
            raise DatasetError(f"dataset {name!r} already exists at {target}: "
                               "pass overwrite=True to replace it")
        shutil.rmtree(target)
    builder = ArrayRecordBuilder(name=name, version=version, features=features, splits=streams,
                                 description=description, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return target


def _missing(name: str, data_dir: str | Path | None) -> DatasetMissingError:
    where = data_dir if data_dir is not None else "the default tfds data_dir (~/tensorflow_datasets)"
    return DatasetMissingError(f"dataset {name!r} is not prepared in {where}: run `mmjax data build {name}"
                               f" --data_dir DIR` or pass --set data_dir=DIR where it was built")


def load_source(name: str, split: str, data_dir: str | Path | None = None, *,
                download: bool = False) -> Sequence[dict[str, Any]]:
    """Random-access source of a prepared tfds split (`download=True` lets tfds prepare a public one)."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise _missing(name, data_dir) from None
    if download:
        builder.download_and_prepare(file_format="array_record")
    elif not builder.is_prepared():
        raise _missing(name, data_dir)
    try:
        return builder.as_data_source(split=split)
    except ValueError as err:  # e.g. an unknown split; tfds's message lists the valid ones
        raise DatasetError(f"dataset {name!r}: {str(err).splitlines()[0]}") from None
