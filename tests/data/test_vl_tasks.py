"""Generated fine-tuning tasks (qa, pairs, entailment): exact labels, balance, leak checks, tfds, sheets.

Balance tolerance: with n rows of a type and class probability p, each class count must lie within
4 binomial standard deviations, |count - n p| <= 4 sqrt(n p (1 - p)) (two-sided p ~ 6e-5 per check; the
data are seeded, so the test is deterministic anyway).
"""

import functools
import re

import numpy as np
import pytest

from mmjax.configs.common import ConfigError
from mmjax.data.scenes import BACKGROUND_RGB, BAND_JITTER, COLOUR_RGB, DISCRETE, MARGIN
from mmjax.data.vl_tasks import (
    HIDEABLE,
    SPLITS,
    TASKS,
    TaskDataConfig,
    baselines,
    build_task,
    load_task,
    make_task_data,
    split_key,
    task_contact_sheet,
)

LEAK = dict(num_train=4096, num_val=64, num_test=1024)
YES_NO_TYPES = ("is_colour", "is_size", "is_height", "is_background", "is_shape", "side", "half")


@pytest.fixture(scope="module")
def big():
    """Each task at its defaults (32 px), 4096 train / 1024 test rows."""
    return {task: make_task_data(TaskDataConfig(task=task, **LEAK)) for task in TASKS}


def small(task, **kw):
    return TaskDataConfig(task=task, **{"num_train": 40, "num_val": 12, "num_test": 16, **kw})


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kw, field", [
    (dict(task="vqa"), "task"), (dict(num_train=0), "num_train"), (dict(num_val=-1), "num_val"),
    (dict(num_test=2.5), "num_test"), (dict(seed=-1), "seed"), (dict(image_size=8), "image_size"),
    (dict(question_types=("what_colour", "what_colour")), "question_types"),
    (dict(question_types=("colour",)), "question_types"), (dict(statement_types=()), "statement_types"),
    (dict(hypothesis_types="single"), "hypothesis_types"), (dict(colours=("red", "red", "blue", "green")),
                                                            "colours"),
    (dict(sizes=("small", "left")), "sizes"), (dict(heights=("low", "middle", "yes")), "heights"),
])
def test_bad_config_is_a_one_line_error(kw, field):
    with pytest.raises(ConfigError) as err:
        TaskDataConfig(**kw)
    message = str(err.value)
    assert message.startswith(f"{field}=") and "is invalid" in message and "\n" not in message, message


def test_bad_chunk_size():
    with pytest.raises(ConfigError, match="chunk_size=0 is invalid"):
        make_task_data(small("qa"), chunk_size=0)


def test_config_json_round_trip():
    cfg = TaskDataConfig(task="pairs", statement_types=("count_shape", "side_colour"), sizes=("small", "big"))
    assert TaskDataConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown fields"):
        TaskDataConfig.from_json({**cfg.to_json(), "bogus": 1})


# ------------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("task", TASKS)
def test_deterministic_in_the_seed_and_disjoint_splits(task):
    import jax

    cfg = small(task)
    a, b = make_task_data(cfg), make_task_data(cfg)
    other = make_task_data(small(task, seed=1))
    for split in SPLITS:
        assert a.splits[split].keys() == b.splits[split].keys()
        for k, v in a.splits[split].items():
            np.testing.assert_array_equal(v, b.splits[split][k], err_msg=f"{split} {k}")
        assert not np.array_equal(a.splits[split]["image"], other.splits[split]["image"])
        assert not np.array_equal(a.splits[split]["text"], other.splits[split]["text"])
    # Per-example keys fold_in(split_key, i) never repeat within or across splits; nor do images.
    keys, images = set(), set()
    for split in SPLITS:
        base = split_key(cfg, split)
        data = jax.random.key_data(jax.vmap(lambda i, base=base: jax.random.fold_in(base, i))(
            np.arange(cfg.num(split))))
        keys |= {tuple(row) for row in np.asarray(data).tolist()}
        images |= {im.tobytes() for im in a.splits[split]["image"]}
    total = sum(cfg.num(s) for s in SPLITS)
    assert len(keys) == total and len(images) == total


