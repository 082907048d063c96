"""Loaders for the annotation files of three vision–language fine-tuning benchmarks: VQA v2, NLVR², SNLI-VE.

They are the real counterparts of the library's fusion tasks: question answering (image + question →
one answer of a fixed vocabulary, trained on soft scores), reasoning over an image pair (two images + a
sentence → true/false) and visual entailment (image as the premise + a hypothesis sentence → entailment,
neutral or contradiction). Nothing is downloaded. Every loader checks, at load time and with one listing
of the image directory, that each referenced image exists, so a missing file fails here and not hours
into training; images are then read lazily (`PngImages`: `[i]` gives uint8 (H, W, 3), a slice or index
array a stacked batch; PIL reads the file, so JPEG works as well as PNG). A missing file gives a one-line
`DatasetMissingError` naming it; malformed JSON, a row without a field or a bad value gives a one-line
`DatasetError` naming the file, the line (jsonl) or entry index (JSON), the field and what is expected.

**VQA v2** (Goyal et al., "Making the V in VQA Matter", CVPR 2017), one pair of files per split::

    v2_OpenEnded_mscoco_<split>2014_questions.json
        {"data_subtype": "train2014", "questions": [{"image_id", "question", "question_id"}, ...]}
    v2_mscoco_<split>2014_annotations.json
        {"annotations": [{"question_id", "image_id", "question_type", "answer_type",
                          "multiple_choice_answer", "answers": [{"answer", "answer_confidence",
                                                                 "answer_id"}, ... 10 of them]}, ...]}
    <image_dir>/COCO_<split>2014_<image_id as 12 digits>.jpg

`load_vqa` joins the two files by question id (the test splits have no annotations file: pass None).
Answers are normalised (`normalize_answer`), the answer vocabulary is the `top_k` most frequent
`multiple_choice_answer`s (`answer_vocabulary`), and each question's soft target gives every vocabulary
answer its official VQA accuracy (`vqa_scores`): min(#humans who gave it / 3, 1) averaged over the ten
leave-one-out subsets of the ten human answers, i.e. 0, 0.3, 0.6, 0.9, 1 for 0, 1, 2, 3, ≥ 4 humans.

**NLVR²** (Suhr et al., "A Corpus for Reasoning About Natural Language Grounded in Photographs", ACL
2019), one jsonl file per split (`train.json`, `dev.json`, `test1.json`), one row per sentence::

    {"identifier": "dev-850-0-0", "sentence": "...", "label": "True", "left_url": ..., "right_url": ...}
    <image_dir>/dev-850-0-img0.png, dev-850-0-img1.png   (identifier minus its last "-N", then -img0/-img1)

The train images are spread over numbered sub-folders (`0/` ... `99/`): the image directory is searched
recursively once and indexed by file name. Some files named .png are JPEG or GIF data; PIL reads them.

**SNLI-VE** (Xie et al., "Visual Entailment: A Novel Task for Fine-Grained Image Understanding", arXiv
1901.06706), one jsonl file per split (`snli_ve_train.jsonl`, `_dev`, `_test`)::

    {"Flickr30K_ID": "3416050480", "sentence1": "<the original caption>", "sentence2": "<the hypothesis>",
     "gold_label": "entailment", "pairID": "3416050480.jpg#4r1n", ...}
    <image_dir>/3416050480.jpg   (the Flickr30k images folder)

Labels are indices into `SNLI_VE_LABELS`. A row whose gold label is SNLI's "-" (no annotator consensus)
is an error by default, naming the file and line; `skip_unlabelled=True` drops such rows and counts them
in `skipped`. Any other label outside the three is always an error.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmjax.data.real import PngImages, read_png
from mmjax.data.tfds_io import DatasetError, DatasetMissingError

VQA_IMAGE_PATTERN = "COCO_{split}_{image_id:012d}.jpg"
VQA_TOP_K = 3129
SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")
ANNOTATIONS = "VQA annotations file"
NLVR2_LABELS = {"True": 1, "False": 0, "true": 1, "false": 0, True: 1, False: 0}

# ------------------------------------------------------------------------------------------------ answers
# The official evaluation's tables (github.com/GT-Vision-Lab/VQA, vqaEval.py): its punctuation list (the
# period and the apostrophe are not in it), its number words (with its "none" → "0") and its articles.
_PUNCTUATION = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!]")
_COMMA_IN_NUMBER = re.compile(r"(?<=\d),(?=\d)")
_PERIOD = re.compile(r"\.(?!\d)")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})


def normalize_answer(answer: str) -> str:
    """An answer normalised as the official VQA evaluation does, in simplified form.

    Steps: lowercase, newlines and tabs to spaces, strip; drop a comma between digits ("1,000" → "1000")
    and a period not followed by a digit ("yes." → "yes", "1.5" kept); every other punctuation mark of
    the official list becomes a space, so one inside a word splits it ("t-shirt" → "t shirt") and one at
    a word's edge disappears ("(red)" → "red"); then, word by word, number words become digits ("two" →
    "2", also the official "none" → "0") and the articles a, an, the are removed; words are joined by
    single spaces. Differences from the official code: it decides "remove or space" once per answer (a
    mark next to a space anywhere makes it delete all marks), and it maps contractions without the
    apostrophe ("dont" → "don't"); neither is done here, apostrophes are kept as written.
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _PERIOD.sub("", _COMMA_IN_NUMBER.sub("", text))
    text = _PUNCTUATION.sub(" ", text)
    return " ".join(NUMBER_WORDS.get(word, word) for word in text.split() if word not in ARTICLES)


