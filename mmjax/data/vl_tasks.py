"""Three fine-tuning tasks with exact answers, generated from the procedural scenes (`mmjax.data.scenes`).

Jiang et al. (arXiv 2303.05952) evaluate their ALBEF fusion model (Li et al., "Align before Fuse",
arXiv 2107.07651) on VQA v2 (Goyal et al., "Making the V in VQA Matter", arXiv 1612.00837), NLVR²
(Suhr et al., "A Corpus for Reasoning about Natural Language Grounded in Photographs", arXiv 1811.00491)
and SNLI-VE (Xie et al., "Visual Entailment: A Novel Task for Fine-Grained Image Understanding", arXiv
1901.06706). This module generates a stand-in for each from the one-object scenes, with answers that
follow exactly from the scene factors:

- **qa** (VQA-style): a question about the object's attributes or position, answered from a closed
  vocabulary (`no`, `yes`, the value words of the asked attributes). "what" questions ask an attribute
  drawn uniformly; yes/no questions name a value that equals the true one (or, for `side`/`half`, a side
  that is the object's) exactly half of the time, so the question text carries no answer beyond its
  answer set (`question_types`, `QA_TEMPLATES`).
- **pairs** (NLVR²-style): two independent scenes (left, right) and one statement about both, true or
  false (`statement_types`, `PAIR_TEMPLATES`). For each statement type the label is drawn first and the
  pair and stated value are drawn conditioned on it so that, within the type, the distribution of the
  text *and* the distribution of the image pair are the same for true and false statements:
  `count` ("both objects are red" / "exactly one object is red"): both-true and one-false pairs share a
  value, one-true and both-false pairs differ; `same` ("have the same" / "differ in"): equal pairs for
  same-true and differ-false; `compare` ("larger" / "smaller"): a strictly ordered pair, shown in the
  order the label needs; `side` ("the left object is red"): one side's value drawn, then named or not.
- **entailment** (SNLI-VE-style): an image premise and a hypothesis; entailment when everything it
  states holds, contradiction when something it states is visibly false, neutral when it states an
  attribute the image hides and nothing it states is false. Every premise hides exactly one of
  `HIDEABLE` = colour, background: a hidden colour is drawn as a black-and-white checkerboard object,
  a hidden background as a checkerboard background. Every hypothesis names exactly one of the two
  (half the time each), plus, by type, a visible attribute (`HYPOTHESIS_TEMPLATES`). Within a type the
  label is uniform and drawn first; the hidden attribute is then the named one (neutral), the other
  one (entailment, and contradiction of a one-attribute hypothesis) or either (contradiction of a
  two-attribute one), so the same hypothesis text is entailed, neutral or contradicted, each a third of
  the time, and whether colour or background is hidden is independent of the label. (Premises with
  nothing hidden would never be neutral, which an image-only model would read off.)

Leak checks (`baselines`): with balanced labels and these constructions, a model of the text alone or
of the image alone cannot beat the label prior. `text_only_bayes` answers each text with its most frequent
train label; `image_only_bayes` answers each image (pair) with the most frequent train label of its
discrete image facts. In qa the question reveals its answer set (a "what colour" question is answered by
a colour word), so there the text-only model is held to `type_prior` (VQA's per-question-type prior),
not to the global majority; with yes/no questions only, the two coincide.

Determinism: example i of a split uses the key `fold_in(split_key(cfg, split), i)` alone (`split_key`
folds in the seed, the task and the split), so the data depend only on the config, never on the chunk
size, and the splits use disjoint keys. Images are rendered in jitted chunks by `scenes.render`.

Columns of every split (row-aligned numpy arrays):

- `image` uint8 (N, H, W, 3) (pairs: the left image), `text` str (lowercase words, single spaces),
  `label` int32 (index into `TaskData.labels`), `type` int32 (index into `TaskData.types`);
- the true scene factors: int32 `colour`, `shape`, `size`, `height`, `background`, float32 `pos_x`,
  `pos_y`, `rotation` (pairs: the left scene; the right scene's are `image2`, `colour2`, ...,
  `rotation2`);
- what the text states: qa `query` (the value index a yes/no question names; 0/1 for left/right or
  upper/lower; -1 for "what" questions); pairs `variant` (0/1: which phrasing of the type) and `value`
  (the value index named, -1 if none); entailment `hidden` (DISCRETE index of the hidden attribute)
  and `stated_<factor>` (the value index the hypothesis states, -1 where it does not mention it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.configs.common import ConfigError
from mmjax.data.scenes import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    CONTINUOUS,
    DISCRETE,
    SceneConfig,
    render,
    sample_factors,
)
from mmjax.data.tfds_io import DatasetMissingError, load_source, write_dataset

TASKS = ("qa", "pairs", "entailment")
SPLITS = ("train", "val", "test")
VERSION = "1.0.0"
CONFIG_FILE = "task_config.json"
HIDEABLE = ("colour", "background")  # entailment: every premise hides exactly one of these
SIDE_WORDS = ("left", "right")
HALF_WORDS = ("upper", "lower")
PAIR_LABELS = ("false", "true")
ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")
YES_NO = ("no", "yes")

# qa: type → (kind, attribute, template). "{}" is the queried value word (yes/no questions).
QA_TEMPLATES = {
    "what_colour": ("what", "colour", "what colour is the object"),
    "is_colour": ("is", "colour", "is the object {}"),
    "what_size": ("what", "size", "what size is the object"),
    "is_size": ("is", "size", "is the object {}"),
    "what_height": ("what", "height", "at what height is the object"),
    "is_height": ("is", "height", "is the object at {} height"),
    "what_background": ("what", "background", "what colour is the background"),
    "is_background": ("is", "background", "is the background {}"),
    "what_shape": ("what", "shape", "what shape is the object"),
    "is_shape": ("is", "shape", "is the object a {}"),
    "side": ("side", None, "is the object on the {}"),  # {} in SIDE_WORDS: centre left/right of the middle
    "half": ("half", None, "is the object in the {} half"),  # {} in HALF_WORDS: centre above/below the middle
}
# Shape is hard for a small ViT at 32 px with 8-px patches, and `half` turns on a pixel or two for objects
# in the middle band: both are available by config but not asked by default.
QA_DEFAULT = ("what_colour", "is_colour", "what_size", "is_size", "what_height", "is_height",
              "what_background", "is_background", "side")

# pairs: type → (kind, attribute, (phrasing 0, phrasing 1)); "{}" is the named value word.
PAIR_TEMPLATES = {
    "count_colour": ("count", "colour", ("both objects are {}", "exactly one object is {}")),
    "count_size": ("count", "size", ("both objects are {}", "exactly one object is {}")),
    "count_height": ("count", "height", ("both objects are at {} height",
                                         "exactly one object is at {} height")),
    "count_background": ("count", "background", ("both backgrounds are {}", "exactly one background is {}")),
    "count_shape": ("count", "shape", ("both objects are {}", "exactly one object is a {}")),  # PLURALS first
    "same_colour": ("same", "colour", ("the objects have the same colour", "the objects differ in colour")),
    "same_size": ("same", "size", ("the objects have the same size", "the objects differ in size")),
    "same_height": ("same", "height", ("the objects have the same height", "the objects differ in height")),
    "same_background": ("same", "background", ("the backgrounds have the same colour",
                                               "the backgrounds differ in colour")),
    "same_shape": ("same", "shape", ("the objects have the same shape", "the objects differ in shape")),
    "compare_size": ("compare", "size", ("the left object is larger than the right one",
                                         "the left object is smaller than the right one")),
    "compare_height": ("compare", "height", ("the left object is higher than the right one",
                                             "the left object is lower than the right one")),
    "side_colour": ("side", "colour", ("the left object is {}", "the right object is {}")),
    "side_size": ("side", "size", ("the left object is {}", "the right object is {}")),
    "side_height": ("side", "height", ("the left object is at {} height",
                                       "the right object is at {} height")),
    "side_background": ("side", "background", ("the left background is {}", "the right background is {}")),
    "side_shape": ("side", "shape", ("the left object is a {}", "the right object is a {}")),
}
# The default is the colour statements: fine-tuned from experiments/fusion_tiny.py, the cpu-scale model
# learns them in 400 steps (val accuracy 1.00), but learns one attribute at a time when statements about
# several are mixed (colour + background: background 1.00, colour 0.51 after 800 steps; all ten types
# below: 0.51 after 1200 steps). The other types stay available (ALL_PAIRS).
PAIRS_DEFAULT = ("count_colour", "same_colour")
ALL_PAIRS = ("count_colour", "count_size", "count_height", "count_background", "same_colour", "same_size",
             "same_height", "same_background", "compare_size", "compare_height")
PLURALS = {"square": "squares", "circle": "circles", "triangle": "triangles", "cross": "crosses",
           "star": "stars", "ring": "rings"}

# entailment: type → (visible attribute or None, (template naming colour, template naming background));
# "{n}" is the named hideable attribute's stated value, "{v}" the visible attribute's.
HYPOTHESIS_TEMPLATES = {
    "single": (None, ("the object is {n}", "the object is on a {n} background")),
    "with_size": ("size", ("the {v} object is {n}", "the {v} object is on a {n} background")),
    "with_height": ("height", ("the object at {v} height is {n}",
                               "the object at {v} height is on a {n} background")),
    "with_shape": ("shape", ("the {v} is {n}", "the {v} is on a {n} background")),
}
ENTAILMENT_DEFAULT = ("single", "with_size", "with_height")

_KINDS = {"what": 0, "is": 1, "side": 2, "half": 3, "count": 0, "same": 1, "compare": 2}
_PAIR_SIDE = 3


def _template_words() -> set[str]:
    words = set(YES_NO) | set(SIDE_WORDS) | set(HALF_WORDS) | set(PLURALS.values())
    texts = [t for _, _, t in QA_TEMPLATES.values()]
    texts += [t for _, _, pair in PAIR_TEMPLATES.values() for t in pair]
    texts += [t for _, pair in HYPOTHESIS_TEMPLATES.values() for t in pair]
    for text in texts:
        words |= {w for w in text.replace("{n}", " ").replace("{v}", " ").replace("{}", " ").split()}
    return words


@dataclass(frozen=True)
class TaskDataConfig:
    """A generated task: which one, its split sizes, seed, text types and the scenes' value words."""

    task: str = "qa"
    num_train: int = 8192
    num_val: int = 1024
    num_test: int = 1024
    image_size: int = 32
    seed: int = 0
    question_types: tuple[str, ...] = QA_DEFAULT  # qa only
    statement_types: tuple[str, ...] = PAIRS_DEFAULT  # pairs only
    hypothesis_types: tuple[str, ...] = ENTAILMENT_DEFAULT  # entailment only
    # The scenes (`SceneConfig` fields; its defaults).
    colours: tuple[str, ...] = SceneConfig.colours
    shapes: tuple[str, ...] = SceneConfig.shapes
    sizes: tuple[str, ...] = SceneConfig.sizes
    heights: tuple[str, ...] = SceneConfig.heights
    backgrounds: tuple[str, ...] = SceneConfig.backgrounds
    antialias: float = SceneConfig.antialias

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r} is invalid: must be one of {', '.join(TASKS)}")
        for name in ("num_train", "num_val", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} is invalid: must be an int >= 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} is invalid: must be an int >= 0")
        for name, known in (("question_types", QA_TEMPLATES), ("statement_types", PAIR_TEMPLATES),
                            ("hypothesis_types", HYPOTHESIS_TEMPLATES)):
            value = getattr(self, name)
            if (not isinstance(value, tuple) or not value or len(set(value)) != len(value)
                    or not set(value) <= set(known)):
                raise ConfigError(f"{name}={value!r} is invalid: need a non-empty tuple of distinct names "
                                  f"from {', '.join(known)}")
        try:
            scene = self.scene
        except ValueError as err:  # SceneConfig's message is already "field=value is invalid: ..."
            raise ConfigError(str(err).splitlines()[0]) from None
        taken = _template_words()
        for factor in DISCRETE:
            if clash := sorted(taken & set(scene.values(factor))):
                name = {"colour": "colours", "shape": "shapes", "size": "sizes", "height": "heights",
                        "background": "backgrounds"}[factor]
                raise ConfigError(f"{name}={scene.values(factor)!r} is invalid: {clash} used by the task "
                                  "templates")
        if self.task == "pairs" and "shape" in {PAIR_TEMPLATES[t][1] for t in self.statement_types}:
            if unknown := sorted(set(scene.shapes) - set(PLURALS)):
                raise ConfigError(f"shapes={scene.shapes!r} is invalid: no plural for {unknown}")

    @property
    def scene(self) -> SceneConfig:
        """The SceneConfig of the images."""
        return SceneConfig(image_size=self.image_size, colours=self.colours, shapes=self.shapes,
                           sizes=self.sizes, heights=self.heights, backgrounds=self.backgrounds,
                           antialias=self.antialias)

    @property
    def types(self) -> tuple[str, ...]:
        """The text types of the task (question, statement or hypothesis types), in label order."""
        return {"qa": self.question_types, "pairs": self.statement_types,
                "entailment": self.hypothesis_types}[self.task]

    def num(self, split: str) -> int:
        """Number of examples of `split` (train, val or test)."""
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the config (tuples as lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskDataConfig:
        """Inverse of `to_json` (lists back to tuples; unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ConfigError(f"task data config has unknown fields {unknown}; allowed: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class TaskData:
    """A generated task in memory: row-aligned columns per split, label/type names and the text words."""

    cfg: TaskDataConfig
    splits: dict[str, dict[str, np.ndarray]]
    labels: tuple[str, ...]
    types: tuple[str, ...]
    words: tuple[str, ...]


# ------------------------------------------------------------------------------------------------ vocab
def task_labels(cfg: TaskDataConfig) -> tuple[str, ...]:
    """The class names: qa's closed answer vocabulary (no, yes, then the asked attributes' value words in
    DISCRETE order), pairs' (false, true) or entailment's (entailment, neutral, contradiction)."""
    if cfg.task == "pairs":
        return PAIR_LABELS
    if cfg.task == "entailment":
        return ENTAILMENT_LABELS
    return _qa_labels(cfg.question_types, cfg.scene)


def _qa_labels(types: tuple[str, ...], scene: SceneConfig) -> tuple[str, ...]:
    kinds = [QA_TEMPLATES[t] for t in types]
    labels = YES_NO if any(kind != "what" for kind, _, _ in kinds) else ()
    asked = {attribute for kind, attribute, _ in kinds if kind == "what"}
    return labels + tuple(v for f in DISCRETE if f in asked for v in scene.values(f))


def _qa_query_words(kind: str, attribute: str | None, scene: SceneConfig) -> tuple[str, ...]:
    return {"side": SIDE_WORDS, "half": HALF_WORDS}.get(kind) or scene.values(attribute)


def _all_texts(cfg: TaskDataConfig) -> Iterator[str]:
    """Every text the task can produce, in a fixed order (types, phrasings, values)."""
    scene = cfg.scene
    for name in cfg.types:
        if cfg.task == "qa":
            kind, attribute, template = QA_TEMPLATES[name]
            if kind == "what":
                yield template
            else:
                yield from (template.format(w) for w in _qa_query_words(kind, attribute, scene))
        elif cfg.task == "pairs":
            kind, attribute, phrasings = PAIR_TEMPLATES[name]
            for variant, template in enumerate(phrasings):
                if "{}" not in template:
                    yield template
                    continue
                for value in scene.values(attribute):
                    word = PLURALS[value] if name == "count_shape" and variant == 0 else value
                    yield template.format(word)
        else:
            visible, phrasings = HYPOTHESIS_TEMPLATES[name]
            for named, template in zip(HIDEABLE, phrasings, strict=True):
                for n_word in scene.values(named):
                    for v_word in scene.values(visible) if visible else ("",):
                        yield template.format(n=n_word, v=v_word)


def task_words(cfg: TaskDataConfig) -> tuple[str, ...]:
    """Every word any text of the task uses, in order of first appearance in `_all_texts`."""
    words: dict[str, None] = {}
    for text in _all_texts(cfg):
        words.update((w, None) for w in text.split())
    return tuple(words)


# ------------------------------------------------------------------------------------------------ sampling
def _randint(key: jax.Array, n: jax.Array | int) -> jax.Array:
    return jax.random.randint(key, (), 0, n, dtype=jnp.int32)


def _other(key: jax.Array, value: jax.Array, n: jax.Array) -> jax.Array:
    """A value drawn uniformly among the n - 1 values other than `value`."""
    return (value + 1 + _randint(key, n - 1)) % n


def _one_scene(key: jax.Array, scene: SceneConfig) -> dict[str, jax.Array]:
    return {k: v[0] for k, v in sample_factors(key, 1, scene).items() if k != "template"}


def _stack(f: dict[str, jax.Array]) -> jax.Array:
    return jnp.stack([f[name] for name in DISCRETE])


def _set_discrete(f: dict[str, jax.Array], attribute: jax.Array, value: jax.Array,
                  where: jax.Array) -> dict[str, jax.Array]:
    out = dict(f)
    for i, name in enumerate(DISCRETE):
        out[name] = jnp.where(where & (attribute == i), value, f[name]).astype(jnp.int32)
    return out


def _is_left(pos_x: jax.Array) -> jax.Array:
    return pos_x < 0.5  # the object's centre is left of the image's vertical midline


def _is_upper(height: jax.Array, pos_y: jax.Array, n_heights: int) -> jax.Array:
    # The centre's offset from the middle is (height - (n-1)/2 + BAND_JITTER * pos_y) bands; a band index
    # other than the middle one outweighs the jitter (|BAND_JITTER * pos_y| <= 0.3 < 0.5), so this is exact.
    twice = 2 * height - (n_heights - 1)
    return (twice > 0) | ((twice == 0) & (pos_y > 0))


def _qa_one(key: jax.Array, types: tuple[str, ...], scene: SceneConfig) -> dict[str, jax.Array]:
    labels = _qa_labels(types, scene)
    kinds = np.asarray([_KINDS[QA_TEMPLATES[t][0]] for t in types], np.int32)
    attrs = np.asarray([DISCRETE.index(a) if (a := QA_TEMPLATES[t][1]) else 0 for t in types], np.int32)
    offsets = np.asarray([labels.index(scene.values(f)[0]) if scene.values(f)[0] in labels else 0
                          for f in DISCRETE], np.int32)
    k = jax.random.split(key, 6)
    f = _one_scene(k[0], scene)
    t = _randint(k[1], len(types))
    kind, attr = jnp.asarray(kinds)[t], jnp.asarray(attrs)[t]
    yes = jax.random.bernoulli(k[2])
    n_values = jnp.asarray(scene.n_values, jnp.int32)[attr]
    # Yes/no questions: the answer first, then the scene made to agree with it (the queried value or side
    # is uniform whatever the answer, and so is the true value).
    is_value = kind == _KINDS["is"]
    n_query = jnp.where(is_value, n_values, 2)
    query = _randint(k[3], n_query)
    f = _set_discrete(f, attr, jnp.where(yes, query, _other(k[4], query, n_query)), is_value)
    want = jnp.where(yes, query, 1 - query)  # side/half: 0 = left/upper, 1 = right/lower
    flip_x = (kind == _KINDS["side"]) & ((~_is_left(f["pos_x"])).astype(jnp.int32) != want)
    shifted = jnp.where(f["pos_x"] < 0.5, f["pos_x"] + 0.5, f["pos_x"] - 0.5)  # uniform on the other half
    f["pos_x"] = jnp.where(flip_x, shifted, f["pos_x"])
    n_heights = len(scene.heights)
    upper = _is_upper(f["height"], f["pos_y"], n_heights)
    flip_y = (kind == _KINDS["half"]) & ((~upper).astype(jnp.int32) != want)
    f["height"] = jnp.where(flip_y, n_heights - 1 - f["height"], f["height"])  # mirror about the middle
    f["pos_y"] = jnp.where(flip_y & (f["pos_y"] > -0.5), -f["pos_y"], f["pos_y"])
    # The label is computed from the final scene, never assumed from the construction.
    value = _stack(f)[attr]
    truth = jnp.select([is_value, kind == _KINDS["side"]],
                       [value == query, (~_is_left(f["pos_x"])).astype(jnp.int32) == query],
                       (~_is_upper(f["height"], f["pos_y"], n_heights)).astype(jnp.int32) == query)
    answer = jnp.where(kind == _KINDS["what"], jnp.asarray(offsets)[attr] + value,
                       jnp.where(truth, 1, 0))  # YES_NO = (no, yes) are labels 0 and 1 when present
    return {**f, "label": answer, "type": t, "query": jnp.where(kind == _KINDS["what"], -1, query)}


def _pairs_one(key: jax.Array, types: tuple[str, ...], scene: SceneConfig) -> dict[str, jax.Array]:
    kinds = np.asarray([_PAIR_SIDE if (kind := PAIR_TEMPLATES[t][0]) == "side" else _KINDS[kind]
                        for t in types], np.int32)
    attrs = np.asarray([DISCRETE.index(PAIR_TEMPLATES[t][1]) for t in types], np.int32)
    k = jax.random.split(key, 9)
    left, right = _one_scene(k[0], scene), _one_scene(k[1], scene)
    t = _randint(k[2], len(types))
    kind, attr = jnp.asarray(kinds)[t], jnp.asarray(attrs)[t]
    y = jax.random.bernoulli(k[3])
    variant = _randint(k[4], 2)
    n = jnp.asarray(scene.n_values, jnp.int32)[attr]
    u = _randint(k[5], n)
    w = _other(k[6], u, n)  # w != u
    coin = jax.random.bernoulli(k[7])
    count, same = kind == _KINDS["count"], kind == _KINDS["same"]
    compare, side = kind == _KINDS["compare"], kind == _PAIR_SIDE
    first = variant == 0
    # count and same: the two values are shared exactly when the phrasing and the label agree (both-true,
    # one-false; same-true, differ-false), else they differ; count's named value is uniform in all cases:
    # the shared value (true) or either value (false: both-false names one of two different values,
    # one-false names the shared value or another one).
    a, b = u, jnp.where(first == y, u, w)
    swap = count & ~first & y & coin  # one-true: the named value on either side
    a, b = jnp.where(swap, w, a), jnp.where(swap, u, b)
    value = jnp.where(y, u, jnp.where(coin, u, w))
    # compare: a strictly ordered pair, the greater value left when "larger" is true or "smaller" false.
    greater_left = first == y
    hi, lo = jnp.maximum(u, w), jnp.minimum(u, w)
    a = jnp.where(compare, jnp.where(greater_left, hi, lo), a)
    b = jnp.where(compare, jnp.where(greater_left, lo, hi), b)
    # side: the named side's value drawn, then named (true) or another value named (false).
    a = jnp.where(side & first, u, jnp.where(side, _stack(left)[attr], a))
    b = jnp.where(side & ~first, u, jnp.where(side, _stack(right)[attr], b))
    value = jnp.where(side, jnp.where(y, u, w), value)
    left = _set_discrete(left, attr, a, jnp.asarray(True))
    right = _set_discrete(right, attr, b, jnp.asarray(True))
    # The label is computed from the final pair.
    lv, rv = _stack(left)[attr], _stack(right)[attr]
    truth = jnp.select(
        [count & first, count, same & first, same, compare & first, compare, first],
        [(lv == value) & (rv == value), (lv == value) ^ (rv == value), lv == rv, lv != rv, lv > rv, lv < rv,
         lv == value],
        rv == value)
    out = {**left, **{f"{name}2": v for name, v in right.items()}}
    return {**out, "label": truth.astype(jnp.int32), "type": t, "variant": variant,
            "value": jnp.where(count | side, value, -1)}


def _entailment_one(key: jax.Array, types: tuple[str, ...], scene: SceneConfig) -> dict[str, jax.Array]:
    visible = np.asarray([DISCRETE.index(v) if (v := HYPOTHESIS_TEMPLATES[t][0]) else -1 for t in types],
                         np.int32)
    hideable = jnp.asarray([DISCRETE.index(h) for h in HIDEABLE], jnp.int32)
    k = jax.random.split(key, 9)
    f = _one_scene(k[0], scene)
    t = _randint(k[1], len(types))
    y = _randint(k[2], 3)  # ENTAILMENT_LABELS order: entailment, neutral, contradiction
    named_i = _randint(k[3], 2)
    named, other = hideable[named_i], hideable[1 - named_i]
    vis = jnp.asarray(visible)[t]
    has_vis = vis >= 0
    n_values = jnp.asarray(scene.n_values, jnp.int32)
    true = _stack(f)
    true_n, true_v = true[named], true[jnp.maximum(vis, 0)]
    false_n = _other(k[4], true_n, n_values[named])
    false_v = _other(k[5], true_v, n_values[jnp.maximum(vis, 0)])
    any_n = _randint(k[6], n_values[named])
    r = _randint(k[7], 6)  # contradiction of a two-attribute hypothesis: see below
    entail, neutral = y == 0, y == 1
    # entailment: the other attribute hidden, all stated true. neutral: the named attribute hidden (its
    # stated value independent of the truth), the visible one true. contradiction: one-attribute: the other
    # hidden, the named false; two-attribute: half the time the named hidden and the visible false, else
    # the other hidden and the named, the visible or both false.
    hide_named = neutral | (~entail & has_vis & (r < 3))
    hidden = jnp.where(hide_named, named, other)
    named_false = (y == 2) & ~hide_named & (~has_vis | (r == 3) | (r == 5))
    vis_false = (y == 2) & has_vis & ((r < 3) | (r == 4) | (r == 5))
    stated_n = jnp.where(hide_named, any_n, jnp.where(named_false, false_n, true_n))
    stated_v = jnp.where(vis_false, false_v, true_v)
    index = jnp.arange(len(DISCRETE))
    stated = jnp.where(index == named, stated_n, jnp.where(has_vis & (index == vis), stated_v, -1))
    # The label is computed from what is stated, hidden and true.
    said = stated >= 0
    contradiction = jnp.any(said & (index != hidden) & (stated != true))
    neutral_now = ~contradiction & jnp.any(said & (index == hidden))
    label = jnp.where(contradiction, 2, jnp.where(neutral_now, 1, 0))
    out = {**f, "label": label.astype(jnp.int32), "type": t, "hidden": hidden}
    out.update({f"stated_{name}": stated[i].astype(jnp.int32) for i, name in enumerate(DISCRETE)})
    return out


def _to_uint8(images: jax.Array) -> jax.Array:
    return jnp.round(images * 255).astype(jnp.uint8)


def _render_hidden(f: dict[str, jax.Array], scene: SceneConfig) -> jax.Array:
    """Images with the `hidden` attribute drawn as a black-and-white checkerboard (object or background)."""
    # The object's coverage alpha from two renders that differ only in the object's colour (render
    # composites bg + alpha * (fg - bg) and never clips a blend of two colours in [0, 1]).
    c0, c1 = (np.asarray(COLOUR_RGB[c], np.float32) for c in scene.colours[:2])
    channel = int(np.argmax(np.abs(c0 - c1)))
    zeros = jnp.zeros_like(f["colour"])
    first, second = render({**f, "colour": zeros}, scene), render({**f, "colour": zeros + 1}, scene)
    alpha = jnp.clip((first[..., channel] - second[..., channel]) / (c0[channel] - c1[channel]), 0, 1)
    s = scene.image_size
    cell = max(1, s // 16)
    grid = np.arange(s) // cell
    checker = jnp.asarray(((grid[:, None] + grid[None, :]) % 2).astype(np.float32))[None, :, :, None]
    colour_rgb = jnp.asarray([COLOUR_RGB[c] for c in scene.colours], jnp.float32)
    background_rgb = jnp.asarray([BACKGROUND_RGB[b] for b in scene.backgrounds], jnp.float32)
    fg = colour_rgb[f["colour"]][:, None, None, :]
    bg = background_rgb[f["background"]][:, None, None, :]
    hidden = f["hidden"][:, None, None, None]
    fg = jnp.where(hidden == DISCRETE.index("colour"), checker, fg)
    bg = jnp.where(hidden == DISCRETE.index("background"), checker, bg)
    return jnp.clip(bg + alpha[..., None] * (fg - bg), 0, 1)


_ONE = {"qa": _qa_one, "pairs": _pairs_one, "entailment": _entailment_one}


@functools.partial(jax.jit, static_argnames=("n", "task", "types", "scene"))
def task_examples(key: jax.Array, start: int | jax.Array, n: int, task: str, types: tuple[str, ...],
                  scene: SceneConfig) -> dict[str, jax.Array]:
    """Examples start..start+n-1 of the stream `key` (example i uses `fold_in(key, i)` alone): uint8
    images and the int/float columns of the module doc (texts are composed on the host, `_texts`)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(n))
    out = jax.vmap(lambda k: _ONE[task](k, types, scene))(keys)
    if task == "entailment":
        out["image"] = _to_uint8(_render_hidden(out, scene))
    else:
        out["image"] = _to_uint8(render(out, scene))
    if task == "pairs":
        right = {name: out[f"{name}2"] for name in (*DISCRETE, *CONTINUOUS)}
        out["image2"] = _to_uint8(render(right, scene))
    return out


