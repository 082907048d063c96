"""Retrieval Recall@K on constructed embeddings with known ranks, one and several captions per image."""

import numpy as np
import pytest

from mmjax.eval.retrieval import retrieval_recall

KS = (1, 5, 10)


def _embed_similarity(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings whose cosine matrix is sim / const: images e_i, texts sim[:, j] padded to equal norm."""
    n_img, n_txt = sim.shape
    sq = (sim**2).sum(axis=0)
    pad = np.sqrt(sq.max() + 1.0 - sq)
    img = np.concatenate([np.eye(n_img), np.zeros((n_img, 1))], axis=1)
    txt = np.concatenate([sim.T, pad[:, None]], axis=1)
    return img.astype(np.float32), txt.astype(np.float32)


def _symmetric_with_ranks(ranks: np.ndarray, seed: int) -> np.ndarray:
    """Symmetric similarity whose diagonal entry i has exactly ranks[i] larger entries in row i."""
    n = len(ranks)
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.permutation(n * n).reshape(n, n).astype(np.float64) / (n * n), 1)
    sim = upper + upper.T
    for i, r in enumerate(ranks):
        row = np.sort(np.delete(sim[i], i))[::-1]
        hi = row[r - 1] if r > 0 else row[0] + 1.0
        lo = row[r] if r < n - 1 else row[-1] - 1.0
        sim[i, i] = (hi + lo) / 2.0
    return sim


def _assert_recalls(out, i2t, t2i):
    assert set(out) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in KS}
    for k, want in zip(KS, i2t, strict=True):
        assert float(out[f"i2t_R@{k}"]) == pytest.approx(want, abs=1e-6), f"i2t@{k}"
    for k, want in zip(KS, t2i, strict=True):
        assert float(out[f"t2i_R@{k}"]) == pytest.approx(want, abs=1e-6), f"t2i@{k}"


def test_identity_embeddings_give_perfect_recall():
    x = np.random.default_rng(0).normal(size=(15, 64)).astype(np.float32)
    _assert_recalls(retrieval_recall(x, 3.0 * x), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))


def test_known_ranks_both_directions():
    # A symmetric similarity makes image i's and text i's rank the same number.
    ranks = np.array([0, 0, 0, 1, 2, 4, 5, 7, 9, 10, 11, 0])  # n = 12
    img, txt = _embed_similarity(_symmetric_with_ranks(ranks, seed=1))
    expected = (4 / 12, 7 / 12, 10 / 12)  # ranks < 1, < 5, < 10
    out = retrieval_recall(img, txt, ks=KS)
    _assert_recalls(out, expected, expected)


def test_asymmetric_known_ranks():
    # Texts are a shifted copy: text j looks most like image j+1 and second most like image j, so every
    # text finds its image at rank 1, while image i's own text is beaten by text i-1 only.
    n = 11
    sim = np.eye(n) * 0.5 + np.roll(np.eye(n), 1, axis=0)  # sim[j+1, j] = 1, sim[j, j] = 0.5
    img, txt = _embed_similarity(sim)
    _assert_recalls(retrieval_recall(img, txt), (0.0, 1.0, 1.0), (0.0, 1.0, 1.0))


def test_several_captions_per_image():
    # Image i has a good caption (e_i) and a bad one (closer to image i+1); image 3 has only a bad one.
    e = np.eye(4, dtype=np.float32)
    good = [e[0], e[1], e[2]]
    bad = [e[(i + 1) % 4] + 0.5 * e[i] for i in range(4)]
    txt = np.stack(good + bad)
    ids = np.array([0, 1, 2, 0, 1, 2, 3])
    out = retrieval_recall(e, txt, ks=(1, 2), txt_img_ids=ids)
    # Image 3's only caption (e0 + .5 e3) is beaten in its row by the bad caption of image 2
    # (e3 + .5 e2, cosine .89 > .45), so it ranks 2nd; images 0-2 find their good caption first.
    assert float(out["i2t_R@1"]) == pytest.approx(3 / 4)
    assert float(out["i2t_R@2"]) == pytest.approx(1.0)
    # Good captions retrieve their image first; bad ones find it second.
    assert float(out["t2i_R@1"]) == pytest.approx(3 / 7)
    assert float(out["t2i_R@2"]) == pytest.approx(1.0)


def _brute_force(sim: np.ndarray, ids: np.ndarray, k: int) -> tuple[float, float]:
    order_t = np.argsort(-sim, axis=1)[:, :k]
    has = np.array([np.any(ids == i) for i in range(sim.shape[0])])
    i2t = np.array([np.any(ids[order_t[i]] == i) for i in range(sim.shape[0])])
    order_i = np.argsort(-sim, axis=0)[:k]
    t2i = np.array([ids[j] in order_i[:, j] for j in range(sim.shape[1])])
    return i2t[has].mean(), t2i.mean()


def test_matches_sorting_reference_with_uncaptioned_image():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(20, 8)).astype(np.float32)
    ids = rng.integers(0, 19, 50)  # image 19 never gets a caption, so it is left out of i2t
    txt = img[ids] + 1.2 * rng.normal(size=(50, 8)).astype(np.float32)
    out = retrieval_recall(img, txt, txt_img_ids=ids)
    zi = img / np.linalg.norm(img, axis=1, keepdims=True)
    zt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    for k in KS:
        i2t, t2i = _brute_force(zi @ zt.T, ids, k)
        assert float(out[f"i2t_R@{k}"]) == pytest.approx(i2t, abs=1e-6)
        assert float(out[f"t2i_R@{k}"]) == pytest.approx(t2i, abs=1e-6)


def test_unpaired_inputs_need_ids():
    with pytest.raises(ValueError, match="txt_img_ids"):
        retrieval_recall(np.ones((3, 2)), np.ones((5, 2)))
