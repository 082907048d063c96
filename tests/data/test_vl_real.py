"""VQA v2, NLVR² and SNLI-VE loaders on tiny fakes written here; the VQA accuracy against brute force."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from mmjax.data.tfds_io import DatasetError, DatasetMissingError
from mmjax.data.vl_real import (
    SNLI_VE_LABELS,
    answer_vocabulary,
    load_nlvr2,
    load_snli_ve,
    load_vqa,
    normalize_answer,
    vqa_accuracy,
    vqa_accuracy_batch,
    vqa_scores,
)


def brute_accuracy(predicted: str, answers: list[str]) -> float:
    """The official definition in float64: mean over the (n choose n-1) subsets of min(matches / 3, 1)."""
    subsets = list(itertools.combinations(range(len(answers)), len(answers) - 1))
    return float(np.mean([min(sum(answers[i] == predicted for i in s) / 3.0, 1.0) for s in subsets]))


def one_line(excinfo, name: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and name in message, message
    return message


def write_image(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def pixels(value: int, height: int = 5, width: int = 7) -> np.ndarray:
    """An image whose red channel holds `value` and green the column index, so it can be told apart."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = value
    image[..., 1] = np.arange(width) * 10
    return image


def write_jsonl(path, rows) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


# ------------------------------------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("humans, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0),
                                              (10, 1.0)])
def test_vqa_accuracy_hand_computed(humans, expected):
    answers = ["2"] * humans + ["3"] * (10 - humans)
    assert vqa_accuracy("2", answers) == pytest.approx(expected, abs=1e-12)
    assert vqa_accuracy("two", answers) == pytest.approx(expected, abs=1e-12)  # normalised to "2"
    assert vqa_accuracy("two", answers, normalize=False) == 0.0


def test_vqa_accuracy_and_scores_match_brute_force():
    rng = np.random.default_rng(0)
    pool = ["yes", "no", "red", "2", "dog"]
    rows = [list(rng.choice(pool, size=10, p=[0.4, 0.25, 0.15, 0.1, 0.1])) for _ in range(40)]
    rows += [["red", "blue", "blue"], ["dog"]]  # other human counts: the subsets leave one of n out
    vocab = ("yes", "no", "red", "blue", "cat")
    scores = vqa_scores(rows, vocab)
    assert scores.shape == (len(rows), len(vocab)) and scores.dtype == np.float32
    for i, answers in enumerate(rows):
        for j, answer in enumerate(vocab):
            expected = brute_accuracy(answer, answers)
            assert abs(vqa_accuracy(answer, answers) - expected) < 1e-12
            assert abs(scores[i, j] - expected) < 1e-6
    pred = rng.integers(-1, len(vocab), size=len(rows))
    batch = vqa_accuracy_batch(pred, scores)
    expected = [brute_accuracy(vocab[p], rows[i]) if p >= 0 else 0.0 for i, p in enumerate(pred)]
    np.testing.assert_allclose(batch, expected, atol=1e-6)
    with pytest.raises(ValueError):
        vqa_accuracy_batch(pred[:-1], scores)