def _texts(cfg: TaskDataConfig, columns: dict[str, np.ndarray]) -> np.ndarray:
    """The text of each row, composed from its type and the stated values."""
    scene = cfg.scene
    types = [cfg.types[t] for t in columns["type"]]
    texts = []
    if cfg.task == "qa":
        for name, query in zip(types, columns["query"], strict=True):
            kind, attribute, template = QA_TEMPLATES[name]
            texts.append(template if kind == "what" else
                         template.format(_qa_query_words(kind, attribute, scene)[query]))
    elif cfg.task == "pairs":
        for name, variant, value in zip(types, columns["variant"], columns["value"], strict=True):
            _, attribute, phrasings = PAIR_TEMPLATES[name]
            template = phrasings[variant]
            if "{}" in template:
                word = scene.values(attribute)[value]
                template = template.format(PLURALS[word] if name == "count_shape" and variant == 0 else word)
            texts.append(template)
    else:
        for i, name in enumerate(types):
            visible, phrasings = HYPOTHESIS_TEMPLATES[name]
            named = next(h for h in HIDEABLE if columns[f"stated_{h}"][i] >= 0)
            n_word = scene.values(named)[columns[f"stated_{named}"][i]]
            v_word = scene.values(visible)[columns[f"stated_{visible}"][i]] if visible else ""
            texts.append(phrasings[HIDEABLE.index(named)].format(n=n_word, v=v_word))
    return np.asarray(texts, dtype=str)


