"""Evaluators: small plug-ins chosen by name in a config's `evals`, in the pattern of big_vision's
`Evaluator(predict_fn, **kw).run(train_state)`.

An evaluator is built once per run from the trainer's *predict functions* (jitted functions of the
model's variables, named below), the run's evaluation data and its own settings; `run(variables)`
returns a dict of float metrics. The loop calls `run_evaluators` at each evaluation, whatever the model:
a trainer only names the predict functions it offers, and a config the evaluators it wants.

Predict functions (each takes the model variables first):

- `embed_image(v, images) -> (B, d)` and `embed_text(v, tokens) -> (B, d)`: unit-norm embeddings (the
  two-tower model's; the fusion model's unimodal ITC features);
- `temperature(v) -> ()`: the ITC temperature τ (fusion);
- `itm_logits(v, images, tokens) -> (B, 2)`: ITM logits, column 1 = matched (fusion);
- `mlm_logits(v, images, tokens) -> (B, L, V)`: MLM logits of (masked) tokens fused with the images.
- `task_logits(v, images, tokens[, images2]) -> (B, n_classes)`: a fine-tuned classifier's logits.

The data is duck-typed (`mmjax.train.loop.Data`): `eval` and `probe` (training rows, or None) are dicts
of arrays with `image`, `tokens` and label columns; `tasks` maps a label column to its tokenized
zero-shot prompts (or None: probes only); `attributes` maps a label column to the value word of each
label (the words a caption names, for MLM); `tokenizer` is the run's tokenizer.

Evaluators of one round share a cache, so the eval set is embedded once however many evaluators read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.eval import gap, probes, retrieval, zeroshot
from mmjax.losses.fusion import IGNORE_INDEX, mask_tokens, sample_hard_negatives

IMAGE_KEY, TOKENS_KEY = "image", "tokens"
PredictFns = Mapping[str, Callable[..., Any]]


def batched(fn: Callable, variables: Any, *arrays: np.ndarray, batch: int = 256,
            pad_small: bool = False) -> np.ndarray:
    """`fn(variables, *rows)` over whole arrays, `batch` rows at a time, as one numpy array.

    The last batch is padded to full size (repeating the last row), so every call has one shape and
    compiles once; the padding rows are cut from the result. Fewer than `batch` rows run as they are
    (one call of their own shape) unless `pad_small`, which pads them to `batch` too: for callers
    whose row counts vary from call to call.
    """
    n = len(arrays[0])
    pad = -n % batch if n > batch or pad_small else 0
    padded = [np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x for x in arrays]
    out = [np.asarray(fn(variables, *(x[i: i + batch] for x in padded))) for i in range(0, n + pad, batch)]
    return np.concatenate(out)[:n]


def _task_prefix(name: str) -> str:
    return "" if name == "label" else f"{name}/"


def _task_means(out: dict[str, float], kind: str, tasks: Sequence[str]) -> dict[str, float]:
    """`<kind>/mean/<metric>`: the mean over tasks of each per-task `<kind>/<task>/<metric>` (2+ tasks)."""
    means = {}
    if len(tasks) < 2:
        return means
    metrics = dict.fromkeys(k.split("/")[2] for k in out if k.startswith(f"{kind}/") and k.count("/") == 2)
    for metric in metrics:
        per_task = [out[f"{kind}/{t}/{metric}"] for t in tasks if f"{kind}/{t}/{metric}" in out]
        if len(per_task) > 1:
            means[f"{kind}/mean/{metric}"] = float(np.mean(per_task))
    return means


class Evaluator:
    """Base: `Evaluator(predict_fns, data, **settings).run(variables) -> {metric: float}`."""

    name: str = ""
    needs: tuple[str, ...] = ()  # the predict functions it calls

    def __init__(self, predict_fns: PredictFns, data: Any, *, seed: int = 0, batch: int = 256, **settings):
        missing = [n for n in self.needs if n not in predict_fns]
        if missing:
            raise ValueError(f"evaluator {self.name!r} needs predict functions {missing}; the trainer offers "
                             f"{sorted(predict_fns)}")
        self.fns, self.data, self.seed, self.batch = predict_fns, data, seed, batch
        self.settings = settings

    def run(self, variables: Any, cache: dict | None = None) -> dict[str, float]:
        """The metrics of `variables`; `cache` is shared by the evaluators of one round."""
        raise NotImplementedError

    def embeddings(self, variables: Any, cache: dict | None, split: str = "eval",
                   images: bool = True, texts: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Image and text embeddings of a split (`eval` or `probe`), computed once per round."""
        cache = {} if cache is None else cache
        rows = getattr(self.data, split)
        out = []
        for want, key, fn in ((images, IMAGE_KEY, "embed_image"), (texts, TOKENS_KEY, "embed_text")):
            if not want:
                out.append(None)
                continue
            if (split, key) not in cache:
                cache[(split, key)] = batched(self.fns[fn], variables, rows[key], batch=self.batch)
            out.append(cache[(split, key)])
        return out[0], out[1]