def _soft_score(count: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """Mean over the n leave-one-out subsets of min(matches / 3, 1): `count` of them lose one match."""
    count = np.asarray(count, np.float64)
    n = np.asarray(n, np.float64)
    total = count * np.clip((count - 1) / 3, 0, 1) + (n - count) * np.clip(count / 3, 0, 1)
    return np.where(n > 0, total / np.maximum(n, 1), 0.0)


def vqa_accuracy(predicted: str, answers: Sequence[str], *, normalize: bool = True) -> float:
    """The official VQA accuracy of one predicted answer against the human answers (normally ten).

    For each subset leaving one human answer out, min(#humans in the subset who gave `predicted` / 3, 1),
    averaged over the subsets: 0, 0.3, 0.6, 0.9, 1.0 when 0, 1, 2, 3, ≥ 4 of ten humans gave it. With
    `normalize`, the prediction and the answers go through `normalize_answer` first.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    if normalize:
        predicted, answers = normalize_answer(predicted), [normalize_answer(a) for a in answers]
    count = sum(answer == predicted for answer in answers)
    return float(_soft_score(count, len(answers)))


def _vocab_index(vocab: Sequence[str]) -> dict[str, int]:
    index = {}
    for i, answer in enumerate(vocab):
        if not isinstance(answer, str):
            raise ValueError(f"answer vocabulary entry {i} is {answer!r}: expected a string")
        if index.setdefault(answer, i) != i:
            raise ValueError(f"answer vocabulary has {answer!r} twice (entries {index[answer]} and {i})")
    return index


def vqa_scores(answers: Sequence[Sequence[str]] | np.ndarray, vocab: Sequence[str]) -> np.ndarray:
    """Soft targets float32 (N, len(vocab)): each vocabulary answer's `vqa_accuracy` for each question.

    `answers[i]` are question i's human answers, compared exactly (pass normalised answers, as `load_vqa`
    stores them); answers outside the vocabulary get no column but still count as humans in the average.
    """
    index = _vocab_index(vocab)
    rows = [list(row) for row in answers]
    lengths = np.asarray([len(row) for row in rows], np.int64)
    ids = np.asarray([index.get(answer, -1) for row in rows for answer in row], np.int64)
    row_of = np.repeat(np.arange(len(rows)), lengths)
    counts = np.zeros((len(rows), len(index)), np.float64)
    np.add.at(counts, (row_of[ids >= 0], ids[ids >= 0]), 1)
    return _soft_score(counts, lengths[:, None]).astype(np.float32)


def vqa_accuracy_batch(pred_ids: np.ndarray | Sequence[int], scores: np.ndarray) -> np.ndarray:
    """Per-question VQA accuracy float32 (N,) of predicted vocabulary ids against soft targets (N, V).

    It is `scores[i, pred_ids[i]]`, and 0 for an id outside [0, V) (e.g. -1); the mean is the benchmark
    number. `scores` comes from `vqa_scores` or `VQAData.soft_targets`.
    """
    pred, scores = np.asarray(pred_ids), np.asarray(scores)
    if scores.ndim < 1 or scores.shape[:-1] != pred.shape:
        raise ValueError(f"pred_ids has shape {pred.shape} and scores {scores.shape}: "
                         "expected (N,) and (N, V)")
    valid = (pred >= 0) & (pred < scores.shape[-1])
    taken = np.zeros(pred.shape, np.float32)
    rows = np.nonzero(valid)
    taken[rows] = scores[(*rows, pred[valid].astype(np.int64))]
    return taken


# ------------------------------------------------------------------------------------------------ reading
def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetMissingError(f"{what} {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{what} {path} is not valid JSON: {err}") from None


def _read_jsonl(path: Path, what: str) -> Iterator[tuple[str, dict]]:
    """(`"<what> <path> line <n>"`, row) per non-blank line; a line that is not a JSON object is an error."""
    if not path.is_file():
        raise DatasetMissingError(f"{what} {path} not found")
    found = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{what} {path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{where} is not valid JSON: {err}") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where} is a {type(row).__name__}: expected a JSON object per line")
            found = True
            yield where, row
    if not found:
        raise DatasetError(f"{what} {path} has no rows: expected one JSON object per line")


def _field(row: Mapping, name: str, kinds: type | tuple[type, ...], where: str, expected: str) -> Any:
    if name not in row:
        raise DatasetError(f"{where} has no field {name!r}: expected {expected}")
    value = row[name]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):  # True is an int
        raise DatasetError(f"{where} field {name!r} is {value!r}: expected {expected}")
    return value


def _entries(document: Any, key: str, what: str, path: Path) -> list:
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        is_dict = isinstance(document, dict)
        found = f"keys {', '.join(map(repr, document))}" if is_dict else type(document).__name__
        raise DatasetError(f"{what} {path} has no {key!r} list (found {found}): expected "
                           f'{{"{key}": [...]}} as released')
    return document[key]


def _list_images(directory: Path, what: str, recursive: bool) -> dict[str, Path]:
    """File name → path for the files in `directory` (one listing; or one walk of its tree)."""
    if not directory.is_dir():
        raise DatasetMissingError(f"{what} image directory {directory} not found")
    if not recursive:
        with os.scandir(directory) as entries:
            return {entry.name: Path(entry.path) for entry in entries if entry.is_file()}
    index: dict[str, Path] = {}
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs.sort()
        for name in files:
            path = Path(root) / name
            if name in index:
                raise DatasetError(f"{what} image directory {directory} holds {name} twice "
                                   f"({index[name]} and {path}): keep one")
            index[name] = path
    return index


def _image_paths(names: Sequence[str], directory: Path, what: str, source: Path,
                 recursive: bool = False) -> PngImages:
    """The images named `names`, each checked to exist, the first one decoded (so a bad folder fails now)."""
    index = _list_images(directory, what, recursive)
    missing = [name for name in dict.fromkeys(names) if name not in index]
    if missing:
        searched = " (searched recursively)" if recursive else ""
        raise DatasetMissingError(f"{what}: {len(missing)} of {len(set(names))} images referenced by "
                                  f"{source} are missing{searched}, e.g. {directory / missing[0]} not found")
    images = PngImages([index[name] for name in names])
    if len(images):
        read_png(images.paths[0])
    return images


# ------------------------------------------------------------------------------------------------ VQA v2
@dataclass(frozen=True)
class VQAData:
    """VQA v2 questions (row i = question i) with their image, answers and soft targets.

    Without an annotations file (test splits), `question_types`, `answer_types` and `answers` are None,
    `labels` are -1 and the targets are empty. `answers` is str (N, 10) (normalised human answers);
    `labels` int32 (N,) is the vocabulary index of the normalised `multiple_choice_answer` (VQA's most
    frequent of the ten answers; -1 if outside the vocabulary). The soft targets are stored sparsely,
    because (N, V) float32 is about 5.5 GB for the train split: `target_ids` int32 (N, 10) are the
    vocabulary ids of the distinct in-vocabulary answers (-1 padding) and `target_scores` float32 (N, 10)
    their scores; `soft_targets(index)` gives the dense rows.
    """

    images: PngImages
    questions: list[str]
    question_ids: np.ndarray
    image_ids: np.ndarray
    question_types: list[str] | None
    answer_types: list[str] | None
    answers: np.ndarray | None
    answer_vocab: tuple[str, ...]
    labels: np.ndarray
    target_ids: np.ndarray
    target_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.questions)

    def soft_targets(self, index=None) -> np.ndarray:
        """Dense soft targets float32 (..., V) for `index` (an int, slice or index array; None: all rows)."""
        ids = self.target_ids if index is None else self.target_ids[index]
        scores = self.target_scores if index is None else self.target_scores[index]
        dense = np.zeros((*ids.shape[:-1], len(self.answer_vocab)), np.float32)
        keep = ids >= 0
        dense[(*np.nonzero(keep)[:-1], ids[keep])] = scores[keep]
        return dense


def _sparse_targets(answer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) (N, A): each row's distinct in-vocabulary answers (first occurrence) and soft scores."""
    same = answer_ids[:, :, None] == answer_ids[:, None, :]
    counts = same.sum(-1)
    first = ~np.tril(same, k=-1).any(-1)
    keep = first & (answer_ids >= 0)
    scores = _soft_score(counts, answer_ids.shape[1])
    return np.where(keep, answer_ids, -1).astype(np.int32), np.where(keep, scores, 0.0).astype(np.float32)


