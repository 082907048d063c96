"""The ALBEF fusion trainer (Li et al. 2021, arXiv 2107.07651) on the one step and loop: 8 sharded devices
= 1 device (losses, parameters, momentum model, queues), bit-identical resumption, each structure
regularizer alone, the queue threaded through accumulation micro-batches in order, the evaluators, config
dispatch, and bad input as one line."""

import dataclasses
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import parallel
from mmjax.cli import load_train_config, main
from mmjax.configs.clip import ClipConfig
from mmjax.configs.common import ConfigError
from mmjax.configs.fusion import FusionConfig
from mmjax.eval.evaluators import ITMEvaluator, MLMEvaluator, make_evaluators
from mmjax.losses.fusion import enqueue
from mmjax.train.fusion import make_trainer
from mmjax.train.loop import check_workdir_config, evaluate_workdir, load_data, train_and_evaluate
from mmjax.train.step import init_state, make_train_step
from mmjax.train.trainer import config_from_json, config_to_json

VOCAB = 25  # ids 0-3 special, 4-23 words, 24 [MASK]
TINY = FusionConfig(image_size=16, patch=8, width=16, depth=1, heads=2, embed_dim=16, max_len=8, batch=16,
                    steps=10, warmup_steps=1, lr=1e-3, text_depth=2, fusion_layers=1, queue_size=32)
CONFIG = str(Path(__file__).resolve().parents[2] / "experiments" / "fusion_tiny.py")