class RetrievalEvaluator(Evaluator):
    """Image→text and text→image Recall@1/5/10 on the eval pairs (`i2t_R@k`, `t2i_R@k`)."""

    name, needs = "retrieval", ("embed_image", "embed_text")

    def run(self, variables, cache=None):
        img, txt = self.embeddings(variables, cache)
        return {k: float(v) for k, v in retrieval.retrieval_recall(img, txt).items()}


class GapEvaluator(Evaluator):
    """Modality-gap metrics of the eval embeddings (`gap/<metric>`)."""

    name, needs = "gap", ("embed_image", "embed_text")

    def run(self, variables, cache=None):
        img, txt = self.embeddings(variables, cache)
        return {f"gap/{k}": float(v) for k, v in gap.gap_metrics(img, txt).items()}


class ZeroShotEvaluator(Evaluator):
    """Zero-shot top-1/top-5 per task with prompts (`zeroshot/top1` for the task "label", else
    `zeroshot/<task>/top1`), and the mean over tasks (`zeroshot/mean/top1`)."""

    name, needs = "zeroshot", ("embed_image", "embed_text")

    def run(self, variables, cache=None):
        img, _ = self.embeddings(variables, cache, texts=False)
        out: dict[str, float] = {}
        for name, prompts in self.data.tasks.items():
            if prompts is None:
                continue
            n_cls, n_tpl, length = prompts.shape
            prompt_emb = batched(self.fns["embed_text"], variables, prompts.reshape(-1, length),
                                 batch=self.batch)
            classes = zeroshot.class_embeddings(prompt_emb.reshape(n_cls, n_tpl, -1))
            acc = zeroshot.zero_shot_accuracy(img, classes, self.data.eval[name], topk=(1, 5))
            out.update({f"zeroshot/{_task_prefix(name)}{k}": float(v) for k, v in acc.items()})
        return {**out, **_task_means(out, "zeroshot", list(self.data.tasks))}


class ProbeEvaluator(Evaluator):
    """Linear and k-shot probes of the image embeddings per task, trained on the probe rows
    (`probe/linear`, `probe/<k>shot`, or `probe/<task>/...`), and the means over tasks."""

    name, needs = "probe", ("embed_image",)

    def run(self, variables, cache=None):
        if self.data.probe is None or not self.data.tasks:
            return {}
        shots = self.settings.get("shots", 5)
        img, _ = self.embeddings(variables, cache, texts=False)
        train_img, _ = self.embeddings(variables, cache, "probe", texts=False)
        out: dict[str, float] = {}
        for name in self.data.tasks:
            prefix, labels, train_labels = _task_prefix(name), self.data.eval[name], self.data.probe[name]
            n_cls = int(max(labels.max(), train_labels.max())) + 1
            out[f"probe/{prefix}linear"] = float(
                probes.linear_probe(train_img, train_labels, img, labels, n_cls))
            out[f"probe/{prefix}{shots}shot"] = float(probes.k_shot_probe(
                jax.random.key(self.seed), train_img, train_labels, img, labels, n_cls, shots))
        return {**out, **_task_means(out, "probe", list(self.data.tasks))}