_ANNOTATION_TYPES = (("question_id", int), ("image_id", int), ("question_type", str), ("answer_type", str),
                     ("multiple_choice_answer", str))


def _well_formed(entry: Any) -> dict | None:
    """The parsed entry if it has every field with its type (the fast path over ~440k entries), else None."""
    if type(entry) is not dict or type(entry.get("answers")) is not list:
        return None
    try:
        item = {name: entry[name] for name, _ in _ANNOTATION_TYPES}
        item["answers"] = [answer["answer"] for answer in entry["answers"]]
    except (KeyError, TypeError, IndexError):
        return None
    if all(type(item[name]) is kind for name, kind in _ANNOTATION_TYPES) and item["answers"] and all(
            type(answer) is str for answer in item["answers"]):
        return item
    return None


def _vqa_annotations(entries: list, where: str) -> list[dict]:
    """Checked annotation entries: ints question_id/image_id, strings, `answers` a list of {"answer"}."""
    parsed = []
    for i, entry in enumerate(entries):
        item = _well_formed(entry)
        if item is not None:
            parsed.append(item)
            continue
        at = f"{where} annotations[{i}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{at} is a {type(entry).__name__}: expected an object")
        item = {name: _field(entry, name, int, at, "an int") for name in ("question_id", "image_id")}
        for name in ("question_type", "answer_type", "multiple_choice_answer"):
            item[name] = _field(entry, name, str, at, "a string")
        answers = _field(entry, "answers", list, at, 'a list of {"answer": ...} objects')
        if not answers:
            raise DatasetError(f"{at} field 'answers' is empty: expected the human answers (10 in VQA v2)")
        item["answers"] = []
        for j, answer in enumerate(answers):
            if not isinstance(answer, dict):
                raise DatasetError(f"{at} answers[{j}] is {answer!r}: expected an object with 'answer'")
            item["answers"].append(_field(answer, "answer", str, f"{at} answers[{j}]", "a string"))
        parsed.append(item)
    return parsed