def _batch(n: int, seed: int = 0) -> dict:
    """Random images and captions `<sot> words <eot> <pad>...` of 4 to 8 tokens (never [MASK])."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, VOCAB - 1, (n, TINY.max_len)).astype(np.int32)
    length = rng.integers(4, TINY.max_len + 1, n)
    pos = np.arange(TINY.max_len)[None, :]
    tokens[pos >= length[:, None]] = 0
    tokens[np.arange(n), length - 1] = 2
    tokens[:, 0] = 1
    return {"image": rng.uniform(0, 1, (n, 16, 16, 3)).astype(np.float32), "tokens": tokens}


def _run_steps(cfg: FusionConfig, mesh, n_steps: int = 2, history: list | None = None):
    """Metrics of `n_steps` steps and the final state (host copies); `history` gets every state."""
    trainer = make_trainer(cfg, VOCAB, mesh)
    state = trainer.init(jax.random.key(0))
    metrics = []
    for i in range(n_steps):
        if history is not None:
            history.append(jax.device_get(state))  # before the step donates it
        state, m = trainer.step(state, parallel.global_batch(_batch(cfg.batch, seed=i), trainer.mesh))
        metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
    return metrics, jax.device_get(state)


@pytest.fixture(scope="module")
def one_device():
    """Two steps of TINY on one device (compiled once, read by two tests), and the states before each."""
    history = []
    metrics, state = _run_steps(TINY, parallel.data_mesh(jax.devices()[:1]), history=history)
    return metrics, state, history


@pytest.mark.slow  # compiles the fusion step (about 40-50 s on 2 cores)
def test_step_trains_the_model_and_updates_momentum_and_queue(one_device):
    metrics, state, history = one_device
    for m in metrics:
        assert {"loss", "itc", "itm", "mlm", "itm_accuracy", "mlm_accuracy", "temp"} <= set(m)
        assert all(np.isfinite(v) for v in m.values())
        # loss = ITC + ITM + MLM (equal weights); the sum of three float32 terms rounds twice.
        parts = (m["itc"], m["itm"], m["mlm"])
        np.testing.assert_allclose(m["loss"], sum(parts), rtol=0,
                                   atol=4 * np.finfo(np.float32).eps * sum(map(abs, parts)))
    assert metrics[1]["loss"] != metrics[0]["loss"]
    # Two steps of B = 16 filled queue rows 0..31 (ptr wrapped to 0) with unit momentum features.
    mom = state["momentum"]
    assert int(mom["ptr"]) == 0 and int(state["train"].step) == 2
    np.testing.assert_allclose(np.linalg.norm(mom["img_queue"], axis=1), 1.0, rtol=1e-5)
    # The momentum model started as a copy and took one EMA step after each update:
    # θ_m = m²·θ_0 + m(1 − m)·θ_1 + (1 − m)·θ_2 (m = 0.995). Each step rounds m·θ_m and (1 − m)·θ and
    # their sum: within 3 float32 roundings of |θ| per step.
    m = TINY.momentum
    thetas = [h["train"].params for h in history] + [state["train"].params]
    assert jax.tree.all(jax.tree.map(np.array_equal, history[0]["momentum"]["params"], thetas[0]))
    for path_leaf, t0, t1, t2 in zip(jax.tree_util.tree_leaves_with_path(mom["params"]),
                                     *(jax.tree.leaves(t) for t in thetas), strict=True):
        path, got = path_leaf
        want = m * m * t0.astype(np.float64) + m * (1 - m) * t1 + (1 - m) * t2
        scale = np.maximum.reduce([np.abs(t0), np.abs(t1), np.abs(t2)])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-30 + 6 * np.finfo(np.float32).eps * scale.max(),
                                   err_msg=jax.tree_util.keystr(path))
    assert any((a != b).any() for a, b in zip(jax.tree.leaves(mom["params"]), jax.tree.leaves(thetas[0]),
                                              strict=True))
    temp = float(state["train"].params["params"]["temp"])
    assert temp != np.float32(0.07) and 0.001 <= temp <= 0.5  # trained (step 2; step 1's lr is 0), clamped


@pytest.mark.slow  # 30-50 s each on 2 cores: the default suite stays under 10 minutes
@pytest.mark.needs_8_devices
def test_step_on_8_devices_matches_1(one_device, adam_zero_gradient_atol):
    m1, s1, _ = one_device
    m8, s8 = _run_steps(TINY, parallel.data_mesh(jax.devices()[:8]))
    # Losses: each is a mean of non-negative per-row (ITC: B rows; ITM: 3B pairs) or per-masked-token
    # (MLM: at most B·L = 128) terms; splitting the batch over devices only reorders those sums, which
    # moves a sum of n non-negative float32 terms by at most 2(n − 1)·u relative (u = 2^-24): 1.5e-5 for
    # n = 128, 5.6e-6 for 48. The rows' own terms can differ by the reordered reductions inside each
    # row's forward pass (width 16: ≤ 16·u relative each). The second step also sees the first step's
    # parameter differences below. 2e-5 covers them all. The accuracies count argmaxes, which only a
    # near-tie could flip: at most one pair of the 3B = 48.
    for a, b in zip(m1, m8, strict=True):
        for k in ("loss", "itc", "itm", "mlm"):
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, err_msg=k)
        assert abs(a["itm_accuracy"] - b["itm_accuracy"]) <= 1 / 48 + 1e-7

    def close(tree1, tree8, what):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(tree1), jax.tree.leaves(tree8),
                                strict=True):
            name = what + jax.tree_util.keystr(path)
            # See test_clip.test_sharded_step_matches_single_device: attention key biases get exactly
            # zero gradient, so Adam turns float noise into steps of up to lr (adam_zero_gradient_atol);
            # any other parameter moves by lr·(g ± e)/|g ± e|-like steps, within 2e-5 while |g| > 50e.
            # The momentum model moves by (1 − m) of the same steps, so the same bounds hold for it.
            atol = adam_zero_gradient_atol(TINY, 2) if "['key']['bias']" in name else 2e-5
            np.testing.assert_allclose(b, a, atol=atol, err_msg=name)

    close(s1["train"].params, s8["train"].params, "params")
    close(s1["momentum"]["params"], s8["momentum"]["params"], "momentum")
    # The queues hold unit momentum features: step 1's from θ_m = θ_0 (the same in both runs: only
    # the forward pass's reordered sums differ, ≤ depth · width · u ≈ 1e-5 worst case through unit
    # LayerNorms), step 2's from momentum parameters that agree to (1 − m)·2e-5 = 1e-7.
    for q in ("img_queue", "txt_queue"):
        np.testing.assert_allclose(s8["momentum"][q], s1["momentum"][q], rtol=0, atol=2e-5, err_msg=q)
    assert int(s8["momentum"]["ptr"]) == int(s1["momentum"]["ptr"])


def test_carry_state_is_threaded_through_micro_batches_in_order():
    """make_train_step(carry_state=True): micro-batch i sees the state micro-batch i − 1 returned."""
    params = {"w": jnp.ones(())}
    opt = optax.sgd(0.1)

    def loss(p, seen, key, x):  # state: a running sum of the rows, and how many micro-batches ran
        return p["w"] * jnp.sum(x), ({"seen_sum": seen["sum"]}, {"sum": seen["sum"] + jnp.sum(x),
                                                                  "calls": seen["calls"] + 1})

    step = make_train_step(loss, opt, accum_steps=4, carry_state=True)
    x = jnp.arange(8.0)  # micro-batch i holds rows i and i + 4 (strided): sums 4, 6, 8, 10
    state, extra, metrics = step(init_state(params, opt), {"sum": jnp.zeros(()), "calls": jnp.int32(0)},
                                 jax.random.key(0), x)
    assert int(extra["calls"]) == 4 and float(extra["sum"]) == 28.0
    # The sums each micro-batch saw before it ran: 0, 4, 10, 18 (in order), averaged like any metric.
    assert float(metrics["seen_sum"]) == (0 + 4 + 10 + 18) / 4
    assert float(metrics["loss"]) == 28.0 / 4


@pytest.mark.slow  # 30-50 s each on 2 cores: the default suite stays under 10 minutes
def test_accumulation_enqueues_the_micro_batches_in_order():
    cfg = dataclasses.replace(TINY, accum_steps=2)
    trainer = make_trainer(cfg, VOCAB, parallel.data_mesh(jax.devices()[:1]))
    state = trainer.init(jax.random.key(0))
    start = jax.device_get(state["momentum"])
    batch = _batch(cfg.batch, 0)
    state, metrics = trainer.step(state, parallel.global_batch(batch, trainer.mesh))
    assert np.isfinite(float(metrics["loss"]))
    mom = jax.device_get(state["momentum"])
    # What two consecutive enqueues of the micro-batches (rows 0, 2, 4, ... then 1, 3, 5, ...) give, with
    # the momentum model's features at step 0 (the momentum model still equals the initial model).
    embed = trainer.predict_fns["embed_image"], trainer.predict_fns["embed_text"]
    want = {}
    for q, fn, key in (("img_queue", embed[0], "image"), ("txt_queue", embed[1], "tokens")):
        queue, ptr = jnp.asarray(start[q]), start["ptr"]
        for micro in (batch[key][0::2], batch[key][1::2]):
            queue, ptr = enqueue(queue, ptr, fn(start["params"], micro))
        want[q] = np.asarray(queue)
        # The same features compiled into another program: rounding of the reordered sums only.
        np.testing.assert_allclose(mom[q], want[q], rtol=0, atol=1e-5, err_msg=q)
        np.testing.assert_array_equal(mom[q][16:], start[q][16:])  # rows past 2 micro-batches untouched
    assert int(mom["ptr"]) == 16
    swapped = np.concatenate([want["img_queue"][8:16], want["img_queue"][:8]])
    assert np.abs(mom["img_queue"][:16] - swapped).max() > 0.1  # the order is visible


def _check_regularized(weights: dict, n_steps: int = 3) -> None:
    """`n_steps` steps with the regularizers of `weights`: finite, logged as reg/<name>, summed into the
    loss with their weights, and L_Sep's independent heads exactly when it is on."""
    cfg = dataclasses.replace(TINY, **weights)
    metrics, state = _run_steps(cfg, parallel.data_mesh(jax.devices()[:1]), n_steps)
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values()), m
        assert {k for k in m if k.startswith("reg/")} == {f"reg/{r}" for r in cfg.regularizers}
        assert all(m[f"reg/{r}"] != 0 for r in cfg.regularizers)
        parts = [m["itc"], m["itm"], m["mlm"], *(getattr(cfg, f"{r}_weight") * m[f"reg/{r}"]
                                                 for r in cfg.regularizers)]
        # n float32 terms added: at most n − 1 roundings of partial sums ≤ Σ|parts|, one per product.
        np.testing.assert_allclose(m["loss"], sum(parts), rtol=0,
                                   atol=2 * len(parts) * np.finfo(np.float32).eps * sum(map(abs, parts)))
    assert metrics[-1]["loss"] != metrics[0]["loss"]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
    assert ("image_ind_proj" in state["train"].params["params"]) == (cfg.sep_weight > 0)