def test_example_i_depends_on_i_alone():
    """Example i uses fold_in(split key, i) alone, so a chunk starting at 3 holds examples 3, 4, ...
    (and the data do not depend on the chunk size)."""
    import jax

    from mmjax.data.vl_tasks import task_examples

    cfg = small("entailment")
    key = split_key(cfg, "val")
    whole = jax.device_get(task_examples(key, 0, 1024, cfg.task, cfg.types, cfg.scene))
    shifted = jax.device_get(task_examples(key, 3, 1024, cfg.task, cfg.types, cfg.scene))
    for k, v in whole.items():
        np.testing.assert_array_equal(v[3:], shifted[k][:-3], err_msg=k)
    data = make_task_data(cfg)
    np.testing.assert_array_equal(data.splits["val"]["image"], whole["image"][:cfg.num_val])


# ------------------------------------------------------------------------------------------------ columns
@pytest.mark.parametrize("task", TASKS)
def test_columns_texts_and_words(big, task):
    data = big[task]
    cfg = data.cfg
    assert data.types == cfg.types
    assert data.labels == {"qa": data.labels, "pairs": ("false", "true"),
                           "entailment": ("entailment", "neutral", "contradiction")}[task]
    assert len(set(data.words)) == len(data.words)
    used = set()
    for split in SPLITS:
        cols = data.splits[split]
        n = cfg.num(split)
        images = ["image", "image2"] if task == "pairs" else ["image"]
        for name in images:
            assert cols[name].dtype == np.uint8 and cols[name].shape == (n, 32, 32, 3)
        assert cols["label"].dtype == np.int32 and cols["type"].dtype == np.int32
        assert cols["label"].min() >= 0 and cols["label"].max() < len(data.labels)
        assert cols["type"].min() >= 0 and cols["type"].max() < len(data.types)
        assert all(len(v) == n for v in cols.values())
        for i, factor in enumerate(DISCRETE):
            for suffix in ("", "2") if task == "pairs" else ("",):
                column = cols[factor + suffix]
                assert column.dtype == np.int32 and 0 <= column.min() and column.max() < cfg.scene.n_values[i]
        assert cols["pos_x"].dtype == np.float32
        for text in cols["text"]:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", str(text)), text
            used |= set(str(text).split())
    assert used <= set(data.words)
    assert len(used) >= 0.9 * len(data.words)  # the words are the ones the texts use


# ------------------------------------------------------------------------------------------------ labels
@functools.cache
def _value_words(cfg):
    return {v: (f, i) for f in DISCRETE for i, v in enumerate(cfg.scene.values(f))}


def _qa_answer(cfg, type_name, text, row):
    """The answer word of a question, recomputed from the text and the scene factors alone."""
    words = text.split()
    if type_name.startswith("what_"):
        factor = type_name[len("what_"):]
        return cfg.scene.values(factor)[row[factor]]
    if type_name == "side":
        side = "right" if float(row["pos_x"]) >= 0.5 else "left"  # the centre vs the image's midline
        return "yes" if words[-1] == side else "no"
    if type_name == "half":
        band = (1 - 2 * MARGIN) / len(cfg.heights)
        centre_y = MARGIN + band * (row["height"] + 0.5 + BAND_JITTER * float(row["pos_y"]))
        half = "upper" if centre_y > 0.5 else "lower"
        return "yes" if half in words else "no"
    named = [_value_words(cfg)[w] for w in words if w in _value_words(cfg)]
    assert len(named) == 1, text
    factor, value = named[0]
    assert factor == type_name[len("is_"):], (type_name, text)
    return "yes" if row[factor] == value else "no"


def _pairs_truth(cfg, type_name, text, row):
    """Whether a statement holds for the pair, recomputed from the text and both scenes' factors."""
    kind, factor = type_name.split("_", 1)
    left, right = row[factor], row[factor + "2"]
    plural = {"squares": "square", "circles": "circle", "triangles": "triangle", "crosses": "cross",
              "stars": "star", "rings": "ring"}
    named = [w for w in (plural.get(w, w) for w in text.split()) if w in cfg.scene.values(factor)]
    value = cfg.scene.values(factor).index(named[0]) if named else None
    if kind == "count":
        hits = int(left == value) + int(right == value)
        return hits == 2 if text.startswith("both") else hits == 1
    if kind == "same":
        return (left == right) if " same " in text else (left != right)
    if kind == "compare":
        return left > right if ("larger" in text or "higher" in text) else left < right
    assert kind == "side"
    return (left if text.startswith("the left") else right) == value


def _entailment_label(cfg, text, row):
    """The label recomputed from the hypothesis text, the hidden attribute and the factors."""
    hidden = DISCRETE[row["hidden"]]
    stated = [_value_words(cfg)[w] for w in text.split() if w in _value_words(cfg)]
    if any(factor != hidden and row[factor] != value for factor, value in stated):
        return "contradiction"
    if any(factor == hidden for factor, _ in stated):
        return "neutral"
    return "entailment"


