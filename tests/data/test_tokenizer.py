"""Tokenizers: special-id convention, padding/truncation, round trips, save/load, the factory."""

import numpy as np
import pytest

from mmjax.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SubwordTokenizer,
    Tokenizer,
    WordTokenizer,
    make_tokenizer,
)

CAPTIONS = [f"a {size} {colour} {shape}" for size in ("small", "large")
            for colour in ("red", "green", "blue", "yellow", "purple")
            for shape in ("square", "circle", "triangle", "cross", "star")]


def test_word_vocabulary_and_special_ids():
    tok = WordTokenizer.build(["A red square.", "a blue circle", "a red circle"])
    # Most frequent first ("a" x3, then "circle"/"red" x2 alphabetically), after the 4 special tokens.
    assert tok.words[:3] == ("a", "circle", "red")
    assert tok.vocab_size == 4 + len(set("a red square . blue circle".split()))
    rows = tok.encode(["a red square", "a zebra"], max_len=6)
    assert rows.dtype == np.int32 and rows.shape == (2, 6)
    a, red, square = (tok.words.index(w) + 4 for w in ("a", "red", "square"))
    np.testing.assert_array_equal(rows[0], [BOS_ID, a, red, square, EOS_ID, PAD_ID])
    np.testing.assert_array_equal(rows[1], [BOS_ID, a, UNK_ID, EOS_ID, PAD_ID, PAD_ID])


def test_word_truncation_keeps_eot():
    tok = WordTokenizer.build(CAPTIONS)
    rows = tok.encode(CAPTIONS[:3], max_len=4)
    assert (rows[:, 0] == BOS_ID).all() and (rows[:, -1] == EOS_ID).all()
    assert tok.decode(rows) == ["a small", "a small", "a small"]
    with pytest.raises(ValueError, match="max_len=1"):
        tok.encode("a", max_len=1)


def test_word_round_trip_bytes_and_single_string():
    tok = WordTokenizer.build(CAPTIONS)
    assert tok.decode(tok.encode(CAPTIONS, max_len=8)) == CAPTIONS
    assert tok.decode(tok.encode([c.encode() for c in CAPTIONS[:2]], 8)) == CAPTIONS[:2]
    assert tok.encode("A Large RED star", 8).shape == (1, 8)
    assert tok.decode(tok.encode("A Large RED star", 8)) == ["a large red star"]


def test_word_save_load(tmp_path):
    tok = WordTokenizer.build(CAPTIONS)
    tok.save(tmp_path / "tok.json")
    loaded = WordTokenizer.load(tmp_path / "tok.json")
    assert loaded.words == tok.words
    np.testing.assert_array_equal(loaded.encode(CAPTIONS, 8), tok.encode(CAPTIONS, 8))
    assert isinstance(Tokenizer.load(tmp_path / "tok.json"), WordTokenizer)
    with pytest.raises(ValueError, match="not a SubwordTokenizer"):
        SubwordTokenizer.load(tmp_path / "tok.json")


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece"])
def test_subword_trains_and_round_trips(tmp_path, algorithm):
    assert len(CAPTIONS) == 50
    tok = make_tokenizer(algorithm, CAPTIONS, vocab_size=60)
    assert isinstance(tok, SubwordTokenizer) and 4 < tok.vocab_size <= 60
    rows = tok.encode(CAPTIONS, max_len=24)
    assert rows.dtype == np.int32 and (rows[:, 0] == BOS_ID).all()
    assert all(EOS_ID in row for row in rows)
    assert tok.decode(rows) == CAPTIONS
    tok.save(tmp_path / "sub.json")
    loaded = Tokenizer.load(tmp_path / "sub.json")
    np.testing.assert_array_equal(loaded.encode(CAPTIONS, 24), rows)
    short = tok.encode(CAPTIONS[:1], max_len=3)
    np.testing.assert_array_equal(short[0, [0, 2]], [BOS_ID, EOS_ID])


def test_make_tokenizer_unknown_kind():
    assert isinstance(make_tokenizer("word", CAPTIONS), WordTokenizer)
    with pytest.raises(ValueError, match=r"^tokenizer kind='char' is invalid: allowed word, bpe, wordpiece$"):
        make_tokenizer("char", CAPTIONS)


@pytest.mark.parametrize("kind", ["word", "bpe", "wordpiece"])
def test_mask_token_is_appended_last_and_survives_save_load(tmp_path, kind):
    kwargs = {} if kind == "word" else {"vocab_size": 60}
    plain = make_tokenizer(kind, CAPTIONS, **kwargs)
    tok = make_tokenizer(kind, CAPTIONS, mask_token=True, **kwargs)
    assert plain.mask_id is None and plain.special_ids == (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
    # [MASK] is one more id, the last: every other id is unchanged.
    assert tok.vocab_size == plain.vocab_size + 1 and tok.mask_id == tok.vocab_size - 1
    assert tok.special_ids == (PAD_ID, BOS_ID, EOS_ID, UNK_ID, tok.mask_id)
    assert (tok.cls_id, tok.sep_id) == (BOS_ID, EOS_ID)  # [CLS] is <sot> at position 0, [SEP] is <eot>
    rows = tok.encode(CAPTIONS, max_len=24)
    assert tok.mask_id not in rows and tok.decode(rows) == CAPTIONS
    if kind == "word":  # (HF's WordPiece trainer breaks ties differently run to run)
        np.testing.assert_array_equal(rows, plain.encode(CAPTIONS, max_len=24))
    tok.save(tmp_path / "tok.json")
    loaded = Tokenizer.load(tmp_path / "tok.json")
    assert loaded.mask_id == tok.mask_id and loaded.vocab_size == tok.vocab_size
    np.testing.assert_array_equal(loaded.encode(CAPTIONS, 24), rows)
    if kind == "word":  # a word tokenizer writes the flag only when set, so old files read as before
        assert "mask_token" not in plain.to_json()
        masked = rows[:1].copy()
        masked[0, 2] = tok.mask_id
        assert tok.decode(masked)[0].split()[1] == "<mask>"