def split_key(cfg: TaskDataConfig, split: str) -> jax.Array:
    """The key of a split's example stream: seed, task and split folded in (the streams are disjoint)."""
    key = jax.random.fold_in(jax.random.key(cfg.seed), TASKS.index(cfg.task))
    return jax.random.fold_in(key, SPLITS.index(split))


def _column_order(task: str) -> list[str]:
    factors = [*DISCRETE, *CONTINUOUS]
    extra = {"qa": ["query"], "pairs": [f"{n}2" for n in factors] + ["variant", "value"],
             "entailment": ["hidden"] + [f"stated_{n}" for n in DISCRETE]}[task]
    images = ["image", "image2"] if task == "pairs" else ["image"]
    return [*images, "text", "label", "type", *factors, *extra]


def make_task_data(cfg: TaskDataConfig, progress: bool = False, *, chunk_size: int = 1024) -> TaskData:
    """Generate the train/val/test splits of `cfg` in memory (deterministic in the config).

    Every jitted chunk has `chunk_size` rows (the last one of a split is cut), so one compile serves
    every split and every split size of a task; the data do not depend on `chunk_size`.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} is invalid: must be an int >= 1")
    n = chunk_size
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(cfg.num(s) for s in SPLITS), desc=f"{cfg.task}", unit="ex")
    order = _column_order(cfg.task)
    splits = {}
    try:
        for split in SPLITS:
            key, total, chunks = split_key(cfg, split), cfg.num(split), []
            for start in range(0, total, n):
                chunk = task_examples(key, start, n, cfg.task, cfg.types, cfg.scene)
                count = min(n, total - start)
                columns = {k: np.asarray(v[:count]) for k, v in chunk.items()}
                for k, v in columns.items():
                    if v.dtype.kind in "iub" and k not in ("image", "image2"):
                        columns[k] = v.astype(np.int32)
                    elif v.dtype.kind == "f":
                        columns[k] = v.astype(np.float32)
                columns["text"] = _texts(cfg, columns)
                chunks.append(columns)
                if bar is not None:
                    bar.update(count)
            splits[split] = {k: np.concatenate([c[k] for c in chunks]) for k in order}
    finally:
        if bar is not None:
            bar.close()
    return TaskData(cfg=cfg, splits=splits, labels=task_labels(cfg), types=cfg.types, words=task_words(cfg))


# ------------------------------------------------------------------------------------------------ baselines
def image_facts(data: TaskData, split: str) -> np.ndarray:
    """int (N, m): everything discrete an image shows that a label can depend on, the image-only model's view.

    qa: the five discrete factors, plus left/right and upper/lower bits when `side`/`half` are asked;
    pairs: both scenes' discrete factors; entailment: the hidden attribute and the discrete factors with
    the hidden one's value masked (-1), since the image does not show it.
    """
    cols = data.splits[split]
    facts = [cols[name] for name in DISCRETE]
    if data.cfg.task == "qa":
        if "side" in data.types:
            facts.append(_is_left(cols["pos_x"]).astype(np.int32))
        if "half" in data.types:
            upper = _is_upper(cols["height"], cols["pos_y"], len(data.cfg.heights))
            facts.append(np.asarray(upper, np.int32))
    elif data.cfg.task == "pairs":
        facts += [cols[f"{name}2"] for name in DISCRETE]
    else:
        facts = [np.where(cols["hidden"] == i, -1, cols[name]) for i, name in enumerate(DISCRETE)]
        facts.append(cols["hidden"])
    return np.stack(facts, axis=1).astype(np.int64)


def _group_accuracy(train_keys: np.ndarray, train_labels: np.ndarray, test_keys: np.ndarray,
                    test_labels: np.ndarray, n_labels: int, fallback: int) -> float:
    """Accuracy on test of answering each key with its most frequent train label (unseen keys: fallback)."""
    keys = np.concatenate([train_keys, test_keys])
    _, inverse = np.unique(keys, axis=0 if keys.ndim > 1 else None, return_inverse=True)
    inverse = inverse.reshape(-1)
    train_group, test_group = inverse[: len(train_keys)], inverse[len(train_keys):]
    counts = np.zeros((inverse.max() + 1, n_labels), np.int64)
    np.add.at(counts, (train_group, train_labels), 1)
    guess = np.where(counts.sum(1) > 0, counts.argmax(1), fallback)  # ties: the lowest label index
    return float(np.mean(guess[test_group] == test_labels))


def baselines(data: TaskData, split: str = "test") -> dict[str, float]:
    """Accuracy on `split` of models that see one modality at most, fit on train (the leak checks).

    - `majority`: the most frequent train label;
    - `type_prior`: the most frequent train label of the row's type (VQA's per-question-type prior);
    - `text_only_bayes`: the most frequent train label of the exact text (fallback: majority), the best any
      text-only model can do since texts repeat;
    - `image_only_bayes`: the most frequent train label of the image's discrete facts (`image_facts`;
      pairs: both images'), the best an image-only model can do;
    - `image_factor_bayes`: the best of the image-only models that read a single fact (pairs: one factor
      of both images), a sharper check than `image_only_bayes` where its groups outnumber the train rows.
    """
    train, test = data.splits["train"], data.splits[split]
    n_labels = len(data.labels)
    majority = int(np.bincount(train["label"], minlength=n_labels).argmax())
    labels_tr, labels_te = train["label"], test["label"]

    def acc(keys_tr: np.ndarray, keys_te: np.ndarray) -> float:
        return _group_accuracy(keys_tr, labels_tr, keys_te, labels_te, n_labels, majority)

    facts_tr, facts_te = image_facts(data, "train"), image_facts(data, split)
    if data.cfg.task == "pairs":
        per_factor = [[i, i + len(DISCRETE)] for i in range(len(DISCRETE))]
    else:
        per_factor = [[i] for i in range(facts_tr.shape[1])]
    return {
        "majority": float(np.mean(labels_te == majority)),
        "type_prior": acc(train["type"], test["type"]),
        "text_only_bayes": acc(train["text"], test["text"]),
        "image_only_bayes": acc(facts_tr, facts_te),
        "image_factor_bayes": max(acc(facts_tr[:, c], facts_te[:, c]) for c in per_factor),
    }


# ------------------------------------------------------------------------------------------------ tfds
def task_features(cfg: TaskDataConfig):
    """The tfds FeaturesDict of a task's examples (the columns of the module doc)."""
    import tensorflow_datasets as tfds

    s = cfg.image_size
    features = {}
    for name in _column_order(cfg.task):
        if name in ("image", "image2"):
            features[name] = tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8)
        elif name == "text":
            features[name] = tfds.features.Text()
        elif name.rstrip("2") in CONTINUOUS:
            features[name] = tfds.features.Scalar(dtype=np.float32)
        else:
            features[name] = tfds.features.Scalar(dtype=np.int32)
    return tfds.features.FeaturesDict(features)