def _same_description(data: Any) -> np.ndarray:
    """(N, N) True where either eval caption describes either image: the two rows carry the same value of
    every attribute column, or, when the data names no attributes (an image–text source), the same
    caption tokens."""
    names = [a for a in getattr(data, "attributes", {}) if a in data.eval]
    if names:
        labels = np.stack([np.asarray(data.eval[a]) for a in names], 1)
    else:
        labels = np.asarray(data.eval[TOKENS_KEY])
    return (labels[:, None, :] == labels[None, :, :]).all(-1)


@jax.jit
def _hard_negatives(key, img, txt, temp, excluded):
    sim = img @ txt.T / temp
    # A row whose caption fits another image equally (same description) is no negative: drop it
    # (the diagonal stays: sample_hard_negatives removes the positive itself).
    off = excluded & ~jnp.eye(img.shape[0], dtype=bool)
    return sample_hard_negatives(key, jnp.where(off, -jnp.inf, sim), jnp.where(off.T, -jnp.inf, sim.T))


class ITMEvaluator(Evaluator):
    """Held-out image–text matching with hard negatives (ALBEF §3.2, ITM), as in training but over the
    whole eval set: each image gets one negative caption and each caption one negative image, drawn ∝
    softmax(s/τ) of the ITC similarities without the positive and without any row of the same description
    (every attribute equal, or for data that names no attributes the same caption tokens): those
    captions are true matches.

    `itm/accuracy` is over all 3N pairs as the training metric (a constant "not matched" scores 2/3);
    `itm/pos_accuracy`, `itm/neg_accuracy` are the accuracies on the N positives and the 2N negatives, and
    `itm/balanced_accuracy` their mean (0.5 at chance, whatever the constant). `itm/auc` is the chance
    that a positive pair's matched-margin (logit 1 − logit 0) beats a negative pair's (ties count half):
    0.5 at chance, free of the head's threshold (which 1 positive : 2 negatives in training tilts).
    """

    name, needs = "itm", ("embed_image", "embed_text", "temperature", "itm_logits")

    def run(self, variables, cache=None):
        img, txt = self.embeddings(variables, cache)
        images, tokens = self.data.eval[IMAGE_KEY], self.data.eval[TOKENS_KEY]
        excluded = _same_description(self.data)
        neg_txt, neg_img = (np.asarray(x) for x in _hard_negatives(
            jax.random.key(self.seed), img, txt, self.fns["temperature"](variables), excluded))
        itm = lambda *rows: batched(self.fns["itm_logits"], variables, *rows, batch=self.batch,
                                    pad_small=True)
        pos, with_neg_txt, with_neg_img = itm(images, tokens), itm(images, tokens[neg_txt]), itm(
            images[neg_img], tokens)
        right_pos = pos.argmax(-1) == 1
        right_neg = np.concatenate([with_neg_txt.argmax(-1) == 0, with_neg_img.argmax(-1) == 0])
        acc_pos, acc_neg = float(right_pos.mean()), float(right_neg.mean())
        margin = lambda x: x[:, 1].astype(np.float64) - x[:, 0]
        return {"itm/accuracy": float(np.concatenate([right_pos, right_neg]).mean()),
                "itm/pos_accuracy": acc_pos, "itm/neg_accuracy": acc_neg,
                "itm/balanced_accuracy": 0.5 * (acc_pos + acc_neg),
                "itm/auc": _auc(margin(pos), np.concatenate([margin(with_neg_txt), margin(with_neg_img)]))}


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive's score > a negative's) + P(equal) / 2 over all (positive, negative) pairs."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _find(row: np.ndarray, span: np.ndarray) -> int:
    """Index of the first occurrence of `span` in `row`, or -1."""
    n = len(span)
    for i in range(1, len(row) - n + 1):  # position 0 is <sot>
        if (row[i: i + n] == span).all():
            return i
    return -1