def answer_vocabulary(annotations: str | Path | Sequence[Mapping], top_k: int | None = VQA_TOP_K, *,
                      min_count: int = 1) -> tuple[str, ...]:
    """The `top_k` most frequent normalised `multiple_choice_answer`s, by count, then alphabetically.

    `annotations` is an annotations file or its list of entries. Each question counts once, with its
    consensus answer, as in the ViLT and bottom-up-attention pipelines (whose classic 3129-answer list is
    `answer_vocabulary(train + val entries, top_k=None, min_count=9)`): counting all ten human answers
    would weight questions by their answer spread and bring in answers that a single annotator gave.
    Answers seen fewer than `min_count` times are left out; `top_k=None` keeps all the others.
    """
    if isinstance(annotations, str | Path):
        path = Path(annotations)
        where = f"VQA annotations file {path}"
        entries = _entries(_read_json(path, ANNOTATIONS), "annotations", ANNOTATIONS, path)
    else:
        where, entries = "VQA annotations", list(annotations)
    counts: Counter[str] = Counter()
    for i, entry in enumerate(entries):
        at = f"{where} annotations[{i}]"
        if not isinstance(entry, Mapping):
            raise DatasetError(f"{at} is a {type(entry).__name__}: expected an object")
        counts[normalize_answer(_field(entry, "multiple_choice_answer", str, at, "a string"))] += 1
    return _top_answers(counts, top_k, min_count)


