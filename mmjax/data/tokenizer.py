"""Caption tokenizers with one convention: fixed special ids, `[sot] words [eot] pad...` rows of int32.

`WordTokenizer` suits templated captions (every word is a known attribute value); `SubwordTokenizer`
trains a BPE or WordPiece model on a dataset's own captions with HuggingFace `tokenizers`. Both save
to and load from JSON so a checkpoint can carry the exact vocabulary it was trained with.

BERT's special tokens map onto this convention: [CLS] is `<sot>` (position 0 of every row, whose
feature the fusion model reads as its CLS), [SEP] is `<eot>`, [PAD] is `<pad>`. [MASK] (for masked
language modelling) is optional: built with `mask_token=True`, a tokenizer appends `<mask>` as its
*last* id, so every other id, and a vocabulary saved without it, stay as they were.
"""

from __future__ import annotations

import abc
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<sot>", "<eot>", "<unk>")  # in id order
MASK_TOKEN = "<mask>"  # optional, appended after the vocabulary (see the module doc)
TOKENIZER_KINDS = ("word", "bpe", "wordpiece")
SUBWORD_ALGORITHMS = ("bpe", "wordpiece")

_WORD_RE = re.compile(r"\w+|[^\w\s]")

Texts = str | bytes | Iterable[str | bytes]


def split_words(text: str) -> list[str]:
    """Lowercase words and punctuation marks of a caption, in order."""
    return _WORD_RE.findall(text.lower())


def as_strings(texts: Texts) -> list[str]:
    """A caption or a batch of captions (str, bytes or a numpy string array) as a list of str."""
    if isinstance(texts, str | bytes):
        texts = [texts]
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]


def frame_ids(rows: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """`[sot] ids [eot]` per row, truncated so eot always fits, right-padded with pad: int32 (n, max_len)."""
    if max_len < 2:
        raise ValueError(f"max_len={max_len} is invalid: must be >= 2 (room for sot and eot)")
    out = np.full((len(rows), max_len), PAD_ID, np.int32)
    for row, ids in zip(out, rows, strict=True):
        body = list(ids)[: max_len - 2]
        row[: len(body) + 2] = [BOS_ID, *body, EOS_ID]
    return out


def content_ids(row: Iterable[int]) -> list[int]:
    """The ids between sot and the first eot (pad and sot dropped)."""
    ids = []
    for token in row:
        token = int(token)
        if token == EOS_ID:
            break
        if token not in (PAD_ID, BOS_ID):
            ids.append(token)
    return ids


class Tokenizer(abc.ABC):
    """Shared encode/decode/save; subclasses map a caption to content ids and back."""

    kind: str
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    cls_id, sep_id = BOS_ID, EOS_ID  # BERT's [CLS] and [SEP]

    @property
    def mask_id(self) -> int | None:
        """Id of [MASK] (`<mask>`, the last id) when built with `mask_token=True`, else None."""
        return None

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that are not words: pad, sot ([CLS]), eot ([SEP]), unk and, if present, [MASK]."""
        extra = () if self.mask_id is None else (self.mask_id,)
        return (PAD_ID, BOS_ID, EOS_ID, UNK_ID, *extra)

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abc.abstractmethod
    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Content ids (no special tokens) of each caption."""

    @abc.abstractmethod
    def _text(self, ids: list[int]) -> str:
        """The caption of a list of content ids."""

    @abc.abstractmethod
    def to_json(self) -> dict:
        """JSON-serialisable description, including `kind`."""

    def encode(self, texts: Texts, max_len: int) -> np.ndarray:
        """Token rows `[sot] ... [eot] pad...` of shape (n, max_len), int32; long captions are truncated."""
        return frame_ids(self._ids(as_strings(texts)), max_len)

    def decode(self, tokens: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
        """Captions of token rows (special tokens removed, reading stops at eot)."""
        return [self._text(content_ids(row)) for row in np.atleast_2d(np.asarray(tokens))]

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON."""
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer written by `save` (of this class, or of any kind when called on the base)."""
        tokenizer = tokenizer_from_json(json.loads(Path(path).read_text()))
        if not isinstance(tokenizer, cls):
            raise ValueError(f"{path} holds a {tokenizer.kind!r} tokenizer, not a {cls.__name__}")
        return tokenizer


class WordTokenizer(Tokenizer):
    """Word-level vocabulary: one id per lowercase word or punctuation mark, unknown words map to unk."""

    kind = "word"

    def __init__(self, words: Sequence[str], mask_token: bool = False):
        self.words = tuple(words)
        self.mask_token = bool(mask_token)
        if MASK_TOKEN in self.words:
            raise ValueError(f"{MASK_TOKEN!r} is a special token, not a word")
        self._index = {w: i + len(SPECIAL_TOKENS) for i, w in enumerate(self.words)}
        self._tokens = SPECIAL_TOKENS + self.words + ((MASK_TOKEN,) if self.mask_token else ())

    @classmethod
    def build(cls, captions: Texts, *, min_count: int = 1, max_size: int | None = None,
              mask_token: bool = False) -> WordTokenizer:
        """Vocabulary of the words in `captions`, most frequent first (ties alphabetical, so reproducible);
        with `mask_token`, [MASK] after them."""
        counts = Counter(w for text in as_strings(captions) for w in split_words(text))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words[:max_size], mask_token=mask_token)

    @property
    def mask_id(self) -> int | None:
        """Id of [MASK] (the last id) when built with `mask_token=True`, else None."""
        return len(self._tokens) - 1 if self.mask_token else None

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self._tokens)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [[self._index.get(w, UNK_ID) for w in split_words(t)] for t in texts]

    def _text(self, ids: list[int]) -> str:
        return " ".join(self._tokens[i] for i in ids)

    def to_json(self) -> dict:
        """JSON-serialisable description, including `kind`."""
        out = {"kind": self.kind, "words": list(self.words)}
        return {**out, "mask_token": True} if self.mask_token else out