@pytest.mark.slow  # 30-50 s each on 2 cores: the default suite stays under 10 minutes
@pytest.mark.parametrize("weights", [dict(sep_weight=1.0), dict(br_weight=1.0), dict(gc_weight=1.0)])
def test_each_regularizer_alone_trains_without_nan(weights):
    _check_regularized(weights)


# One more compile of the whole fusion step (25-60 s here). With `augment` the model and its momentum copy
# see one augmented view of each example (the two-tower augmentations), the regularizers' augmented view
# still being the momentum features.
@pytest.mark.slow
def test_all_regularizers_together_with_augmentation_train_without_nan():
    _check_regularized(dict(sep_weight=0.5, br_weight=2.0, gc_weight=1.5, br_sample_t=True, augment=True))


LOOP = FusionConfig(dataset="generated", num_train=256, num_eval=64, image_size=16, patch=8, width=16,
                    depth=1, heads=2, embed_dim=16, max_len=12, batch=16, steps=6, warmup_steps=1, lr=2e-3,
                    text_depth=2, fusion_layers=1, queue_size=32, log_every=1, eval_every=100, ckpt_every=3,
                    keep=2, final_eval=False)


@pytest.mark.slow  # 30-50 s each on 2 cores: the default suite stays under 10 minutes
def test_resumed_run_is_bit_identical_momentum_and_queue_included(tmp_path):
    trainer = make_trainer(LOOP, load_data(LOOP, tmp_path).tokenizer.vocab_size)
    full = train_and_evaluate(LOOP, tmp_path / "full", progress=False, trainer=trainer)
    first = train_and_evaluate(LOOP, tmp_path / "resumed", progress=False, trainer=trainer, stop_after=4)
    assert first["step"] == 4
    resumed = train_and_evaluate(LOOP, tmp_path / "resumed", progress=False, trainer=trainer)
    assert resumed["step"] == 6
    # The whole state: parameters, optimiser, momentum parameters, both queues and their pointer.
    assert set(full["state"]["momentum"]) == {"params", "img_queue", "txt_queue", "ptr"}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed["state"]),
                 jax.device_get(full["state"]))
    rows = lambda d: [json.loads(r) for r in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "resumed") == rows(tmp_path / "full")
    # `mmjax eval --workdir` on a fusion workdir: config.json names the kind, which rebuilds the fusion
    # config, trainer and every evaluator of its `evals`.
    stored = json.loads((tmp_path / "full" / "config.json").read_text())
    assert stored["kind"] == "fusion" and config_from_json(stored) == LOOP
    evaluated = evaluate_workdir(tmp_path / "full")
    assert evaluated["step"] == 6
    for key in ("zeroshot/top1", "i2t_R@1", "probe/linear", "gap/centroid_distance", "itm/accuracy",
                "itm/balanced_accuracy", "itm/auc", "mlm/accuracy", "mlm/colour/accuracy",
                "mlm/attributes/majority", "mlm/attributes/position_majority"):
        assert np.isfinite(evaluated[key]), key