@pytest.mark.parametrize("task", TASKS)
def test_every_label_is_right(big, task):
    data = big[task]
    cfg = data.cfg
    for split in ("train", "test"):
        cols = data.splits[split]
        for i in range(cfg.num(split)):
            row = {k: v[i] for k, v in cols.items() if k not in ("image", "image2")}
            text, type_name, label = str(row["text"]), data.types[row["type"]], data.labels[row["label"]]
            if task == "qa":
                expected = _qa_answer(cfg, type_name, text, row)
            elif task == "pairs":
                expected = "true" if _pairs_truth(cfg, type_name, text, row) else "false"
            else:
                expected = _entailment_label(cfg, text, row)
                stated = {f: int(row[f"stated_{f}"]) for f in DISCRETE if row[f"stated_{f}"] >= 0}
                words = _value_words(cfg)
                assert stated == dict(words[w] for w in text.split() if w in words), (text, stated)
            assert label == expected, (split, i, text, type_name, label, expected)


def test_shape_statements_are_right():
    types = ("count_shape", "same_shape", "side_shape", "side_background")
    data = make_task_data(TaskDataConfig(task="pairs", statement_types=types, num_train=600, num_val=8,
                                         num_test=8, image_size=16))
    cols = data.splits["train"]
    for i in range(600):
        row = {k: v[i] for k, v in cols.items() if k not in ("image", "image2")}
        truth = _pairs_truth(data.cfg, data.types[row["type"]], str(row["text"]), row)
        assert data.labels[row["label"]] == ("true" if truth else "false"), (i, row["text"])


# ------------------------------------------------------------------------------------------------ balance
def _assert_binomial(counts: np.ndarray, p: np.ndarray, what: str):
    n = counts.sum()
    tolerance = 4 * np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) <= tolerance), (what, counts.tolist(), (n * p).tolist())


@pytest.mark.parametrize("task", TASKS)
def test_labels_balanced_per_type(big, task):
    data = big[task]
    cols = data.splits["train"]
    type_counts = np.bincount(cols["type"], minlength=len(data.types))
    _assert_binomial(type_counts, np.full(len(data.types), 1 / len(data.types)), "types")
    for t, name in enumerate(data.types):
        labels = cols["label"][cols["type"] == t]
        if task == "qa" and name.startswith("what_"):
            values = data.cfg.scene.values(name[len("what_"):])
            index = [data.labels.index(v) for v in values]
            counts = np.bincount(labels, minlength=len(data.labels))
            assert counts.sum() == counts[index].sum(), name  # only this attribute's words
            _assert_binomial(counts[index], np.full(len(index), 1 / len(index)), name)
        else:
            k = {"qa": 2, "pairs": 2, "entailment": 3}[task]
            counts = np.bincount(labels, minlength=len(data.labels))
            if task == "qa":
                counts = counts[:2]  # no, yes
                assert counts.sum() == len(labels)
            _assert_binomial(counts, np.full(k, 1 / k), name)
    if task == "entailment":  # colour and background are hidden equally often, whatever the label
        for y in range(3):
            hidden = cols["hidden"][cols["label"] == y]
            _assert_binomial(np.asarray([(hidden == DISCRETE.index(h)).sum() for h in HIDEABLE]),
                             np.full(2, 0.5), f"hidden | {data.labels[y]}")


# ------------------------------------------------------------------------------------------------ hidden
def test_neutral_rows_have_the_attribute_hidden(big):
    data = big["entailment"]
    cfg = data.cfg
    colours = np.asarray([COLOUR_RGB[c] for c in cfg.colours])
    for split in ("train", "test"):
        cols = data.splits[split]
        neutral = cols["label"] == data.labels.index("neutral")
        for i in np.flatnonzero(neutral):
            hidden = DISCRETE[cols["hidden"][i]]
            assert cols[f"stated_{hidden}"][i] >= 0, i  # the hypothesis names the hidden attribute
        for i in range(cfg.num(split)):
            image = cols["image"][i].astype(np.float64) / 255
            hidden = DISCRETE[cols["hidden"][i]]
            assert hidden in HIDEABLE
            fg = np.asarray(COLOUR_RGB[cfg.colours[cols["colour"][i]]])
            bg = np.asarray(BACKGROUND_RGB[cfg.backgrounds[cols["background"][i]]])
            corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
            near_colour = np.abs(image[:, :, None, :] - colours).max(-1) < 0.2  # (H, W, n_colours)
            if hidden == "colour":  # no pixel shows any object colour; the background shows
                assert not near_colour.any(), i
                np.testing.assert_allclose(corners, np.broadcast_to(bg, (4, 3)), atol=1 / 255)
            else:  # the object's colour shows; the background is black and white only
                assert (np.abs(image - fg).max(-1) <= 2 / 255).any(), i
                assert np.all((corners == 0) | (corners == 1)), i
                assert not np.allclose(corners, bg, atol=0.05), i