@pytest.mark.parametrize("raw, normalised", [
    ("Yes", "yes"), ("  yes.\n", "yes"), ("Two", "2"), ("two dogs", "2 dogs"), ("none", "0"),
    ("A dog", "dog"), ("the Red car!", "red car"), ("an apple", "apple"), ("1.5", "1.5"),
    ("1,000", "1000"), ("t-shirt", "t shirt"), ("(red), white", "red white"), ("don't", "don't"),
    ("mr. smith", "mr smith"), ("10:30", "10:30"), ("  ", ""),
])
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_answer_vocabulary_order_top_k_and_min_count(tmp_path):
    counts = {"yes": 5, "no": 5, "2": 3, "red": 3, "blue": 3, "dog": 1}
    entries = [{"multiple_choice_answer": answer} for answer, n in counts.items() for _ in range(n)]
    entries[0]["multiple_choice_answer"] = "Yes."  # normalised to "yes"
    everything = ("no", "yes", "2", "blue", "red", "dog")  # by count, then alphabetical
    assert answer_vocabulary(entries, top_k=None) == everything
    assert answer_vocabulary(entries, top_k=4) == everything[:4]
    assert answer_vocabulary(entries[::-1], top_k=4) == everything[:4]  # order-independent
    assert answer_vocabulary(entries, top_k=None, min_count=3) == everything[:5]
    path = tmp_path / "v2_mscoco_train2014_annotations.json"
    path.write_text(json.dumps({"annotations": entries}))
    assert answer_vocabulary(path, top_k=3) == everything[:3]
    with pytest.raises(DatasetError) as excinfo:
        answer_vocabulary([{"answer": "x"}], top_k=3)
    assert "annotations[0]" in one_line(excinfo, "multiple_choice_answer")


# ------------------------------------------------------------------------------------------------ VQA v2
VQA_ROWS = [  # image_id, question, question type, answer type, multiple-choice answer, the ten answers
    (9, "Is it red?", "is it", "yes/no", "yes", ["yes"] * 7 + ["no"] * 3),
    (9, "How many dogs?", "how many", "number", "2", ["two"] * 2 + ["2"] * 2 + ["3"] * 5 + ["4"]),
    (42, "What is it?", "what is", "other", "dog", ["a dog", "Dog", "dog.", "cat", "puppy"] + ["dog"] * 5),
    (42, "Is it a cat?", "is it", "yes/no", "no", ["no"] * 9 + ["yes"]),
]


def write_vqa(tmp_path, split="val2014", rows=VQA_ROWS, images=True):
    questions = {"data_subtype": split, "questions": [
        {"image_id": image_id, "question": question, "question_id": 1000 + i}
        for i, (image_id, question, *_) in enumerate(rows)]}
    annotations = {"annotations": [
        {"question_id": 1000 + i, "image_id": image_id, "question_type": qtype, "answer_type": atype,
         "multiple_choice_answer": mc,
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                     for j, a in enumerate(answers)]}
        for i, (image_id, _, qtype, atype, mc, answers) in enumerate(rows)]}
    q_path = tmp_path / f"v2_OpenEnded_mscoco_{split}_questions.json"
    a_path = tmp_path / f"v2_mscoco_{split}_annotations.json"
    q_path.write_text(json.dumps(questions))
    a_path.write_text(json.dumps(annotations))
    image_dir = tmp_path / split
    image_dir.mkdir(exist_ok=True)
    if images:
        for image_id in sorted({row[0] for row in rows}):
            write_image(image_dir / f"COCO_{split}_{image_id:012d}.jpg", pixels(image_id, 6, 8))
    return q_path, a_path, image_dir


