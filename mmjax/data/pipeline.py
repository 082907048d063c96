"""Input pipeline of the two-tower trainer: grain over a random-access source, and a synthetic shapes set.

`make_dataset` is a pure index -> batch map (shuffle, shard, batch, tokenize, repeat), so the iterator
position `{"next_index": k}` from `get_state()` is all a checkpoint needs to resume the data stream
exactly. Batches hold numeric numpy arrays only, ready for `jax.device_put`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grain
import jax
import numpy as np

from mmjax.data.tokenizer import Tokenizer, as_strings

IMAGE_KEY, CAPTION_KEY, TOKENS_KEY = "image", "caption", "tokens"

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 215, 40)}
SHAPES = ("square", "circle", "triangle")
SIZES = ("small", "large")
CAPTION_TEMPLATES = ("a {size} {colour} {shape}", "a photo of a {colour} {shape}",
                     "a {colour} {shape} on a dark background", "a {size} {shape} that is {colour}")
PROMPT_TEMPLATES = ("a {}", "a photo of a {}")  # zero-shot prompts around a class name


@dataclass(frozen=True, eq=False)
class ArraySource:
    """Random-access source over equal-length numpy columns (the interface of a tfds data source)."""

    columns: Mapping[str, np.ndarray]

    def __post_init__(self):
        lengths = {k: len(v) for k, v in self.columns.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns must be non-empty and of equal length, got {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {k: v[index] for k, v in self.columns.items()}


@dataclass(frozen=True, eq=False)
class GeneratedDataset(ArraySource):
    """Coloured shapes with templated captions; `label` indexes `class_names` ("red square", ...)."""

    class_names: tuple[str, ...] = ()
    prompt_templates: tuple[str, ...] = field(default=PROMPT_TEMPLATES)

    @property
    def captions(self) -> list[str]:
        """All captions, e.g. to build a tokenizer's vocabulary."""
        return as_strings(self.columns[CAPTION_KEY])


def make_generated_dataset(n: int, image_size: int = 32, seed: int = 0) -> GeneratedDataset:
    """n images of one coloured shape on a dark noisy background, with a caption naming colour and shape.

    Columns: image uint8 (n, s, s, 3), caption str, label (colour * len(SHAPES) + shape), and the factors
    colour, shape, size (0 small, 1 large) as int32.
    """
    if n < 1 or image_size < 8:
        raise ValueError(f"n={n}, image_size={image_size} is invalid: need n >= 1 and image_size >= 8")
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, len(COLOURS), n).astype(np.int32)
    shape = rng.integers(0, len(SHAPES), n).astype(np.int32)
    size = rng.integers(0, len(SIZES), n).astype(np.int32)
    radius = image_size * np.where(size == 1, rng.uniform(0.28, 0.36, n), rng.uniform(0.15, 0.21, n))
    cy, cx = (rng.uniform(radius, image_size - radius) for _ in range(2))
    grid = np.arange(image_size, dtype=np.float32) + 0.5
    dy = grid[None, :, None] - cy[:, None, None].astype(np.float32)
    dx = grid[None, None, :] - cx[:, None, None].astype(np.float32)
    r = radius[:, None, None].astype(np.float32)
    # All three shapes cover about 3 r^2 pixels, so the pixel count alone does not tell the shape.
    masks = np.stack([np.maximum(abs(dx), abs(dy)) <= 0.85 * r,
                      dx**2 + dy**2 <= r**2,
                      (abs(dy) <= r) & (abs(dx) <= 0.7 * (dy + r))])
    mask = masks[shape, np.arange(n)][..., None]
    palette = np.asarray(list(COLOURS.values()), np.float32)
    fg = palette[colour][:, None, None, :] + rng.normal(0, 12, (n, 1, 1, 3)).astype(np.float32)
    bg = rng.uniform(0, 60, (n, 1, 1, 1)).astype(np.float32)
    bg = bg + rng.normal(0, 8, (n, image_size, image_size, 3)).astype(np.float32)
    images = np.clip(np.where(mask, fg, bg), 0, 255).astype(np.uint8)
    colour_names = list(COLOURS)
    templates = rng.integers(0, len(CAPTION_TEMPLATES), n)
    captions = np.array([CAPTION_TEMPLATES[t].format(colour=colour_names[c], shape=SHAPES[s], size=SIZES[z])
                         for t, c, s, z in zip(templates, colour, shape, size, strict=True)])
    columns = {IMAGE_KEY: images, CAPTION_KEY: captions, "label": colour * len(SHAPES) + shape,
               "colour": colour, "shape": shape, "size": size}
    class_names = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
    return GeneratedDataset(columns, class_names=class_names)