def _top_answers(counts: Counter, top_k: int | None, min_count: int) -> tuple[str, ...]:
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k!r} is invalid: must be a positive int or None")
    ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
    return tuple(answer for answer, _ in ranked[:top_k])


def _vqa_split(questions: dict, path: Path) -> str | None:
    """The COCO image folder name ("train2014", "val2014", "test2015"), from data_subtype or the file name."""
    subtype = questions.get("data_subtype")
    for text in (subtype if isinstance(subtype, str) else "", path.name):
        match = re.search(r"(train|val|test-dev|test)(\d{4})", text)
        if match is not None:
            return ("test" if match.group(1) == "test-dev" else match.group(1)) + match.group(2)
    return None


def load_vqa(questions_path: str | Path, annotations_path: str | Path | None, image_dir: str | Path, *,
             answer_vocab: Sequence[str] | None = None, top_k: int = VQA_TOP_K,
             image_pattern: str = VQA_IMAGE_PATTERN, split: str | None = None) -> VQAData:
    """VQA v2 questions joined with their annotations (layout in the module doc); images are read lazily.

    `answer_vocab` defaults to `answer_vocabulary` of these annotations with `top_k` (pass the train
    vocabulary when loading val). `image_pattern` is formatted with `image_id` (int) and `split`, the
    COCO folder name ("train2014"), taken from `split`, else the questions' `data_subtype`, else the
    questions file name (test-dev reads the test2015 images).
    """
    questions_path, image_dir = Path(questions_path), Path(image_dir)
    what = "VQA questions file"
    document = _read_json(questions_path, what)
    entries = _entries(document, "questions", what, questions_path)
    if not entries:
        raise DatasetError(f"{what} {questions_path} has an empty 'questions' list")
    questions, question_ids, image_ids = [], [], []
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        at = f"{what} {questions_path} questions[{i}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{at} is a {type(entry).__name__}: expected an object")
        question_id = _field(entry, "question_id", int, at, "an int")
        if seen.setdefault(question_id, i) != i:
            raise DatasetError(f"{at} repeats question_id {question_id} of questions[{seen[question_id]}]: "
                               "expected unique ids")
        image_ids.append(_field(entry, "image_id", int, at, "an int"))
        questions.append(_field(entry, "question", str, at, "a string"))
        question_ids.append(question_id)

    split = split if split is not None else _vqa_split(document, questions_path)
    if split is None and "{split" in image_pattern:
        raise DatasetError(f"{what} {questions_path}: no split in its data_subtype or name: pass split= "
                           "(e.g. 'val2014') or an image_pattern without {split}")
    try:
        names = [image_pattern.format(image_id=image_id, split=split) for image_id in image_ids]
    except (KeyError, IndexError, ValueError) as err:
        raise DatasetError(f"image_pattern={image_pattern!r} is invalid ({err!r}): its fields are "
                           "{image_id} (int) and {split}") from None

    n = len(questions)
    question_types = answer_types = answers = None
    mc_answers: list[str] | None = None
    if annotations_path is not None:
        annotations_path = Path(annotations_path)
        where = f"VQA annotations file {annotations_path}"
        entries = _entries(_read_json(annotations_path, ANNOTATIONS), "annotations", ANNOTATIONS,
                           annotations_path)
        annotations = _vqa_annotations(entries, where)
        by_id = {}
        for i, item in enumerate(annotations):
            if item["question_id"] not in seen:
                raise DatasetError(f"{where} annotations[{i}] has question_id {item['question_id']}, which "
                                   f"is not in {questions_path}: pass the questions file of the same split")
            if by_id.setdefault(item["question_id"], item) is not item:
                raise DatasetError(f"{where} annotations[{i}] repeats question_id {item['question_id']}: "
                                   "expected one annotation per question")
            q = seen[item["question_id"]]
            if item["image_id"] != image_ids[q]:
                raise DatasetError(f"{where} annotations[{i}] has image_id {item['image_id']}, but question "
                                   f"{item['question_id']} in {questions_path} has image_id {image_ids[q]}")
        missing = [qid for qid in question_ids if qid not in by_id]
        if missing:
            raise DatasetError(f"{where} has no annotation for {len(missing)} of {n} questions of "
                               f"{questions_path}, e.g. question_id {missing[0]}: pass the matching files")
        ordered = [by_id[qid] for qid in question_ids]
        n_answers = len(ordered[0]["answers"])
        for qid, item in zip(question_ids, ordered, strict=True):
            if len(item["answers"]) != n_answers:
                raise DatasetError(f"{where} annotations[{annotations.index(item)}] (question_id {qid}) has "
                                   f"{len(item['answers'])} answers: expected {n_answers} like the others")
        memo: dict[str, str] = {}

        def norm(answer: str) -> str:
            if answer not in memo:
                memo[answer] = normalize_answer(answer)
            return memo[answer]

        question_types = [item["question_type"] for item in ordered]
        answer_types = [item["answer_type"] for item in ordered]
        answers = np.asarray([[norm(a) for a in item["answers"]] for item in ordered], dtype=str)
        answers = answers.reshape(n, n_answers)
        mc_answers = [norm(item["multiple_choice_answer"]) for item in ordered]

    if answer_vocab is None:
        if mc_answers is None:
            raise DatasetError(f"{what} {questions_path}: without an annotations file, pass answer_vocab "
                               "(e.g. the train split's)")
        answer_vocab = _top_answers(Counter(mc_answers), top_k, 1)
    vocab = tuple(answer_vocab)
    index = _vocab_index(vocab)

    if answers is not None:
        distinct, inverse = np.unique(answers, return_inverse=True)
        distinct_ids = np.asarray([index.get(str(a), -1) for a in distinct], np.int64)
        answer_ids = distinct_ids[inverse.reshape(answers.shape)]
        target_ids, target_scores = _sparse_targets(answer_ids)
        labels = np.asarray([index.get(a, -1) for a in mc_answers], np.int32)
    else:
        target_ids, target_scores = np.full((n, 0), -1, np.int32), np.zeros((n, 0), np.float32)
        labels = np.full(n, -1, np.int32)

    images = _image_paths(names, image_dir, "VQA", questions_path)
    return VQAData(images=images, questions=questions, question_ids=np.asarray(question_ids, np.int64),
                   image_ids=np.asarray(image_ids, np.int64), question_types=question_types,
                   answer_types=answer_types, answers=answers, answer_vocab=vocab, labels=labels,
                   target_ids=target_ids, target_scores=target_scores)