def test_config_kind_dispatch_and_workdir_refusal(tmp_path):
    clip = ClipConfig()
    assert config_from_json(config_to_json(LOOP)) == LOOP and type(config_from_json(config_to_json(clip))) \
        is ClipConfig
    old = {k: v for k, v in config_to_json(clip).items() if k not in ("kind", "evals")}
    assert config_from_json(old) == clip  # a config.json from before `kind` and `evals`
    (tmp_path / "config.json").write_text(json.dumps(config_to_json(clip)))
    with pytest.raises(ConfigError, match="holds a clip run, not a fusion one"):
        check_workdir_config(tmp_path, LOOP)
    check_workdir_config(tmp_path, dataclasses.replace(clip, evals=("retrieval",)))  # evals: resumable
    with pytest.raises(ConfigError, match=r"evals='itm' is invalid: .* \(for clip\)"):
        ClipConfig(evals=("itm",))


class _Tokenizer:
    """Word ids: pad 0, sot 1, eot 2, unk 3, words 4.., [MASK] last."""

    pad_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, words):
        self.words = list(words)
        self.mask_id = len(words) + 4
        self.vocab_size = len(words) + 5
        self.special_ids = (0, 1, 2, 3, self.mask_id)

    def encode(self, text, max_len):
        ids = [1, *(self.words.index(w) + 4 for w in text.split()), 2]
        return np.asarray([ids + [0] * (max_len - len(ids))], np.int32)


