"""Zero-shot classification on constructed embeddings whose correct class and rank are known."""

import jax
import numpy as np
import pytest

from mmjax.eval import zeroshot


def test_prompt_texts_fills_placeholders():
    out = zeroshot.prompt_texts(["cat", "red car"], ["a photo of a {}.", "{} {{not a field}}"])
    assert out == [
        ["a photo of a cat.", "cat {{not a field}}"],
        ["a photo of a red car.", "red car {{not a field}}"],
    ]


def test_prompt_texts_rejects_template_without_placeholder():
    with pytest.raises(ValueError, match=r"placeholder: \['no placeholder'\]"):
        zeroshot.prompt_texts(["cat"], ["a photo of a {}.", "no placeholder"])


def test_class_embeddings_of_orthogonal_templates():
    text = np.zeros((2, 2, 4), np.float32)
    text[0, 0, 0], text[0, 1, 1] = 3.0, 0.5  # normalised: e0, e1 -> mean (.5, .5) -> (1, 1)/√2
    text[1, 0, 2], text[1, 1, 3] = 2.0, 7.0
    r = 1.0 / np.sqrt(2.0)
    expected = np.array([[r, r, 0.0, 0.0], [0.0, 0.0, r, r]], np.float32)
    np.testing.assert_allclose(zeroshot.class_embeddings(text), expected, atol=1e-6)


def test_class_embeddings_weights_templates_equally():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(3, 5, 6)).astype(np.float32)
    unit = text / np.linalg.norm(text, axis=-1, keepdims=True)
    mean = unit.mean(axis=1)
    np.testing.assert_allclose(
        zeroshot.class_embeddings(text * 10.0), mean / np.linalg.norm(mean, axis=-1, keepdims=True), atol=1e-6
    )


def test_zero_shot_logits_are_cosines():
    img = np.array([[2.0, 0.0], [1.0, 1.0]], np.float32)
    cls = np.array([[0.0, 5.0], [3.0, 0.0]], np.float32)
    r = 1.0 / np.sqrt(2.0)
    np.testing.assert_allclose(zeroshot.zero_shot_logits(img, cls), [[0.0, 1.0], [r, r]], atol=1e-6)


def _ranked_images(ranks: np.ndarray, labels: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Image embeddings against class embeddings e_c in which the true class sits at rank ranks[i]."""
    rng = np.random.default_rng(seed)
    scores = np.linspace(1.0, 0.1, n_classes, dtype=np.float32)  # distinct, best first
    img = np.zeros((len(labels), n_classes), np.float32)
    for i, (label, rank) in enumerate(zip(labels, ranks, strict=True)):
        others = rng.permutation([c for c in range(n_classes) if c != label])
        order = np.insert(others, rank, label)  # order[p] is the class at rank p
        img[i, order] = scores
    return img


def test_zero_shot_accuracy_known_ranks():
    n_classes = 8
    ranks = np.array([0, 0, 0, 1, 2, 4, 5, 7, 0, 3])  # top1 = 4/10, top5 = 8/10
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 7, 2])
    img = _ranked_images(ranks, labels, n_classes, seed=0)
    cls = np.eye(n_classes, dtype=np.float32) * 4.0
    out = zeroshot.zero_shot_accuracy(img, cls, labels, topk=(1, 5, 10))
    assert set(out) == {"top1", "top5"}  # 10 > n_classes is skipped
    assert float(out["top1"]) == pytest.approx(0.4)
    assert float(out["top5"]) == pytest.approx(0.8)
    jitted = jax.jit(zeroshot.zero_shot_accuracy, static_argnames="topk")(img, cls, labels, topk=(1, 3))
    assert float(jitted["top1"]) == pytest.approx(0.4)
    assert float(jitted["top3"]) == pytest.approx(0.6)


def test_zero_shot_accuracy_from_template_embeddings():
    # Two templates per class, both near the class direction: every image is its class, top-1 = 1.
    rng = np.random.default_rng(1)
    base = np.eye(6, dtype=np.float32)
    text = base[:, None, :] + 0.1 * rng.normal(size=(6, 2, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 30)
    img = base[labels] + 0.05 * rng.normal(size=(30, 6)).astype(np.float32)
    out = zeroshot.zero_shot_accuracy(img, zeroshot.class_embeddings(text), labels)
    assert float(out["top1"]) == 1.0
    assert float(out["top5"]) == 1.0


def test_ties_count_against_the_true_class():
    img = np.ones((4, 3), np.float32)
    cls = np.ones((3, 3), np.float32)  # every class scores the same
    out = zeroshot.zero_shot_accuracy(img, cls, np.array([0, 1, 2, 0]), topk=(1, 2, 3))
    assert (float(out["top1"]), float(out["top2"]), float(out["top3"])) == (0.0, 0.0, 1.0)