class SubwordTokenizer(Tokenizer):
    """A HuggingFace BPE or WordPiece model trained on captions, with this module's special ids."""

    kind = "subword"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
        if ids != list(range(len(SPECIAL_TOKENS))):
            raise ValueError(f"special tokens {SPECIAL_TOKENS} must have ids 0..3, got {ids}")

    @property
    def mask_id(self) -> int | None:
        """Id of [MASK] (the last id) when trained with `mask_token=True`, else None."""
        return self.tokenizer.token_to_id(MASK_TOKEN)

    @classmethod
    def train(cls, captions: Texts, *, vocab_size: int = 1000, algorithm: str = "bpe",
              mask_token: bool = False) -> SubwordTokenizer:
        """Train a lowercase BPE (metaspace-separated) or WordPiece model with at most `vocab_size` ids;
        with `mask_token`, [MASK] is added after them (one more id)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

        if algorithm not in SUBWORD_ALGORITHMS:
            raise ValueError(f"algorithm={algorithm!r} is invalid: allowed {', '.join(SUBWORD_ALGORITHMS)}")
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size={vocab_size} is invalid: must exceed {len(SPECIAL_TOKENS)}")
        # The trainers put special tokens first, in list order, which pins them to ids 0..3.
        options = dict(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        if algorithm == "bpe":
            # Metaspace keeps word boundaries inside the tokens, so decode restores the spacing exactly.
            tokenizer = HFTokenizer(models.BPE(unk_token="<unk>"))
            tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
            tokenizer.decoder = decoders.Metaspace()
            trainer = trainers.BpeTrainer(**options)
        else:
            tokenizer = HFTokenizer(models.WordPiece(unk_token="<unk>"))
            tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
            tokenizer.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(**options)
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.train_from_iterator(as_strings(captions), trainer)
        if mask_token:
            tokenizer.add_special_tokens([MASK_TOKEN])  # appended: the last id
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.tokenizer.get_vocab_size()

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def to_json(self) -> dict:
        """JSON-serialisable description, including `kind`."""
        return {"kind": self.kind, "tokenizer": json.loads(self.tokenizer.to_str())}


def tokenizer_from_json(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.to_json()` output."""
    kind = data.get("kind")
    if kind == WordTokenizer.kind:
        return WordTokenizer(data["words"], mask_token=data.get("mask_token", False))
    if kind == SubwordTokenizer.kind:
        from tokenizers import Tokenizer as HFTokenizer

        return SubwordTokenizer(HFTokenizer.from_str(json.dumps(data["tokenizer"])))
    raise ValueError(f"tokenizer kind={kind!r} is invalid: allowed word, subword")


def make_tokenizer(kind: str, captions: Texts, **kwargs) -> Tokenizer:
    """Build a tokenizer of `kind` ("word", "bpe" or "wordpiece") from a dataset's captions; kwargs go to
    `WordTokenizer.build` or `SubwordTokenizer.train` (e.g. `mask_token=True` for MLM)."""
    if kind == "word":
        return WordTokenizer.build(captions, **kwargs)
    if kind in SUBWORD_ALGORITHMS:
        return SubwordTokenizer.train(captions, algorithm=kind, **kwargs)
    raise ValueError(f"tokenizer kind={kind!r} is invalid: allowed {', '.join(TOKENIZER_KINDS)}")