def _attribute_data(n=40, seed=0):
    """Captions "a <colour> <shape>" of random attributes; image r holds the number r (for fake models)."""
    words = ["a", "red", "green", "blue", "square", "circle"]
    tok = _Tokenizer(words)
    rng = np.random.default_rng(seed)
    colour, shape = rng.integers(0, 3, n), rng.integers(0, 2, n)
    colour[: n // 2] = 0  # red is the majority colour
    tokens = np.concatenate([tok.encode(f"a {words[1 + c]} {words[4 + s]}", 6) for c, s in zip(
        colour, shape, strict=True)])
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 2, 2, 3)).copy()
    rows = {"image": images, "tokens": tokens, "colour": colour, "shape": shape}
    attributes = {"colour": ("red", "green", "blue"), "shape": ("square", "circle")}
    return types.SimpleNamespace(eval=rows, probe=rows, tasks={}, tokenizer=tok, attributes=attributes)


def test_mlm_evaluator_scores_masked_attribute_words_against_the_baselines():
    data = _attribute_data()
    tok = data.tokenizer
    red = 5  # id of "red"

    def always(word):  # a model that predicts `word` at every position, whatever it is shown
        return lambda v, images, tokens: jax.nn.one_hot(jnp.full(tokens.shape, word), tok.vocab_size)

    out = MLMEvaluator({"mlm_logits": always(red)}, data, batch=16).run(None)
    colour = data.eval["colour"]
    np.testing.assert_allclose(out["mlm/colour/accuracy"], np.mean(colour == 0))
    assert out["mlm/colour/accuracy"] == out["mlm/colour/majority"]  # red is the majority value
    assert out["mlm/shape/accuracy"] == 0.0 and out["mlm/colour/position_majority"] == out[
        "mlm/colour/majority"]  # position 2 always holds the colour; red is its commonest word

    def oracle(v, images, tokens):  # reads the true caption of the row its image names
        rows = images[:, 0, 0, 0].astype(jnp.int32)
        return jax.nn.one_hot(jnp.asarray(data.eval["tokens"])[rows], tok.vocab_size)

    out = MLMEvaluator({"mlm_logits": oracle}, data, batch=64).run(None)
    assert out["mlm/colour/accuracy"] == out["mlm/shape/accuracy"] == out["mlm/attributes/accuracy"] == 1.0
    assert out["mlm/accuracy"] == 1.0 and out["mlm/position_majority"] < 1.0
    assert out["mlm/attributes/majority"] < 1.0 and out["mlm/shape/majority"] == np.mean(
        data.eval["shape"] == np.bincount(data.eval["shape"]).argmax())


