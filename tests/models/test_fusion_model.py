"""ALBEF-style fusion model (Li et al. 2021, arXiv 2107.07651): shapes of every method, where the image
reaches, the padding mask, the tied MLM head, the ViT token output, the paper variant's size, bad configs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.configs.common import ConfigError
from mmjax.configs.fusion import FusionConfig, fusion_config
from mmjax.losses.fusion import mlm_loss
from mmjax.models.fusion import Fusion, FusionTextModel, build_fusion, clamp_temp
from mmjax.models.two_tower import build_two_tower
from mmjax.models.vit import ViT

B, V, L = 4, 20, 8
WI, WT, E = 32, 24, 16  # image width != text width: the cross-attention maps between them
VIT = dict(patch_size=4, width=WI, depth=1, num_heads=2)
TXT = dict(vocab_size=V, max_len=10, width=WT, depth=1, fusion_layers=1, num_heads=2)
P = (16 // 4) ** 2  # patches of a 16 px image
LENGTHS = np.array([8, 5, 3, 2])  # real tokens per row, the rest padding (id 0)
# the rbg PRNG compiles param init much faster than threefry on CPU
KEY = jax.random.key(0, impl="rbg")


def _images(seed=0, size=16):
    return jax.random.normal(jax.random.key(seed), (B, size, size, 3))


def _tokens(seed=0, length=L):
    """Right-padded rows `1 ids... 2 0...` with LENGTHS real tokens, content ids in 4..V-1."""
    tok = np.random.default_rng(seed).integers(4, V, (B, length))
    tok[:, 0] = 1
    tok[np.arange(B), LENGTHS - 1] = 2
    tok[np.arange(length)[None, :] >= LENGTHS[:, None]] = 0
    return jnp.asarray(tok, jnp.int32)


REAL = np.arange(L)[None, :] < LENGTHS[:, None]  # (B, L) non-padding positions


@pytest.fixture(scope="module")
def fusion():
    model = build_fusion("vit", VIT, TXT, embed_dim=E)
    return model, jax.jit(model.init)(KEY, _images(), _tokens())


def _methods(model, v, images, tokens, mask=None):
    """Every method's output, composed as a trainer would."""
    tok_i = model.apply(v, images, method=Fusion.image_tokens)
    tok_t = model.apply(v, tokens, method=Fusion.text_tokens)
    fused = model.apply(v, tok_t, tokens != 0 if mask is None else mask, tok_i, method=Fusion.fuse)
    return dict(tok_i=tok_i, tok_t=tok_t, fused=fused,
                img=model.apply(v, tok_i, method=Fusion.image_feature),
                txt=model.apply(v, tok_t, method=Fusion.text_feature),
                itm=model.apply(v, fused, method=Fusion.itm_logits),
                mlm=model.apply(v, fused, method=Fusion.mlm_logits),
                temp=model.apply(v, method=Fusion.temp), call=model.apply(v, images, tokens))


def test_every_method_shape_and_call_equals_methods(fusion):
    model, v = fusion
    out = jax.jit(lambda v, x, t: _methods(model, v, x, t))(v, _images(), _tokens())
    chex.assert_shape(out["tok_i"], (B, 1 + P, WI))
    chex.assert_shape([out["tok_t"], out["fused"]], (B, L, WT))
    chex.assert_shape([out["img"], out["txt"]], (B, E))
    chex.assert_shape(out["itm"], (B, 2))
    chex.assert_shape(out["mlm"], (B, L, V))
    chex.assert_tree_all_finite(out)
    for z in (out["img"], out["txt"]):
        np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["temp"], 0.07, rtol=1e-6)
    for name in ("img", "txt", "itm", "mlm", "temp"):
        np.testing.assert_allclose(out["call"][name], out[name], atol=1e-6, err_msg=name)
    # the temperature is clamped to ALBEF's [0.001, 0.5] where used, and clamp_temp clamps the param
    for raw, clamped in ((2.0, 0.5), (1e-5, 0.001), (0.2, 0.2)):
        p = {**v["params"], "temp": jnp.float32(raw)}
        np.testing.assert_allclose(model.apply({"params": p}, method=Fusion.temp), clamped, rtol=1e-6)
        np.testing.assert_allclose(clamp_temp(p, model)["temp"], clamped, rtol=1e-6)
    # bfloat16 compute: float32 params, towers' tokens in bfloat16, ITC/ITM/MLM outputs in float32
    bf16 = build_fusion("vit", {**VIT, "dtype": jnp.bfloat16}, {**TXT, "dtype": jnp.bfloat16}, embed_dim=E)
    shapes = jax.eval_shape(lambda v, x, t: _methods(bf16, v, x, t), v, _images(), _tokens())
    assert shapes["tok_i"].dtype == shapes["fused"].dtype == jnp.bfloat16
    assert {shapes[k].dtype for k in ("img", "txt", "itm", "mlm")} == {jnp.dtype(jnp.float32)}
    params = jax.eval_shape(bf16.init, KEY, _images(), _tokens())
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}