def _record(data: TaskData) -> dict[str, Any]:
    return {"config": data.cfg.to_json(), "labels": list(data.labels), "types": list(data.types),
            "words": list(data.words)}


def build_task(cfg: TaskDataConfig, out_dir: str | Path, name: str | None = None, progress: bool = False,
               overwrite: bool = False) -> Path:
    """Generate `cfg` and write train/val/test as a tfds dataset (array_record, `tfds_io.write_dataset`).

    The dataset is `<out_dir>/<name>/1.0.0` (name default `scene_<task>`); `task_config.json` next to the
    files (and the dataset description) hold the config, labels, types and words. Returns the path.
    """
    name = f"scene_{cfg.task}" if name is None else name
    data = make_task_data(cfg, progress=progress)
    text = json.dumps(_record(data), indent=1)

    def rows(split: str) -> Iterator[dict[str, Any]]:
        columns = data.splits[split]
        for i in range(cfg.num(split)):
            yield {k: str(v[i]) if k == "text" else v[i] for k, v in columns.items()}

    from tensorflow_datasets.core.utils import tqdm_utils

    tfds_bars = getattr(tqdm_utils, "_active", True)
    tqdm_utils.display_progress_bar(progress)
    try:
        path = write_dataset(name, {split: rows(split) for split in SPLITS}, out_dir, version=VERSION,
                             features=task_features(cfg), overwrite=overwrite,
                             description=f"mmjax generated task {cfg.task!r}; {CONFIG_FILE}: {text}")
    finally:
        tqdm_utils.display_progress_bar(tfds_bars)
    (path / CONFIG_FILE).write_text(text + "\n")
    return path