def _position_majority(tokens: np.ndarray, excluded: Sequence[int]) -> np.ndarray:
    """(L,) the most frequent token of the rows at each position, among ids not in `excluded`
    (ties to the smaller id; `IGNORE_INDEX` where a position holds none)."""
    out = np.full(tokens.shape[1], IGNORE_INDEX, np.int64)
    for p in range(tokens.shape[1]):
        col = tokens[:, p][~np.isin(tokens[:, p], excluded)]
        if col.size:
            ids, counts = np.unique(col, return_counts=True)
            out[p] = ids[np.argmax(counts)]
    return out


class MLMEvaluator(Evaluator):
    """Held-out masked language modelling (ALBEF §3.2, MLM) against word-frequency baselines.

    1. BERT masking as in training (`mask_prob`, 80/10/10, fixed key): `mlm/accuracy` over the chosen
       tokens, and `mlm/position_majority`, the accuracy of predicting at each position the most
       frequent word of the training captions there.
    2. Attribute words, when the data names them (`attributes`): for each attribute, its value word
       (all of its tokens) is replaced by [MASK] in every eval caption that names it and predicted from
       the rest of the caption and the image; a word is right when all its tokens are.
       `mlm/<attr>/accuracy`; the baselines `mlm/<attr>/majority` (always the attribute's most frequent
       value in the training captions) and `mlm/<attr>/position_majority` (the most frequent training
       token at each masked position); pooled over the attributes' masked words as
       `mlm/attributes/...`. The text alone cannot tell an independent attribute's value, so beating
       the majority needs the image.

    Settings: `mask_prob` (0.15) and `mask_id` (the data's tokenizer's by default).
    """

    name, needs = "mlm", ("mlm_logits",)

    def __init__(self, predict_fns, data, **kw):
        super().__init__(predict_fns, data, **kw)
        tok = data.tokenizer
        self.mask_id = self.settings.get("mask_id", tok.mask_id)
        if self.mask_id is None:
            raise ValueError("evaluator 'mlm' needs a tokenizer with a [MASK] id (mask_token=True)")
        self.special, self.vocab = tuple(tok.special_ids), tok.vocab_size
        self.mask_prob = self.settings.get("mask_prob", 0.15)
        self.train = data.probe if data.probe is not None else data.eval  # the baselines' counts
        self.pos_major = _position_majority(self.train[TOKENS_KEY], self.special)
        self.words = {a: m for a in getattr(data, "attributes", {}) if (m := self._mask_attribute(a))}

    def _mask_attribute(self, attr: str) -> tuple | None:
        """(rows naming `attr`, their masked tokens, labels, majority-value right per row), or None."""
        if attr not in self.data.eval:
            return None
        tok, tokens, values = self.data.tokenizer, self.data.eval[TOKENS_KEY], self.data.eval[attr]
        spans = [tok.encode(w, tokens.shape[1])[0] for w in self.data.attributes[attr]]
        spans = [s[(s != tok.pad_id) & (s != tok.bos_id) & (s != tok.eos_id)] for s in spans]
        rows, masked, labels = [], [], []
        for r, (row, value) in enumerate(zip(tokens, values, strict=True)):
            span = spans[int(value)]
            at = _find(row, span) if len(span) else -1
            if at < 0:
                continue  # the caption does not name it (dropped, or cut by max_len)
            m, lab = row.copy(), np.full_like(row, IGNORE_INDEX)
            m[at: at + len(span)], lab[at: at + len(span)] = self.mask_id, span
            rows.append(r)
            masked.append(m)
            labels.append(lab)
        if not rows:
            return None
        train_values = np.asarray(self.train[attr] if attr in self.train else values)
        majority = int(np.bincount(train_values).argmax())
        rows = np.asarray(rows)
        return rows, np.stack(masked), np.stack(labels), np.asarray(values)[rows] == majority

    def _predict(self, variables, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        fn = self.fns["mlm_logits"]
        # Every call padded to `batch` rows: the attributes' row counts differ, the compiled shape not.
        return batched(lambda v, im, tk: jnp.argmax(fn(v, im, tk), -1), variables,
                       self.data.eval[IMAGE_KEY][rows], tokens, batch=self.batch, pad_small=True)

    def run(self, variables, cache=None):
        tokens = self.data.eval[TOKENS_KEY]
        masked, labels = (np.asarray(x) for x in mask_tokens(
            jax.random.key(self.seed), jnp.asarray(tokens), vocab_size=self.vocab, special_ids=self.special,
            pad_id=self.data.tokenizer.pad_id, mask_id=self.mask_id, mask_prob=self.mask_prob))
        valid = labels != IGNORE_INDEX
        pred = self._predict(variables, np.arange(len(tokens)), masked)
        by_position = np.broadcast_to(self.pos_major, labels.shape)
        out = {"mlm/accuracy": (pred == labels)[valid].mean() if valid.any() else 0.0,
               "mlm/position_majority": (by_position == labels)[valid].mean() if valid.any() else 0.0}
        pooled = {"accuracy": [], "majority": [], "position_majority": []}
        for attr, (rows, attr_masked, attr_labels, majority_right) in self.words.items():
            valid = attr_labels != IGNORE_INDEX
            pred = self._predict(variables, rows, attr_masked)
            by_position = np.broadcast_to(self.pos_major, attr_labels.shape)
            # A word is right when every one of its tokens is.
            right = {"accuracy": ((pred == attr_labels) | ~valid).all(1), "majority": majority_right,
                     "position_majority": ((by_position == attr_labels) | ~valid).all(1)}
            for k, v in right.items():
                out[f"mlm/{attr}/{k}"] = v.mean()
                pooled[k].append(v)
        if self.words:
            out.update({f"mlm/attributes/{k}": np.concatenate(v).mean() for k, v in pooled.items()})
        return {k: float(v) for k, v in out.items()}


class TaskEvaluator(Evaluator):
    """Accuracy of a fine-tuned classifier on each evaluation split (`mmjax.train.finetune`):
    `<split>/accuracy` and `<split>/<type>/accuracy` for each question / statement / hypothesis type,
    over the data's `splits` (val and test), with `task_logits(v, image, tokens[, image2]) -> (B, n_classes)`.

    The data names `splits` (split → columns `image`, `tokens`, `label`, `type`, and `image2` for image
    pairs) and `types` (the type names).
    """

    name, needs = "task", ("task_logits",)

    def run(self, variables, cache=None):
        out: dict[str, float] = {}
        for split, rows in self.data.splits.items():
            inputs = [rows[IMAGE_KEY], rows[TOKENS_KEY]] + ([rows["image2"]] if "image2" in rows else [])
            pred = batched(self.fns["task_logits"], variables, *inputs, batch=self.batch).argmax(-1)
            right = pred == np.asarray(rows["label"])
            out[f"{split}/accuracy"] = float(right.mean())
            for t, name in enumerate(self.data.types):
                of_type = np.asarray(rows["type"]) == t
                if of_type.any():
                    out[f"{split}/{name}/accuracy"] = float(right[of_type].mean())
        return out


EVALUATORS: dict[str, type[Evaluator]] = {
    e.name: e for e in (RetrievalEvaluator, GapEvaluator, ZeroShotEvaluator, ProbeEvaluator, ITMEvaluator,
                        MLMEvaluator, TaskEvaluator)}


def make_evaluators(names: Sequence[str], predict_fns: PredictFns, data: Any, **settings) -> list[Evaluator]:
    """The evaluators `names` (keys of `EVALUATORS`), each with `settings` (seed, batch, shots, ...)."""
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise ValueError(f"evals={list(names)} is invalid: unknown {unknown}; "
                         f"allowed: {', '.join(EVALUATORS)}")
    return [EVALUATORS[n](predict_fns, data, **settings) for n in names]


def run_evaluators(evaluators: Sequence[Evaluator], variables: Any) -> dict[str, float]:
    """Every evaluator's metrics on `variables` (one round: the eval set is embedded once)."""
    variables = jax.device_put(variables)  # once, not once per batch
    cache: dict = {}
    out: dict[str, float] = {}
    for ev in evaluators:
        out.update(ev.run(variables, cache))
    return out