def test_image_reaches_the_fused_cls_but_not_the_unimodal_text_feature(fusion):
    model, v = fusion
    run = jax.jit(lambda x: model.apply(v, x, _tokens()))
    a, b = run(_images(0)), run(_images(1))
    assert np.abs(a["itm"] - b["itm"]).min() > 1e-4  # every row's ITM logits move with its image
    assert not np.allclose(a["mlm"], b["mlm"], atol=1e-4)
    assert not np.allclose(a["img"], b["img"], atol=1e-3)
    np.testing.assert_array_equal(a["txt"], b["txt"])  # ITC text feature: text-only layers


def test_padding_never_reaches_real_positions(fusion):
    model, v = fusion
    tok = _tokens()
    longer = jnp.pad(tok, ((0, 0), (0, 2)))  # two more padding tokens per row (max_len 10)
    noise = 3.0 * jax.random.normal(jax.random.key(5), (B, L, WT))

    def run(v):
        tok_i = model.apply(v, _images(), method=Fusion.image_tokens)
        tok_t = model.apply(v, tok, method=Fusion.text_tokens)
        # other features at the padding positions (as another id there would give), the same mask
        other = jnp.where(REAL[..., None], tok_t, noise)
        fused = [model.apply(v, t, m, tok_i, method=Fusion.fuse)
                 for t, m in ((tok_t, tok != 0), (other, tok != 0), (other, jnp.ones_like(tok, bool)))]
        long_text = model.apply(v, longer, method=Fusion.text_tokens)
        return tok_t, fused, long_text, model.apply(v, _images(), tok), model.apply(v, _images(), longer)

    tok_t, (fused, masked, unmasked), long_text, call, long_call = jax.jit(run)(v)
    np.testing.assert_allclose(masked[REAL], fused[REAL], atol=1e-5)
    # without the mask the same change does reach the real positions (the check above has teeth)
    assert not np.allclose(unmasked[REAL], fused[REAL], atol=1e-3)
    # appended padding (its mask derived from pad_id) changes nothing at the real positions
    np.testing.assert_allclose(long_text[:, :L][REAL], tok_t[REAL], atol=1e-5)
    np.testing.assert_allclose(long_call["mlm"][:, :L][REAL], call["mlm"][REAL], atol=1e-5)
    for name in ("txt", "itm", "img"):
        np.testing.assert_allclose(long_call[name], call[name], atol=1e-5, err_msg=name)


def test_mlm_head_is_tied_to_the_token_embedding(fusion):
    model, v = fusion
    text = v["params"]["text_model"]
    head = text["mlm_head"]
    assert set(head) == {"dense", "norm", "bias"} and head["bias"].shape == (V,)
    # the only (V, width) or (width, V) leaf of the whole model is the embedding table
    big = [jax.tree_util.keystr(k) for k, p in jax.tree_util.tree_flatten_with_path(v)[0]
           if sorted(p.shape) == sorted((V, WT))]
    assert big == ["['params']['text_model']['token_embed']['embedding']"]
    fused = jax.random.normal(jax.random.key(3), (B, L, WT))
    labels = jnp.where(REAL, _tokens(), -100)

    def loss(v):
        return mlm_loss(model.apply(v, fused, method=Fusion.mlm_logits), labels)

    logits, grads = jax.jit(lambda v: (model.apply(v, fused, method=Fusion.mlm_logits), jax.grad(loss)(v)))(v)
    # from fixed fused features the only path to the embedding is the tied output layer
    assert np.abs(grads["params"]["text_model"]["token_embed"]["embedding"]).max() > 1e-4
    # logits = LN(gelu(dense(x))) · Eᵀ + b
    d, n = head["dense"], head["norm"]
    h = jax.nn.gelu(fused @ d["kernel"] + d["bias"])
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / jnp.sqrt(var + 1e-6) * n["scale"] + n["bias"]
    np.testing.assert_allclose(logits, h @ text["token_embed"]["embedding"].T + head["bias"], atol=1e-4)