# ------------------------------------------------------------------------------------------------ NLVR2
@dataclass(frozen=True)
class NLVR2Data:
    """NLVR² sentences (row i = sentence i) with their left and right images; `labels` int32, 1 = True."""

    left_images: PngImages
    right_images: PngImages
    sentences: list[str]
    labels: np.ndarray
    identifiers: list[str]

    def __len__(self) -> int:
        return len(self.sentences)


def load_nlvr2(jsonl_path: str | Path, image_dir: str | Path) -> NLVR2Data:
    """An NLVR² split (layout in the module doc); `image_dir` is searched recursively, images read lazily.

    `label` may be "True"/"False" as released, or a JSON boolean.
    """
    path, image_dir = Path(jsonl_path), Path(image_dir)
    sentences, labels, identifiers, left, right = [], [], [], [], []
    for where, row in _read_jsonl(path, "NLVR2 file"):
        identifier = _field(row, "identifier", str, where, 'a string such as "dev-850-0-0"')
        match = re.fullmatch(r"(.+)-\d+", identifier)
        if match is None:
            raise DatasetError(f"{where} field 'identifier' is {identifier!r}: expected "
                               '<split>-<set>-<pair>-<sentence> such as "dev-850-0-0"')
        sentences.append(_field(row, "sentence", str, where, "a string"))
        label = _field(row, "label", (str, bool), where, '"True" or "False"')
        if label not in NLVR2_LABELS:
            raise DatasetError(f"{where} field 'label' is {label!r}: expected \"True\" or \"False\"")
        labels.append(NLVR2_LABELS[label])
        identifiers.append(identifier)
        left.append(f"{match.group(1)}-img0.png")
        right.append(f"{match.group(1)}-img1.png")
    left_images = _image_paths(left, image_dir, "NLVR2", path, recursive=True)
    right_images = _image_paths(right, image_dir, "NLVR2", path, recursive=True)
    return NLVR2Data(left_images=left_images, right_images=right_images, sentences=sentences,
                     labels=np.asarray(labels, np.int32), identifiers=identifiers)