def steps_per_epoch(num_examples: int, batch_size: int, shard_count: int = 1) -> int:
    """Full per-process batches in one epoch when each of `shard_count` processes gets an equal share."""
    return num_examples // shard_count // batch_size


def per_process_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
    """This process's share of the global batch, which must split evenly."""
    count = jax.process_count() if process_count is None else process_count
    if global_batch_size % count:
        raise ValueError(f"batch_size={global_batch_size} is invalid: "
                         f"must be divisible by the {count} processes")
    return global_batch_size // count


def prepare_batch(batch: Mapping[str, np.ndarray], tokenizer: Tokenizer | None = None,
                  max_len: int = 32) -> dict[str, np.ndarray]:
    """Model-ready batch: image float32 in [0, 1], caption -> int32 `tokens`, other string fields dropped."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if key == IMAGE_KEY:
            out[key] = value.astype(np.float32) / 255 if value.dtype == np.uint8 else value.astype(np.float32)
        elif key == CAPTION_KEY and value.dtype.kind in "SUO":
            if tokenizer is None:
                raise ValueError("captions are strings but no tokenizer was given to the pipeline")
            out[TOKENS_KEY] = tokenizer.encode(value, max_len)
        elif key == CAPTION_KEY:
            out[TOKENS_KEY] = value.astype(np.int32)  # already tokenized when the dataset was written
        elif value.dtype.kind not in "SUO":  # raw strings cannot go to a device
            out[key] = value
    return out


def make_dataset(source: Sequence, *, batch_size: int, seed: int, tokenizer: Tokenizer | None = None,
                 max_len: int = 32, num_epochs: int | None = None, shuffle: bool = True,
                 shard_index: int | None = None, shard_count: int | None = None) -> grain.MapDataset:
    """Batches of this process's shard of `source`, reshuffled every epoch; `num_epochs=None` repeats forever.

    `batch_size` is per process. Shards default to `jax.process_index()` of `jax.process_count()`.
    """
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} is invalid: must be in [0, {shard_count})")
    if steps_per_epoch(len(source), batch_size, shard_count) < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: each of {shard_count} shards holds only "
                         f"{len(source) // shard_count} of {len(source)} examples")
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    # Every process gets the same number of examples (the last len % shard_count are cut, a different
    # few each epoch as the cut follows the shuffle), so all processes run the same number of steps and a
    # multi-host run cannot hang on one process waiting for a batch another never makes.
    ds = ds[: len(source) // shard_count * shard_count][shard_index::shard_count]
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(partial(prepare_batch, tokenizer=tokenizer, max_len=max_len))
    # repeat() re-derives the shuffle seed per epoch, so each epoch has its own order on every process.
    return ds.repeat(num_epochs)


def make_iterator(dataset: grain.MapDataset, *, state: Mapping[str, Any] | None = None, num_threads: int = 2,
                  prefetch: int = 4) -> grain.DatasetIterator:
    """An iterator over `dataset` (at the position `state` saved by its `get_state()`, if given)."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    iterator = iter(dataset.to_iter_dataset(options))
    if state is not None:
        iterator.set_state(dict(state))
    return iterator