def test_vit_tokens_extend_the_unchanged_pooled_vit(fusion):
    model, v = fusion
    vit_params = {"params": v["params"]["image_tower"]}
    # the ViT's parameter tree is the two-tower one, as before the token output existed
    expected = {"cls", "pos_embed", "patch/kernel", "patch/bias", "encoder/final_norm/scale",
                "encoder/final_norm/bias", *(f"encoder/block0/{m}/{w}" for m in ("norm1", "norm2")
                                             for w in ("scale", "bias")),
                *(f"encoder/block0/attn/{m}/{w}" for m in ("query", "key", "value", "out")
                  for w in ("kernel", "bias")),
                *(f"encoder/block0/mlp/Dense_{i}/{w}" for i in (0, 1) for w in ("kernel", "bias"))}

    def paths(tree):
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {"/".join(str(k.key) for k in path) for path, _ in leaves}

    two_tower = build_two_tower("vit", "transformer", VIT, dict(vocab_size=V, width=WT), embed_dim=E)
    tt_params = jax.eval_shape(two_tower.init, KEY, _images(), _tokens())["params"]["image_tower"]
    assert paths(vit_params["params"]) == paths(tt_params) == expected
    cls_vit, mean_vit = ViT(**VIT), ViT(pool="mean", **VIT)
    mean_params = {"params": {**vit_params["params"], "pos_embed": vit_params["params"]["pos_embed"][:, 1:]}}
    mean_params["params"].pop("cls")

    def run(x):
        return (cls_vit.apply(vit_params, x), cls_vit.apply(vit_params, x, return_tokens=True),
                mean_vit.apply(mean_params, x), mean_vit.apply(mean_params, x, return_tokens=True),
                model.apply(v, x, method=Fusion.image_tokens))

    pooled, tokens, mean_pooled, mean_tokens, fusion_tokens = jax.jit(run)(_images())
    chex.assert_shape(tokens, (B, 1 + P, WI))
    chex.assert_shape(mean_tokens, (B, P, WI))
    np.testing.assert_array_equal(tokens[:, 0], pooled)
    np.testing.assert_allclose(mean_tokens.mean(1), mean_pooled, atol=1e-6)
    np.testing.assert_array_equal(fusion_tokens, tokens)


