"""The procedural scenes (`mmjax.data.scenes`) as a tensorflow-datasets dataset on disk.

(Storage format: docs/design.md#checkpoints-and-data.)

`build_scenes` renders a `SceneDataConfig` in jitted chunks and writes train/test splits as array_record
with `write_dataset`, so `tfds.data_source(name, data_dir=...)` (or `load_scenes`) reads them without
TensorFlow. Each example holds:

- `image` uint8 (H, W, 3); `caption` (string) and `tokens` int32 (caption_max_len,) of the biased caption
  (token ids index `scene_vocab(cfg.scene)`);
- the true factors: int32 scalars `colour`, `shape`, `size`, `height`, `background` (DISCRETE), float32
  scalars `pos_x`, `pos_y`, `rotation` (CONTINUOUS) and int32 `template` (the text-only factor);
- the bias record over DISCRETE (in that order): `dropped` (5,) bool (attribute unselected, absent from
  the caption), `changed` (5,) bool (the caption states a wrong value) and `text_values` (5,) int32 (the
  value the caption states, -1 where dropped).

The config is stored as JSON in `scene_config.json` next to the tfds files and in the dataset
description, so a reader knows the selection and perturbation (`load_scene_config`).

Example i of a split depends only on (config, split, i): its key is `fold_in(fold_in(key(seed), split
index), i)`, so the chunk size does not change the data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.configs.common import ConfigError, parse_value
from mmjax.data.scenes import (
    CONTINUOUS,
    DISCRETE,
    SceneConfig,
    caption_max_len,
    caption_strings,
    caption_tokens,
    render,
    sample_factors,
    scene_vocab,
)
from mmjax.data.tfds_io import DatasetMissingError, load_source, write_dataset

SPLITS = ("train", "test")
CONFIG_FILE = "scene_config.json"
VERSION = "1.0.0"
RECORD_KEYS = ("dropped", "changed", "text_values")


@dataclass(frozen=True)
class SceneDataConfig:
    """A scene dataset: the generator (`scene`), caption biases, seed and split sizes."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    selected: tuple[str, ...] = DISCRETE  # attributes named in captions (the rest are dropped)
    perturbed: tuple[str, ...] = ()  # selected attributes whose word is redrawn with probability p_change
    p_change: float = 0.9
    seed: int = 0
    num_train: int = 10_000
    num_test: int = 2_500

    def __post_init__(self):
        if not isinstance(self.scene, SceneConfig):
            raise ConfigError(f"scene={self.scene!r} is invalid: must be a SceneConfig")
        for name in ("selected", "perturbed"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name}={value!r} is invalid: must be a tuple of names from "
                                  f"{', '.join(DISCRETE)}")
            unknown = [v for v in value if v not in DISCRETE]
            if unknown or len(set(value)) != len(value):
                raise ConfigError(f"{name}={tuple(value)!r} is invalid: must be distinct names from "
                                  f"{', '.join(DISCRETE)}")
            # Canonical form: DISCRETE order, so equal selections compare (and serialise) equal.
            object.__setattr__(self, name, tuple(f for f in DISCRETE if f in value))
        if outside := [f for f in self.perturbed if f not in self.selected]:
            raise ConfigError(f"perturbed={self.perturbed!r} is invalid: {', '.join(outside)} not selected; "
                              f"perturbed must be a subset of selected={self.selected!r}")
        if not isinstance(self.p_change, int | float) or not 0 <= self.p_change <= 1:
            raise ConfigError(f"p_change={self.p_change!r} is invalid: must be a number in [0, 1]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} is invalid: must be an int >= 0")
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} is invalid: must be an int >= 1")

    @property
    def selected_mask(self) -> np.ndarray:
        """int32 (5,) 0/1 mask over DISCRETE of the selected attributes."""
        return np.asarray([f in self.selected for f in DISCRETE], np.int32)

    @property
    def perturbed_mask(self) -> np.ndarray:
        """int32 (5,) 0/1 mask over DISCRETE of the perturbed attributes."""
        return np.asarray([f in self.perturbed for f in DISCRETE], np.int32)

    def num(self, split: str) -> int:
        """Number of examples of `split` ("train" or "test")."""
        return {"train": self.num_train, "test": self.num_test}[split]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the config (tuples as lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SceneDataConfig:
        """Inverse of `to_json` (lists back to tuples; unknown keys are an error)."""
        data = dict(data)
        scene = {k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("scene", {}).items()}
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ConfigError(f"scene data config has unknown fields {unknown}; allowed: {sorted(known)}")
        try:
            scene_cfg = SceneConfig(**scene)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"scene={scene!r} is invalid: {err}") from None
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(scene=scene_cfg, **data)


# ------------------------------------------------------------------------------------------------ overrides
def _parse_names(name: str, raw: str) -> tuple[str, ...]:
    text = raw.strip().strip("[]()")
    if text.lower() in ("", "none"):
        return ()
    if text.lower() == "all" and name in ("selected", "perturbed"):
        return DISCRETE
    return tuple(p for p in text.replace(" ", "").split(",") if p)