def load_task(name: str, data_dir: str | Path) -> TaskData:
    """A task written by `build_task`, read back as a `TaskData` (the same columns and dtypes)."""
    path = Path(data_dir) / name / VERSION / CONFIG_FILE
    if not path.is_file():
        raise DatasetMissingError(f"task config {path} not found: build the task with "
                                  f"build_task(cfg, {str(data_dir)!r}, name={name!r})")
    try:
        record = json.loads(path.read_text())
        cfg = TaskDataConfig.from_json(record["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"task config {path} is malformed: {err!r}") from None
    splits = {}
    for split in SPLITS:
        source = load_source(name, split, data_dir)
        getitems = getattr(source, "__getitems__", None)
        indices = list(range(len(source)))
        rows = getitems(indices) if getitems is not None else [source[i] for i in indices]
        columns = {}
        for key in _column_order(cfg.task):
            values = [row[key] for row in rows]
            if key == "text":
                columns[key] = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values],
                                          dtype=str)
            elif key in ("image", "image2"):
                columns[key] = np.stack(values).astype(np.uint8)
            else:
                columns[key] = np.asarray(values, np.float32 if key.rstrip("2") in CONTINUOUS else np.int32)
        splits[split] = columns
    return TaskData(cfg=cfg, splits=splits, labels=tuple(record["labels"]), types=tuple(record["types"]),
                    words=tuple(record["words"]))