def test_load_vqa(tmp_path):
    q_path, a_path, image_dir = write_vqa(tmp_path)
    data = load_vqa(q_path, a_path, image_dir, top_k=3)
    assert len(data) == 4 and data.questions == [row[1] for row in VQA_ROWS]
    np.testing.assert_array_equal(data.question_ids, [1000, 1001, 1002, 1003])
    np.testing.assert_array_equal(data.image_ids, [9, 9, 42, 42])
    assert data.question_types == ["is it", "how many", "what is", "is it"]
    assert data.answer_types == ["yes/no", "number", "other", "yes/no"]
    assert data.answers.shape == (4, 10)
    assert list(data.answers[1]) == ["2"] * 4 + ["3"] * 5 + ["4"]
    assert list(data.answers[2][:5]) == ["dog", "dog", "dog", "cat", "puppy"]
    assert data.answer_vocab == ("2", "dog", "no")  # each once; alphabetical among ties; top_k=3
    np.testing.assert_array_equal(data.labels, [-1, 0, 1, 2])  # "yes" is not in the 3 answers
    dense = data.soft_targets()
    assert dense.shape == (4, 3) and dense.dtype == np.float32
    np.testing.assert_allclose(dense, vqa_scores(data.answers, data.answer_vocab))
    np.testing.assert_allclose(dense, [[0, 0, 0.9], [1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(data.soft_targets(1), dense[1])
    np.testing.assert_allclose(data.soft_targets(np.array([3, 0])), dense[[3, 0]])
    np.testing.assert_allclose(vqa_accuracy_batch(data.labels, dense), [0, 1, 1, 1], atol=1e-6)
    assert data.images[0].shape == (6, 8, 3) and data.images[0].dtype == np.uint8  # JPEG: shape only
    assert data.images[1:3].shape == (2, 6, 8, 3)
    assert [p.name for p in data.images.paths] == ["COCO_val2014_000000000009.jpg"] * 2 + [
        "COCO_val2014_000000000042.jpg"] * 2

    # A given vocabulary (e.g. the train split's) and the test-split case without annotations.
    given = load_vqa(q_path, a_path, image_dir, answer_vocab=["yes", "no", "4"])
    np.testing.assert_array_equal(given.labels, [0, -1, -1, 1])
    np.testing.assert_allclose(given.soft_targets()[1], [0, 0, 0.3], atol=1e-6)
    test = load_vqa(q_path, None, image_dir, answer_vocab=["yes", "no"])
    assert test.answers is None and test.question_types is None and len(test) == 4
    np.testing.assert_array_equal(test.labels, [-1] * 4)
    assert test.soft_targets().shape == (4, 2) and not test.soft_targets().any()


def test_load_vqa_split_from_file_name_and_custom_pattern(tmp_path):
    q_path, a_path, image_dir = write_vqa(tmp_path, split="train2014")
    document = json.loads(q_path.read_text())
    del document["data_subtype"]  # then the split comes from the file name
    q_path.write_text(json.dumps(document))
    assert load_vqa(q_path, a_path, image_dir).images.paths[0].name == "COCO_train2014_000000000009.jpg"
    for image_id in (9, 42):
        write_image(image_dir / f"{image_id}.png", pixels(image_id))
    data = load_vqa(q_path, a_path, image_dir, image_pattern="{image_id}.png")
    np.testing.assert_array_equal(data.images[2], pixels(42))  # PNG: pixel values round-trip


def test_vqa_errors(tmp_path):
    q_path, a_path, image_dir = write_vqa(tmp_path)
    with pytest.raises(DatasetMissingError) as excinfo:
        load_vqa(tmp_path / "nope_questions.json", a_path, image_dir)
    one_line(excinfo, "nope_questions.json")
    with pytest.raises(DatasetMissingError) as excinfo:
        load_vqa(q_path, tmp_path / "nope_annotations.json", image_dir)
    one_line(excinfo, "nope_annotations.json")
    with pytest.raises(DatasetMissingError) as excinfo:
        load_vqa(q_path, a_path, tmp_path / "no_images")
    one_line(excinfo, "no_images")

    bad = tmp_path / "bad.json"
    bad.write_text('{"questions": [')
    with pytest.raises(DatasetError) as excinfo:
        load_vqa(bad, a_path, image_dir)
    assert "not valid JSON" in one_line(excinfo, "bad.json")
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError) as excinfo:
        load_vqa(bad, a_path, image_dir)
    assert "'questions'" in one_line(excinfo, "bad.json")

    questions = json.loads(q_path.read_text())
    del questions["questions"][2]["question"]
    bad.write_text(json.dumps(questions))
    with pytest.raises(DatasetError) as excinfo:
        load_vqa(bad, a_path, image_dir)
    assert "questions[2]" in one_line(excinfo, "'question'")

    annotations = json.loads(a_path.read_text())
    annotations["annotations"][1]["answers"][4] = {"answer": 3}
    bad.write_text(json.dumps(annotations))
    with pytest.raises(DatasetError) as excinfo:
        load_vqa(q_path, bad, image_dir)
    assert "annotations[1] answers[4]" in one_line(excinfo, "bad.json")

    annotations = json.loads(a_path.read_text())
    del annotations["annotations"][3]
    bad.write_text(json.dumps(annotations))
    with pytest.raises(DatasetError) as excinfo:
        load_vqa(q_path, bad, image_dir)
    assert "question_id 1003" in one_line(excinfo, "bad.json")

    (image_dir / "COCO_val2014_000000000042.jpg").unlink()
    with pytest.raises(DatasetMissingError) as excinfo:
        load_vqa(q_path, a_path, image_dir)
    one_line(excinfo, str(image_dir / "COCO_val2014_000000000042.jpg"))


# ------------------------------------------------------------------------------------------------ NLVR2
NLVR2_ROWS = [
    {"identifier": "train-850-0-0", "sentence": "One image shows two dogs.", "label": "True"},
    {"identifier": "train-850-0-1", "sentence": "Both images show a cat.", "label": "False"},
    {"identifier": "train-17-3-0", "sentence": "There is water on the left.", "label": "False"},
    {"identifier": "train-17-3-1", "sentence": "The right image is dark.", "label": True},
]


def write_nlvr2(tmp_path, rows=NLVR2_ROWS):
    path = tmp_path / "train.json"
    write_jsonl(path, [{**row, "left_url": "http://a", "right_url": "http://b"} for row in rows])
    image_dir = tmp_path / "images" / "train"
    for folder, stem, value in (("0", "train-850-0", 10), ("1", "train-17-3", 20)):
        for side in (0, 1):
            write_image(image_dir / folder / f"{stem}-img{side}.png", pixels(value + side))
    return path, image_dir


def test_load_nlvr2(tmp_path):
    path, image_dir = write_nlvr2(tmp_path)
    data = load_nlvr2(path, image_dir)
    assert len(data) == 4 and data.sentences == [row["sentence"] for row in NLVR2_ROWS]
    assert data.identifiers == [row["identifier"] for row in NLVR2_ROWS]
    np.testing.assert_array_equal(data.labels, [1, 0, 0, 1])
    assert data.labels.dtype == np.int32
    for i, value in enumerate((10, 10, 20, 20)):
        np.testing.assert_array_equal(data.left_images[i], pixels(value))
        np.testing.assert_array_equal(data.right_images[i], pixels(value + 1))
    assert data.right_images[np.array([0, 3])].shape == (2, 5, 7, 3)
    assert data.left_images.paths[2] == image_dir / "1" / "train-17-3-img0.png"


def test_nlvr2_errors(tmp_path):
    path, image_dir = write_nlvr2(tmp_path)
    with pytest.raises(DatasetMissingError) as excinfo:
        load_nlvr2(tmp_path / "dev.json", image_dir)
    one_line(excinfo, "dev.json")
    cases = [
        ('{"identifier": "train-850-0-0", ', "line 2", "not valid JSON"),
        ({"identifier": "train-850-0-0", "label": "True"}, "line 2", "'sentence'"),
        ({"identifier": "train-850-0-0", "sentence": "s", "label": "yes"}, "line 2", "'label'"),
        ({"identifier": "train850", "sentence": "s", "label": "True"}, "line 2", "'identifier'"),
    ]
    bad = tmp_path / "bad.json"
    for row, line, field in cases:
        write_jsonl(bad, [NLVR2_ROWS[0], row])
        with pytest.raises(DatasetError) as excinfo:
            load_nlvr2(bad, image_dir)
        message = one_line(excinfo, "bad.json")
        assert line in message and field in message, message
    (image_dir / "1" / "train-17-3-img1.png").unlink()
    with pytest.raises(DatasetMissingError) as excinfo:
        load_nlvr2(path, image_dir)
    one_line(excinfo, "train-17-3-img1.png")


# ------------------------------------------------------------------------------------------------ SNLI-VE
SNLI_ROWS = [
    {"Flickr30K_ID": "3416050480", "sentence1": "A man on a bike.", "sentence2": "A person rides.",
     "gold_label": "entailment", "pairID": "3416050480.jpg#4r1e"},
    {"Flickr30K_ID": "3416050480", "sentence1": "A man on a bike.", "sentence2": "He is asleep.",
     "gold_label": "contradiction", "pairID": "3416050480.jpg#4r1c"},
    {"Flickr30K_ID": 1000092795, "sentence1": "Two dogs play.", "sentence2": "The dogs are brothers.",
     "gold_label": "neutral", "pairID": "1000092795.jpg#0r1n"},
]


def write_snli_ve(tmp_path, rows=SNLI_ROWS):
    path = tmp_path / "snli_ve_dev.jsonl"
    write_jsonl(path, rows)
    image_dir = tmp_path / "flickr30k-images"
    for image_id, value in (("3416050480", 1), ("1000092795", 2)):
        write_image(image_dir / f"{image_id}.jpg", pixels(value, 9, 4))
    return path, image_dir


def test_load_snli_ve(tmp_path):
    path, image_dir = write_snli_ve(tmp_path)
    data = load_snli_ve(path, image_dir)
    assert len(data) == 3 and data.skipped == 0
    assert data.hypotheses == ["A person rides.", "He is asleep.", "The dogs are brothers."]
    assert data.premises == ["A man on a bike.", "A man on a bike.", "Two dogs play."]
    assert [SNLI_VE_LABELS[i] for i in data.labels] == ["entailment", "contradiction", "neutral"]
    np.testing.assert_array_equal(data.labels, [0, 2, 1])
    assert data.pair_ids == [row["pairID"] for row in SNLI_ROWS]
    assert data.image_ids == ["3416050480", "3416050480", "1000092795"]
    assert data.images[2].shape == (9, 4, 3) and data.images[:].shape == (3, 9, 4, 3)  # JPEG: shape only

    unlabelled = [*SNLI_ROWS, {**SNLI_ROWS[0], "gold_label": "-"}]
    write_jsonl(path, unlabelled)
    with pytest.raises(DatasetError) as excinfo:
        load_snli_ve(path, image_dir)
    assert "line 4" in one_line(excinfo, "snli_ve_dev.jsonl") and "skip_unlabelled" in str(excinfo.value)
    data = load_snli_ve(path, image_dir, skip_unlabelled=True)
    assert len(data) == 3 and data.skipped == 1


def test_snli_ve_errors(tmp_path):
    path, image_dir = write_snli_ve(tmp_path)
    with pytest.raises(DatasetMissingError) as excinfo:
        load_snli_ve(tmp_path / "snli_ve_test.jsonl", image_dir)
    one_line(excinfo, "snli_ve_test.jsonl")
    good = SNLI_ROWS[0]
    cases = [
        ({**good, "gold_label": "Entailment"}, "'gold_label'"),
        ({key: value for key, value in good.items() if key != "Flickr30K_ID"}, "'Flickr30K_ID'"),
        ({**good, "sentence2": None}, "'sentence2'"),
        ("[1, 2]", "JSON object"),
    ]
    for row, field in cases:
        write_jsonl(path, [good, good, row])
        with pytest.raises(DatasetError) as excinfo:
            load_snli_ve(path, image_dir)
        message = one_line(excinfo, "snli_ve_dev.jsonl")
        assert "line 3" in message and field in message, message
    write_jsonl(path, [good, {**good, "Flickr30K_ID": "123"}])
    with pytest.raises(DatasetMissingError) as excinfo:
        load_snli_ve(path, image_dir)
    one_line(excinfo, str(image_dir / "123.jpg"))