def parse_scene_overrides(cfg: SceneDataConfig, overrides: dict[str, str]) -> SceneDataConfig:
    """`cfg` with `field=value` strings applied; SceneConfig fields (e.g. image_size) go to `cfg.scene`.

    Tuples of words take comma lists (`selected=colour,shape`, `colours=red,green,blue,cyan`);
    `selected=all`, `perturbed=none` work too.
    """
    top = {f.name: f for f in dataclasses.fields(cfg) if f.name != "scene"}
    inner = {f.name: f for f in dataclasses.fields(cfg.scene) if f.init}
    updates: dict[str, Any] = {}
    scene_updates: dict[str, Any] = {}
    for name, raw in overrides.items():
        if name in top:
            target, annotation = updates, str(top[name].type)
        elif name in inner:
            target, annotation = scene_updates, str(inner[name].type)
        else:
            allowed = ", ".join(sorted([*top, *inner]))
            raise ConfigError(f"--set {name}={raw}: unknown field; allowed fields: {allowed}")
        if annotation.startswith("tuple[str"):
            target[name] = _parse_names(name, raw)
        else:
            target[name] = parse_value(name, raw, annotation)
    try:
        scene = dataclasses.replace(cfg.scene, **scene_updates) if scene_updates else cfg.scene
    except ValueError as err:  # SceneConfig validates with plain ValueError
        raise ConfigError(str(err)) from None
    return dataclasses.replace(cfg, scene=scene, **updates)


# ------------------------------------------------------------------------------------------------ generation
@functools.partial(jax.jit, static_argnames=("n", "cfg"))
def scene_examples(key: jax.Array, start: int | jax.Array, n: int, cfg: SceneConfig, selected: jax.Array,
                   perturbed: jax.Array, p_change: float | jax.Array) -> dict[str, jax.Array]:
    """Examples start..start+n-1 of the stream `key`: uint8 images, caption tokens, factors, bias record.

    Example i uses key `fold_in(key, i)` alone, so any chunking of a stream gives the same examples.
    `selected`/`perturbed` are 0/1 masks over DISCRETE (see `caption_tokens`).
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(n))

    def one(k: jax.Array) -> tuple[dict[str, jax.Array], jax.Array, dict[str, jax.Array]]:
        k_scene, k_caption = jax.random.split(k)
        factors = sample_factors(k_scene, 1, cfg)
        tokens, record = caption_tokens(k_caption, factors, cfg, selected, perturbed, p_change)
        return factors, tokens, record

    factors, tokens, record = jax.vmap(one)(keys)
    factors = {k: v[:, 0] for k, v in factors.items()}
    images = render(factors, cfg)
    out = {"image": jnp.round(images * 255).astype(jnp.uint8), "tokens": tokens[:, 0]}
    out.update(factors)
    out.update({k: v[:, 0] for k, v in record.items()})
    return out


def split_key(cfg: SceneDataConfig, split: str) -> jax.Array:
    """The key of a split's example stream (train and test streams are disjoint)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), SPLITS.index(split))


def iter_chunks(cfg: SceneDataConfig, split: str, chunk_size: int = 1024) -> Iterator[dict[str, np.ndarray]]:
    """Numpy column chunks of a split (the last may be shorter), captions decoded in `caption`."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} is invalid: must be an int >= 1")
    total = cfg.num(split)
    n = min(chunk_size, max(cfg.num_train, cfg.num_test))  # one shape for both splits: one compile
    key = split_key(cfg, split)
    for start in range(0, total, n):
        chunk = scene_examples(key, start, n, cfg.scene, cfg.selected_mask, cfg.perturbed_mask,
                               float(cfg.p_change))
        count = min(n, total - start)
        columns = {k: np.asarray(v[:count]) for k, v in chunk.items()}
        columns["caption"] = np.asarray(caption_strings(columns["tokens"], cfg.scene), dtype=object)
        yield columns


def scene_features(cfg: SceneDataConfig):
    """The tfds FeaturesDict of a scene dataset's examples (see the module doc)."""
    import tensorflow_datasets as tfds

    s, length, k = cfg.scene.image_size, caption_max_len(cfg.scene), len(DISCRETE)
    features = {
        "image": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8, doc="RGB image"),
        "caption": tfds.features.Text(doc="biased caption"),
        "tokens": tfds.features.Tensor(shape=(length,), dtype=np.int32, doc="caption ids in scene_vocab"),
    }
    for name in DISCRETE:
        features[name] = tfds.features.Scalar(dtype=np.int32, doc=f"true {name} index")
    for name in CONTINUOUS:
        features[name] = tfds.features.Scalar(dtype=np.float32, doc=f"{name} (image only)")
    features["template"] = tfds.features.Scalar(dtype=np.int32, doc="caption template (text only)")
    features["dropped"] = tfds.features.Tensor(shape=(k,), dtype=np.bool_, doc="unselected, over DISCRETE")
    features["changed"] = tfds.features.Tensor(shape=(k,), dtype=np.bool_, doc="wrong value stated")
    features["text_values"] = tfds.features.Tensor(shape=(k,), dtype=np.int32, doc="stated value, -1 dropped")
    return tfds.features.FeaturesDict(features)


