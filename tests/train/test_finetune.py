"""Fine-tuning a pre-trained fusion model (mmjax.train.finetune) on the one loop: the tokenizer extension,
the parameter transplant, model selection on val, the warm start, the unimodal input ablations,
resumption and bad input as one line."""

import json
import types

import jax
import numpy as np
import pytest

from mmjax.cli import main
from mmjax.configs.common import ConfigError
from mmjax.configs.finetune import FinetuneConfig
from mmjax.configs.fusion import FusionConfig
from mmjax.data.tokenizer import SPECIAL_TOKENS, WordTokenizer, make_tokenizer
from mmjax.train import finetune
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.finetune import best_on_val, extend_tokenizer, transplant
from mmjax.train.fusion import make_trainer as make_fusion_trainer
from mmjax.train.loop import evaluate_workdir, load_data, train_and_evaluate


def test_extend_tokenizer_keeps_every_old_id_and_mask_stays_last():
    tok = WordTokenizer(["a", "red", "square"], mask_token=True)
    out, source = extend_tokenizer(tok, ["is", "a", "red", "what", "is"])
    assert out.words == ("a", "red", "square", "is", "what") and out.mask_id == out.vocab_size - 1
    n = len(SPECIAL_TOKENS)
    np.testing.assert_array_equal(source, [*range(n + 3), -1, -1, tok.mask_id])
    old = tok.encode(["a red square"], 8)
    np.testing.assert_array_equal(out.encode(["a red square"], 8), old)  # old texts keep their ids
    assert out.encode(["what is"], 4)[0, 1:3].tolist() == [n + 4, n + 3]
    same, ident = extend_tokenizer(tok, ["red", "a"])
    assert same is tok and (ident == np.arange(tok.vocab_size)).all()
    sub = make_tokenizer("bpe", ["a red square", "a blue circle"] * 20, vocab_size=60)
    kept, ident = extend_tokenizer(sub, ["what"])  # subwords spell new words with their pieces
    assert kept is sub and len(ident) == sub.vocab_size