# ------------------------------------------------------------------------------------------------ leaks
@pytest.mark.parametrize("task", TASKS)
def test_leak_checks(big, task):
    scores = baselines(big[task])
    assert set(scores) == {"majority", "type_prior", "text_only_bayes", "image_only_bayes",
                           "image_factor_bayes"}
    chance = {"qa": None, "pairs": 0.5, "entailment": 1 / 3}[task]
    if chance is not None:
        assert abs(scores["majority"] - chance) < 0.05, scores
        assert scores["text_only_bayes"] <= scores["majority"] + 0.05, scores
        assert scores["type_prior"] <= scores["majority"] + 0.05, scores
    else:
        # A question reveals its answer set, so text alone reaches the per-type prior, and no more.
        assert scores["text_only_bayes"] <= scores["type_prior"] + 0.05, scores
    assert scores["image_only_bayes"] <= scores["majority"] + 0.05, scores
    assert scores["image_factor_bayes"] <= scores["majority"] + 0.05, scores


def test_yes_no_questions_leak_nothing():
    """With yes/no questions only (shape and half included) the answers are right and the text-only model
    is held to the global majority."""
    data = make_task_data(TaskDataConfig(task="qa", question_types=YES_NO_TYPES, **LEAK))
    scores = baselines(data)
    assert data.labels == ("no", "yes")
    assert abs(scores["majority"] - 0.5) < 0.05, scores
    for name in ("type_prior", "text_only_bayes", "image_only_bayes", "image_factor_bayes"):
        assert scores[name] <= scores["majority"] + 0.05, (name, scores)
    cols = data.splits["train"]
    for i in range(1000):
        row = {k: v[i] for k, v in cols.items() if k != "image"}
        expected = _qa_answer(data.cfg, data.types[row["type"]], str(row["text"]), row)
        assert data.labels[row["label"]] == expected, (i, row["text"])


def test_baselines_detect_a_leak(big):
    """A text that gives the label away shows up: the checks are not vacuous."""
    data = big["pairs"]
    leaky = {s: dict(c) for s, c in data.splits.items()}
    for cols in leaky.values():
        cols["text"] = np.where(cols["label"] == 1, "yes", "no")
        cols["colour2"] = cols["label"].copy()
    scores = baselines(type(data)(data.cfg, leaky, data.labels, data.types, data.words))
    assert scores["text_only_bayes"] == 1.0 and scores["image_factor_bayes"] == 1.0


# ------------------------------------------------------------------------------------------------ tfds, sheet
@pytest.mark.parametrize("task", TASKS)
def test_tfds_round_trip(tmp_path, task):
    cfg = small(task, num_train=24, num_val=8, num_test=8)
    path = build_task(cfg, tmp_path)
    assert path == tmp_path / f"scene_{task}" / "1.0.0"
    loaded, expected = load_task(f"scene_{task}", tmp_path), make_task_data(cfg)
    assert loaded.cfg == cfg
    assert (loaded.labels, loaded.types, loaded.words) == (expected.labels, expected.types, expected.words)
    for split in SPLITS:
        assert loaded.splits[split].keys() == expected.splits[split].keys()
        for k, v in expected.splits[split].items():
            got = loaded.splits[split][k]
            assert got.dtype.kind == v.dtype.kind and (got.dtype == v.dtype or v.dtype.kind == "U"), k
            np.testing.assert_array_equal(got, v, err_msg=f"{split} {k}")


def test_load_task_missing(tmp_path):
    from mmjax.data.tfds_io import DatasetMissingError

    with pytest.raises(DatasetMissingError, match="build_task"):
        load_task("scene_qa", tmp_path)


@pytest.mark.parametrize("task", ["pairs", "entailment"])
def test_contact_sheet_writes_a_png(tmp_path, task):
    data = make_task_data(small(task))
    path = task_contact_sheet(data, tmp_path / "sheet.png", n=5, columns=3)
    content = path.read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) > 5_000
    with pytest.raises(ValueError, match="n=0 is invalid"):
        task_contact_sheet(data, tmp_path / "x.png", n=0)