def _expected_albef_params(cfg: FusionConfig, vocab: int) -> dict[str, int]:
    """Parameter counts of the fusion model by part, from the architecture."""
    w, d, e = cfg.width, cfg.width, cfg.embed_dim  # ViT and text widths are both `width`

    def dense(n_in, n_out):
        return n_in * n_out + n_out

    def ln(n):
        return 2 * n

    def attention(n, n_kv):  # query and output n→n, key and value n_kv→n, all with biases
        return 2 * dense(n, n) + 2 * dense(n_kv, n)

    block = ln(d) + attention(d, d) + ln(d) + dense(d, 4 * d) + dense(4 * d, d)
    cross = ln(d) + attention(d, w)  # the cross-attention a fusion layer adds to a block
    patches = (cfg.image_size // cfg.patch) ** 2
    text_only = cfg.text_depth - cfg.fusion_layers
    return dict(
        vit=dense(cfg.patch ** 2 * 3, w) + w + (1 + patches) * w + cfg.depth * block + ln(w),
        embeddings=vocab * d + cfg.max_len * d,
        text_only=text_only * block + ln(d),
        fusion=cfg.fusion_layers * (block + cross) + ln(d),
        mlm=dense(d, d) + ln(d) + vocab,  # no output kernel: tied to the token embedding
        heads=dense(w, e) + dense(d, e) + dense(d, 2) + 1,  # ITC projections, ITM head, temperature
        cross=cfg.fusion_layers * cross,  # part of `fusion`
    )


def test_paper_variant_builds_albef_base_at_its_size():
    cfg = fusion_config("paper")
    assert (cfg.width, cfg.depth, cfg.heads, cfg.patch, cfg.image_size) == (768, 12, 12, 16, 256)
    assert (cfg.text_depth, cfg.fusion_layers, cfg.vocab_size, cfg.embed_dim) == (12, 6, 30522, 256)
    assert (cfg.queue_size, cfg.momentum, cfg.alpha, cfg.mask_prob) == (65536, 0.995, 0.4, 0.15)
    model = build_fusion(cfg.image_tower, cfg.image_kwargs(), cfg.text_kwargs(cfg.vocab_size),
                         embed_dim=cfg.embed_dim)
    images = jax.ShapeDtypeStruct((2, cfg.image_size, cfg.image_size, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((2, cfg.max_len), jnp.int32)
    out, params = jax.eval_shape(model.init_with_output, KEY, images, tokens)
    assert out["mlm"].shape == (2, cfg.max_len, 30522) and out["itm"].shape == (2, 2)
    p, t = params["params"], params["params"]["text_model"]

    def count(*trees):
        return sum(x.size for x in jax.tree.leaves(trees))

    parts = _expected_albef_params(cfg, cfg.vocab_size)
    assert count(p["image_tower"]) == parts["vit"]  # ViT-B/16 at 256 px: 85.8 M
    assert count(t["token_embed"], t["pos_embed"]) == parts["embeddings"]
    assert count(t["encoder"]) == parts["text_only"]
    assert count(t["fusion"]) == parts["fusion"]
    assert count(t["mlm_head"]) == parts["mlm"]
    assert count(p["image_proj"], p["text_proj"], p["itm_head"], p["temp"]) == parts["heads"]
    total = count(p)
    assert total == sum(parts.values()) - parts["cross"]
    assert 14.1e6 < parts["cross"] < 14.2e6  # 6 cross-attention layers of 2.36 M
    # ALBEF-base is ViT-B/16 (86 M) + BERT-base (110 M) + 6 cross-attention layers (14 M) ≈ 210 M;
    # here without BERT's pooler, token-type and 512 position embeddings, plus pre-LN's final norms
    assert 205e6 < total < 212e6, total


@pytest.mark.parametrize("fields, message", [
    (dict(image_tower="resnet18"), r"^image_tower='resnet18' is invalid: allowed for the fusion model: vit$"),
    (dict(image_tower="clip"), r"^image_tower='clip' is invalid: allowed for the fusion model: vit$"),
    (dict(text_tower="text_cnn"), r"^text_tower='text_cnn' is invalid: .*transformer$"),
    (dict(image_pool="mean"), r"^image_pool='mean' is invalid: .*cls$"),
    (dict(causal=True), r"^causal=True is invalid: .*bidirectional"),
    (dict(text_depth=4, fusion_layers=5), r"^fusion_layers=5 is invalid: must be in 1..text_depth-1=3"),
    (dict(text_depth=4, fusion_layers=4), r"^fusion_layers=4 is invalid"),
    (dict(fusion_layers=0), r"^fusion_layers=0 is invalid: must be a positive integer$"),
    (dict(queue_size=100), r"^queue_size=100 is invalid: must be a positive multiple of batch=64$"),
    (dict(queue_size=32), r"^queue_size=32 is invalid: must be a positive multiple of batch=64$"),
    (dict(mask_prob=0.0), r"^mask_prob=0.0 is invalid: must be in \(0, 1\)$"),
    (dict(mask_prob=1.0), r"^mask_prob=1.0 is invalid: must be in \(0, 1\)$"),
    (dict(momentum=1.0), r"^momentum=1.0 is invalid: must be in \[0, 1\)$"),
    (dict(momentum=-0.1), r"^momentum=-0.1 is invalid: must be in \[0, 1\)$"),
    (dict(alpha=1.5), r"^alpha=1.5 is invalid: must be in \[0, 1\]$"),
])
def test_bad_configs_raise_one_line(fields, message):
    with pytest.raises(ConfigError, match=message) as err:
        FusionConfig(**fields)
    assert "\n" not in str(err.value)


def test_good_configs_and_model_level_errors():
    assert FusionConfig(queue_size=128, batch=64).queue_size == 128
    assert fusion_config("paper", queue_size=1024, batch=512).queue_size == 1024
    with pytest.raises(ConfigError, match=r"^variant='huge' is invalid: allowed: tiny, paper$"):
        fusion_config("huge")
    with pytest.raises(ValueError, match=r"image_tower='resnet18'.*expected one of 'vit'$"):
        build_fusion("resnet18")
    with pytest.raises(ValueError, match=r"image_tower=ViT is invalid.*pool=\"cls\""):
        build_fusion("vit", {"pool": "mean"}, {"vocab_size": V})
    with pytest.raises(ValueError, match="causal=True is invalid"):
        FusionTextModel(vocab_size=V, causal=True)
    with pytest.raises(ValueError, match="fusion_layers=0 is invalid"):
        FusionTextModel(vocab_size=V, fusion_layers=0)