def test_transplant_copies_leaves_and_maps_embedding_rows():
    rng = np.random.default_rng(0)
    pre = {"text_model": {"token_embed": {"embedding": rng.normal(size=(5, 3))},
                          "w": rng.normal(size=(2,))},
           "itm_head": {"kernel": rng.normal(size=(3, 2))}}  # not in the classifier: left behind
    fresh = {"text_model": {"token_embed": {"embedding": rng.normal(size=(7, 3)).astype(np.float32)},
                            "w": np.zeros(2, np.float32)}}
    source = np.array([0, 1, 2, 3, -1, -1, 4])  # two new words, [MASK] (old id 4) last
    out = transplant(fresh, pre, source)
    emb = out["text_model"]["token_embed"]["embedding"]
    np.testing.assert_array_equal(emb[[0, 1, 2, 3, 6]], pre["text_model"]["token_embed"]["embedding"].astype(
        np.float32)[[0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(emb[4:6], fresh["text_model"]["token_embed"]["embedding"][4:6])
    np.testing.assert_array_equal(out["text_model"]["w"], pre["text_model"]["w"].astype(np.float32))
    assert set(out) == {"text_model"} and emb.dtype == np.float32
    with pytest.raises(ValueError, match="lack /text_model/v"):
        transplant({"text_model": {"v": np.zeros(1)}}, pre, source)
    with pytest.raises(ValueError, match=r"/text_model/w has shape \(2,\), the model \(3,\)"):
        transplant({"text_model": {"w": np.zeros(3)}}, pre, source)


def test_best_on_val_selects_on_val_only():
    rows = [{"step": 10, "loss": 1.0}, {"step": 100, "val/accuracy": 0.6, "test/accuracy": 0.9},
            {"step": 200, "val/accuracy": 0.8, "test/accuracy": 0.5, "test/colour/accuracy": 0.4},
            {"step": 300, "val/accuracy": 0.8, "test/accuracy": 0.7}]
    assert best_on_val(rows) == {"step": 200, "val/accuracy": 0.8, "test/accuracy": 0.5,
                                 "test/colour/accuracy": 0.4}
    with pytest.raises(ValueError, match="no evaluation logged"):
        best_on_val(rows[:1])


@pytest.mark.parametrize("argv, message", [
    (["--task", "qa", "--from", "/nonexistent/run"],
     "pretrained='/nonexistent/run' is invalid: no config.json"),
    (["--task", "qa", "--from", "X", "--set", "lr=0"], "lr=0.0 is invalid: must be > 0"),
    (["--task", "pairs", "--from", "X", "--set", "types=,"], "types=() is invalid: must name at least one"),
    (["--task", "qa", "--from", "X", "--set", "init=random"],
     "init='random' is invalid: allowed: pretrained"),
    (["--task", "qa", "--from", "X", "--set", "steps=10", "--set", "warmup_steps=10"],
     "warmup_steps=10 is invalid: must be in [0, steps=10)"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("X", str(tmp_path / "missing")) for a in argv]
    assert main(["finetune", *argv, "--workdir", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("X", str(tmp_path / "missing")) in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "ft").exists()


def test_a_two_tower_workdir_is_refused(tmp_path, capsys):
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"kind": "clip"}))
    argv = ["finetune", "--task", "qa", "--from", str(tmp_path / "clip"), "--workdir", str(tmp_path / "f")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "it holds a clip run; fine-tuning needs a fusion one" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------------ training

PRE = FusionConfig(dataset="generated", num_train=256, num_eval=64, image_size=16, patch=8, width=16, depth=1,
                   heads=2, embed_dim=16, max_len=12, batch=16, steps=4, warmup_steps=1, lr=2e-3,
                   text_depth=2, fusion_layers=1, queue_size=32, log_every=1, eval_every=100, ckpt_every=4,
                   keep=1,
                   final_eval=False, evals=("retrieval",))
COLOURS = {"red": (230, 30, 30), "blue": (30, 60, 240)}


def _fake_task(n: int, seed: int):
    """"is it red" / "is it blue" about a uniformly red or blue image; yes when it matches: neither the
    text nor the image alone tells the answer."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    colour, asked = rng.integers(0, 2, n), rng.integers(0, 2, n)
    images = np.stack([np.broadcast_to(np.array(COLOURS[names[c]], np.uint8), (16, 16, 3)) for c in colour])
    text = np.array([f"is it {names[a]}" for a in asked])
    return {"image": images, "text": text, "label": (colour == asked).astype(np.int32),
            "type": np.zeros(n, np.int32)}


FAKE = types.SimpleNamespace(splits={"train": _fake_task(512, 0), "val": _fake_task(128, 1),
                                     "test": _fake_task(128, 2)},
                             labels=("no", "yes"), types=("colour",), words=("is", "it", "red", "blue"))


@pytest.fixture
def fake_task(monkeypatch):
    monkeypatch.setattr(finetune, "task_data_config", lambda cfg, image_size: ("fake", cfg.task, image_size))
    monkeypatch.setattr(finetune, "_task_data", lambda tcfg: FAKE)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pre")
    train_and_evaluate(PRE, workdir, progress=False)
    return workdir


@pytest.mark.slow  # a fusion pre-training compile and two classifier compiles (about 1.5 min on 2 cores)
def test_finetune_warm_starts_trains_resumes_and_ablates_inputs(tmp_path, pretrained, fake_task):
    cfg = FinetuneConfig(task="qa", pretrained=str(pretrained), batch=32, steps=60, warmup_steps=5, lr=2e-3,
                         log_every=10, eval_every=30, ckpt_every=30, num_train=512, num_val=128, num_test=128)
    # The warm start: every fusion parameter the classifier has is the pre-trained one; new words' rows fresh.
    (tmp_path / "full").mkdir()
    data = load_data(cfg, tmp_path / "full")
    assert set(FAKE.words) - {"is", "it"} <= set(data.tokenizer.words)
    trainer = finetune.make_trainer(cfg, data.tokenizer.vocab_size)
    state = trainer.warm_start(trainer.init(jax.random.key(cfg.seed)))
    old_tok = load_data(PRE, pretrained).tokenizer
    restored = Checkpointer(pretrained / "checkpoints", 4, 1).restore_latest(
        make_fusion_trainer(PRE, old_tok.vocab_size, for_training=False).abstract_state())
    pre_params = jax.device_get(restored[1]["train"].params["params"])
    fusion = jax.device_get(state["train"].params["params"]["fusion"])
    vit = fusion["image_tower"]
    jax.tree.map(np.testing.assert_array_equal, vit, pre_params["image_tower"])
    old_emb = pre_params["text_model"]["token_embed"]["embedding"]
    new_emb = fusion["text_model"]["token_embed"]["embedding"]
    ids = [data.tokenizer.encode([w], 4)[0, 1] for w in ("red", "blue")]
    for w, i in zip(("red", "blue"), ids, strict=True):  # words of the pre-training captions keep their rows
        j = old_tok.encode([w], 4)[0, 1]
        assert j != old_tok.unk_id, w
        np.testing.assert_array_equal(new_emb[i], old_emb[j])
    # Task words the pre-training never saw are appended (after the old words; [MASK] moves last).
    new = [w for w in FAKE.words if old_tok.encode([w], 4)[0, 1] == old_tok.unk_id]
    assert new, "the fake task should bring at least one new word"
    for w in new:
        assert data.tokenizer.encode([w], 4)[0, 1] >= old_emb.shape[0] - 1, w
    assert "itm_head" not in fusion and "head_out" in state["train"].params["params"]

    # Training on the loop: the matched/not-matched question needs both modalities, and is learned.
    full = train_and_evaluate(cfg, tmp_path / "full", progress=False)
    assert full["val/accuracy"] > 0.9 and full["test/accuracy"] > 0.9, full
    # Resumption: stop at 30, continue, equal bit for bit (state and logged metrics).
    train_and_evaluate(cfg, tmp_path / "resumed", progress=False, stop_after=30)
    resumed = train_and_evaluate(cfg, tmp_path / "resumed", progress=False)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed["state"]),
                 jax.device_get(full["state"]))
    rows = lambda d: (d / "metrics.jsonl").read_text().splitlines()
    assert rows(tmp_path / "resumed") == rows(tmp_path / "full")
    assert evaluate_workdir(tmp_path / "full")["test/accuracy"] == pytest.approx(full["test/accuracy"])

    # Text only: every image the same constant, so the answer is at chance (the labels are balanced).
    text_only = train_and_evaluate(FinetuneConfig(**{**cfg.__dict__, "inputs": "text"}), tmp_path / "text",
                                   progress=False)
    assert text_only["test/accuracy"] < 0.65, text_only


def test_finetune_config_json_round_trip():
    from mmjax.train.trainer import config_from_json, config_to_json

    cfg = FinetuneConfig(task="pairs", pretrained="runs/x", inputs="image", steps=5, warmup_steps=1)
    assert config_from_json(json.loads(json.dumps(config_to_json(cfg)))) == cfg
    with pytest.raises(ConfigError, match="task='vqa' is invalid: allowed: qa, pairs, entailment"):
        FinetuneConfig(task="vqa")


def test_an_unknown_task_type_is_one_line_before_anything_is_built(tmp_path, capsys):
    from mmjax.train.trainer import config_to_json

    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "config.json").write_text(json.dumps(config_to_json(PRE)))
    WordTokenizer(["a"], mask_token=True).save(pre / "tokenizer.json")
    argv = ["finetune", "--task", "pairs", "--from", str(pre), "--workdir", str(tmp_path / "ft"),
            "--set", "types=count_colour,count_colours"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "statement_types=" in err and "count_colours" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "ft").exists()