# ------------------------------------------------------------------------------------------------ sheets
def task_contact_sheet(data: TaskData, path: str | Path, n: int = 12, split: str = "train",
                       columns: int | None = None) -> Path:
    """A PNG grid of the first n examples of `split`: the image (pairs: left | right, framed), the text
    and the true label (entailment: and which attribute the premise hides). Columns: 4 (pairs 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: must be an int >= 1")
    pairs = data.cfg.task == "pairs"
    columns = (3 if pairs else 4) if columns is None else columns
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns={columns!r} is invalid: must be an int >= 1")
    if split not in data.splits:
        raise ValueError(f"split={split!r} is invalid: must be one of {', '.join(data.splits)}")
    cols = data.splits[split]
    n = min(n, len(cols["label"]))
    rows = math.ceil(n / columns)
    width, height = (4.6, 3.0) if pairs else (3.0, 3.7)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = cols["image"][i]
        if pairs:  # one framed panel per pair: left image, a white gap, right image
            gap = np.full((image.shape[0], max(2, image.shape[1] // 8), 3), 255, np.uint8)
            image = np.concatenate([image, gap, cols["image2"][i]], axis=1)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.imshow(image, interpolation="nearest")
        lines = textwrap.wrap(str(cols["text"][i]), 34 if not pairs else 50)
        lines.append(f"→ {data.labels[cols['label'][i]]}   [{data.types[cols['type'][i]]}]")
        if data.cfg.task == "entailment":
            lines.append(f"(hidden: {DISCRETE[cols['hidden'][i]]})")
        ax.set_title("\n".join(lines), fontsize=9, loc="left")
    what = {"qa": "visual question answering (VQA v2-style)", "pairs": "statements about two images "
            "(NLVR²-style)", "entailment": "visual entailment (SNLI-VE-style)"}[data.cfg.task]
    s = data.cfg.image_size
    fig.suptitle(f"Generated task {data.cfg.task!r}: {what}, {s}x{s} scenes, {split} split", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