@pytest.mark.parametrize("named", [True, False], ids=["attributes", "tokens"])
def test_itm_evaluator_counts_and_never_draws_a_same_description_negative(named):
    data = _attribute_data(n=40)
    if not named:  # an image–text source without attribute columns: the same caption is the same description
        data.attributes = {}
    same = (data.eval["colour"][:, None] == data.eval["colour"][None]) & (
        data.eval["shape"][:, None] == data.eval["shape"][None])
    drawn = []

    def matched_when_described(v, images, tokens):  # "matched" exactly when the pair is a true match
        ids = images[:, 0, 0, 0].astype(jnp.int32)
        drawn.append(ids)
        return jnp.stack([jnp.zeros(len(ids)), jnp.ones(len(ids))], 1)

    emb = jax.nn.one_hot(data.eval["colour"] * 2 + data.eval["shape"], 16)  # same description: same row
    fns = {"embed_image": lambda v, x: emb[x[:, 0, 0, 0].astype(jnp.int32)],
           "embed_text": lambda v, t: emb,  # (one call: 40 rows < batch)
           "temperature": lambda v: jnp.float32(0.05), "itm_logits": matched_when_described}
    (ev,) = make_evaluators(("itm",), fns, data, batch=64)
    assert isinstance(ev, ITMEvaluator)
    out = ev.run(None)
    # Always "matched": every positive right, every negative wrong; 1 : 2 pairs.
    assert out["itm/pos_accuracy"] == 1.0 and out["itm/neg_accuracy"] == 0.0
    assert out["itm/balanced_accuracy"] == 0.5 and out["itm/auc"] == 0.5
    np.testing.assert_allclose(out["itm/accuracy"], 1 / 3)
    neg_img = np.asarray(drawn[2])[:40]  # the third call fuses each caption with its negative image
    assert not same[np.arange(40), neg_img].any()


@pytest.mark.parametrize("sets, message", [
    (["queue_size=100"], "queue_size=100 is invalid: must be a positive multiple of batch=64"),
    (["mask_prob=1.5"], "mask_prob=1.5 is invalid: must be in (0, 1)"),
    (["momentum=1.0"], "momentum=1.0 is invalid: must be in [0, 1)"),
    (["fusion_layers=3"], "fusion_layers=3 is invalid: must be in 1..text_depth-1=2"),
    (["image_tower=resnet18"], "image_tower='resnet18' is invalid: allowed for the fusion model: vit"),
    (["evals=itm,foo"], "evals='itm,foo' is invalid: must be distinct names from"),
    (["br_weight=1", "br_stop_gradient=true"], "br_stop_gradient=True is invalid: must be False"),
])
def test_bad_input_is_one_line(tmp_path, capsys, sets, message):
    argv = ["train", "--config", CONFIG, "--workdir", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "config.json").exists()


@pytest.mark.slow
def test_fusion_tiny_trains_resumes_and_evaluates(tmp_path):
    """experiments/fusion_tiny.py end to end (about 4 minutes here). Chance levels: ITM balanced accuracy
    and AUC 0.5; zero-shot mean over the scenes' attributes (4, 4, 2, 3, 3 values) 0.33; R@10 10/512."""
    workdir = tmp_path / "run"
    assert main(["train", "--config", CONFIG, "--workdir", str(workdir)]) == 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert last["step"] == load_train_config(CONFIG, {}).steps
    for k in ("itc", "itm", "mlm"):
        assert last[k] < first[k] - 0.1, k
    assert last["itm/auc"] > 0.65 and last["itm/balanced_accuracy"] > 0.58
    assert last["mlm/attributes/accuracy"] > last["mlm/attributes/majority"] + 0.2
    for attr in ("colour", "size", "background"):
        assert last[f"mlm/{attr}/accuracy"] > last[f"mlm/{attr}/majority"] + 0.2, attr
    assert last["zeroshot/mean/top1"] > 0.45 and min(last["i2t_R@10"], last["t2i_R@10"]) > 0.3
    # Rerunning resumes at the last checkpoint: nothing left to train, nothing logged twice.
    assert main(["train", "--config", CONFIG, "--workdir", str(workdir)]) == 0
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == len(rows)
    assert main(["eval", "--workdir", str(workdir)]) == 0
    evaluated = json.loads((workdir / "eval.json").read_text())
    assert evaluated["step"] == last["step"]
    for k in ("itm/auc", "mlm/attributes/accuracy", "zeroshot/mean/top1"):
        assert evaluated[k] == pytest.approx(last[k], abs=1e-6), k