def _examples(cfg: SceneDataConfig, split: str, chunk_size: int, bar) -> Iterator[dict[str, Any]]:
    keys = ["image", "caption", "tokens", *DISCRETE, *CONTINUOUS, "template", *RECORD_KEYS]
    for columns in iter_chunks(cfg, split, chunk_size):
        count = len(columns["caption"])
        for i in range(count):
            yield {k: columns[k][i] for k in keys}
        if bar is not None:
            bar.update(count)


def config_record(cfg: SceneDataConfig) -> dict[str, Any]:
    """What `scene_config.json` holds: the config, the DISCRETE order of the record, the token vocab."""
    return {"config": cfg.to_json(), "discrete": list(DISCRETE), "continuous": list(CONTINUOUS),
            "vocab": scene_vocab(cfg.scene)}


def build_scenes(cfg: SceneDataConfig, out_dir: str | Path, name: str = "scenes", progress: bool = True,
                 chunk_size: int = 1024, overwrite: bool = False) -> Path:
    """Render `cfg`, write its train/test splits as a tfds dataset; returns `<out_dir>/<name>/<version>`."""
    text = json.dumps(config_record(cfg), indent=1)
    bars = []

    def split_stream(split: str) -> Iterator[dict[str, Any]]:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.num(split), desc=f"{name} {split}", unit="img")
            bars.append(bar)
        yield from _examples(cfg, split, chunk_size, bar)
        if bar is not None:
            bar.close()

    # Our bars count images per split; tfds's own (splits, examples, shuffling) would only interleave.
    from tensorflow_datasets.core.utils import tqdm_utils

    tfds_bars = getattr(tqdm_utils, "_active", True)
    tqdm_utils.display_progress_bar(False)
    try:
        path = write_dataset(name, {split: split_stream(split) for split in SPLITS}, out_dir,
                             version=VERSION, features=scene_features(cfg), overwrite=overwrite,
                             description=f"mmjax procedural scenes; {CONFIG_FILE}: {text}")
    finally:
        tqdm_utils.display_progress_bar(tfds_bars)
        for bar in bars:
            bar.close()
    (path / CONFIG_FILE).write_text(text + "\n")
    return path


def load_scenes(name: str = "scenes", split: str = "train",
                data_dir: str | Path | None = None) -> Sequence[dict[str, Any]]:
    """Random-access tfds data source of a built scene split (indexing gives numpy example dicts)."""
    return load_source(name, split, data_dir)


def load_scene_config(name: str = "scenes", data_dir: str | Path = "data") -> SceneDataConfig:
    """The SceneDataConfig a scene dataset was built with (from its scene_config.json)."""
    path = Path(data_dir) / name / VERSION / CONFIG_FILE
    if not path.is_file():
        raise DatasetMissingError(f"scene config {path} not found: build the dataset with "
                                  f"`mmjax data build scenes --out {data_dir}`")
    try:
        return SceneDataConfig.from_json(json.loads(path.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"scene config {path} is malformed: {err!r}") from None


# ------------------------------------------------------------------------------------------------ in memory
# Zero-shot prompts per attribute: caption fragments around the value word, so every prompt word is in a
# vocabulary built from the captions.
ATTRIBUTE_PROMPTS = {
    "colour": ("is {}", "with {} colour"),
    "shape": ("a {}", "the {}"),
    "size": ("of {} size", "and {}"),
    "height": ("at {} height", "placed {}"),
    "background": ("on a {} background", "in front of a {} wall"),
}


def scene_arrays(num_train: int, num_test: int, image_size: int = 32, seed: int = 0,
                 chunk_size: int = 1024) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Train and test columns of unbiased scenes (every attribute named), rendered in memory.

    Columns as in a built dataset: `image` uint8, `caption`, the factors and the bias record.
    """
    cfg = SceneDataConfig(scene=SceneConfig(image_size=image_size), seed=seed, num_train=num_train,
                          num_test=num_test)

    def split(name: str) -> dict[str, np.ndarray]:
        chunks = list(iter_chunks(cfg, name, chunk_size))
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    return split("train"), split("test")


def attribute_tasks(scene: SceneConfig | None = None) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Zero-shot tasks of the scenes: attribute → (class names in label order, prompt templates)."""
    scene = SceneConfig() if scene is None else scene
    return {f: (scene.values(f), ATTRIBUTE_PROMPTS[f]) for f in DISCRETE}