# ------------------------------------------------------------------------------------------------ SNLI-VE
@dataclass(frozen=True)
class SNLIVEData:
    """SNLI-VE pairs (row i = pair i): the Flickr30k image (premise), the hypothesis and its label.

    `labels` int32 index `SNLI_VE_LABELS`; `premises` are the captions the hypotheses were written for;
    `skipped` counts the rows dropped for the "-" gold label (with `skip_unlabelled=True`).
    """

    images: PngImages
    hypotheses: list[str]
    premises: list[str]
    labels: np.ndarray
    pair_ids: list[str]
    image_ids: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.hypotheses)


def load_snli_ve(jsonl_path: str | Path, image_dir: str | Path, *,
                 skip_unlabelled: bool = False) -> SNLIVEData:
    """An SNLI-VE split (layout in the module doc); images `<Flickr30K_ID>.jpg` in `image_dir`, read lazily.

    `skip_unlabelled=True` drops the rows with gold label "-" (counted in `skipped`) instead of failing.
    """
    path, image_dir = Path(jsonl_path), Path(image_dir)
    expected_label = " or ".join(map(repr, SNLI_VE_LABELS))
    hypotheses, premises, labels, pair_ids, image_ids = [], [], [], [], []
    skipped = 0
    for where, row in _read_jsonl(path, "SNLI-VE file"):
        image_id = _field(row, "Flickr30K_ID", (str, int), where, 'a Flickr30k image id such as "3416050480"')
        image_id = str(image_id)
        if not image_id.isdigit():
            raise DatasetError(f"{where} field 'Flickr30K_ID' is {image_id!r}: expected digits such as "
                               '"3416050480"')
        label = _field(row, "gold_label", str, where, expected_label)
        if label == "-" and skip_unlabelled:
            skipped += 1
            continue
        if label not in SNLI_VE_LABELS:
            hint = " (no consensus: skip_unlabelled=True drops such rows)" if label == "-" else ""
            raise DatasetError(f"{where} field 'gold_label' is {label!r}: expected {expected_label}{hint}")
        hypotheses.append(_field(row, "sentence2", str, where, "a string (the hypothesis)"))
        premises.append(_field(row, "sentence1", str, where, "a string (the caption)"))
        pair_ids.append(_field(row, "pairID", str, where, 'a string such as "3416050480.jpg#4r1n"'))
        labels.append(SNLI_VE_LABELS.index(label))
        image_ids.append(image_id)
    if not hypotheses:
        raise DatasetError(f"SNLI-VE file {path}: all {skipped} rows have gold label '-': none left")
    images = _image_paths([f"{i}.jpg" for i in image_ids], image_dir, "SNLI-VE", path)
    return SNLIVEData(images=images, hypotheses=hypotheses, premises=premises,
                      labels=np.asarray(labels, np.int32), pair_ids=pair_ids, image_ids=image_ids,
                      skipped=skipped)
