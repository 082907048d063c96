"""Two-tower model: output shapes, pooling, causal and padding masks, the two-tower heads and temperature."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.models.resnet import ResNet, resnet18, resnet50
from mmjax.models.text import TextCNN, TextTransformer
from mmjax.models.two_tower import TwoTower, build_two_tower, make_tower
from mmjax.models.vit import ViT

B, V = 4, 20
VIT = dict(patch_size=4, width=32, depth=1, num_heads=2)
TXT = dict(vocab_size=V, max_len=10, width=32, depth=1, num_heads=2)
# the rbg PRNG compiles param init ~7x faster than threefry on CPU, which dominates these tests
KEY = jax.random.key(0, impl="rbg")


def _images(seed=0, size=16):
    return jax.random.normal(jax.random.key(seed), (B, size, size, 3))


def _tokens(seed=0, length=6, lengths=(6, 4, 3, 1)):
    """Right-padded tokens in 1..V-1 (0 = padding), row i holding lengths[i] real tokens."""
    tok = np.random.default_rng(seed).integers(1, V, (B, length))
    tok[np.arange(length)[None, :] >= np.asarray(lengths)[:, None]] = 0
    return jnp.asarray(tok, jnp.int32)


@pytest.fixture(scope="module")
def clip_model():
    """A tiny ViT + Transformer two-tower and its params; one init compile serves the tower tests too."""
    model = build_two_tower("vit", "transformer", VIT, TXT, embed_dim=16)
    return model, jax.jit(model.init)(KEY, _images(), _tokens())


def _tower_params(clip_model, tower):
    return {"params": clip_model[1]["params"][tower]}


def _shapes(module, x):
    """Output and params as ShapeDtypeStructs, traced but never compiled."""
    out, params = jax.eval_shape(lambda x: module.init_with_output(KEY, x), x)
    return out, params["params"]


def test_vit_shapes_and_pooling_differ(clip_model):
    cls_params = _tower_params(clip_model, "image_tower")
    # the mean-pooled ViT has the same params minus the CLS token and its position
    p = {k: v for k, v in cls_params["params"].items() if k != "cls"}
    mean_params = {"params": {**p, "pos_embed": p["pos_embed"][:, 1:]}}

    def pooled(images):
        cls = ViT(pool="cls", **VIT).apply(cls_params, images)
        return cls, ViT(pool="mean", **VIT).apply(mean_params, images)

    outs = jax.jit(pooled)(_images())
    chex.assert_shape(outs, (B, 32))
    chex.assert_tree_all_finite(outs)
    assert not np.allclose(outs[0], outs[1], atol=1e-3)
    with pytest.raises(ValueError, match="pool='max'.*'cls', 'mean'"):
        ViT(pool="max")


def test_resnet_shapes():
    out, _ = _shapes(resnet18(width=8, small_input=True), _images())
    assert out.shape == (B, 64)
    out, _ = _shapes(ResNet(stage_sizes=(1, 1), width=8, num_outputs=10), _images())
    assert out.shape == (B, 10)
    # at width 64, torchvision's ResNet-18/50 without the classifier: 11.18 M / 23.51 M params
    for net, channels, n_params in [(resnet18(), 512, 11_176_512), (resnet50(), 2048, 23_508_032)]:
        out, params = _shapes(net, _images(size=32))
        assert out.shape == (B, channels)
        assert sum(p.size for p in jax.tree.leaves(params)) == n_params
    with pytest.raises(ValueError, match="block='wide'"):
        ResNet(stage_sizes=(1,), block="wide")


def test_text_tower_shapes():
    for pool in ("eot", "mean"):
        out, _ = _shapes(TextTransformer(pool=pool, **TXT), _tokens())
        assert out.shape == (B, 32)
    with pytest.raises(ValueError, match="pool='cls'.*'eot', 'mean'"):
        TextTransformer(vocab_size=V, pool="cls")
    with pytest.raises(ValueError, match="length 11 > max_len=10"):
        _shapes(TextTransformer(**TXT), _tokens(length=11))


@pytest.mark.parametrize(
    "length, widths, flat", [(24, (25, 50, 100), 3 * 100), (32, (25, 50, 100, 200), 2 * 200)]
)
def test_text_cnn_adds_blocks_while_map_at_least_4_wide(length, widths, flat):
    tokens = _tokens(length=length, lengths=(length,) * B)
    out, p = _shapes(TextCNN(vocab_size=V, num_outputs=7), tokens)
    assert out.shape == (B, 7)
    assert p["onehot_kernel"].shape == (V, 128)
    assert tuple(p[f"PatchConv_{i}"]["Dense_0"]["kernel"].shape[-1] for i in range(len(widths))) == widths
    assert f"PatchConv_{len(widths)}" not in p
    assert p["Dense_0"]["kernel"].shape == (flat, 7)


def test_causal_transformer_ignores_later_tokens(clip_model):
    params = _tower_params(clip_model, "text_tower")
    tok = _tokens(lengths=(6,) * B)
    later = tok.at[:, 3:].set((tok[:, 3:] % (V - 1)) + 1)  # still non-padding, but different

    def features(tokens):
        # same params, with and without the causal mask; both token batches in one pass
        return [
            TextTransformer(causal=causal, **TXT).apply(params, tokens, method=TextTransformer.token_features)
            for causal in (True, False)
        ]

    for causal, feats in zip((True, False), jax.jit(features)(jnp.concatenate([tok, later])), strict=True):
        a, b = feats[:B], feats[B:]
        assert np.allclose(a[:, :3], b[:, :3], atol=1e-6) == causal
        assert not np.allclose(a[:, 3:], b[:, 3:], atol=1e-3)


def test_pooling_ignores_appended_padding(clip_model):
    params = _tower_params(clip_model, "text_tower")
    variants = [("eot", True), ("eot", False), ("mean", True), ("mean", False)]

    def pooled(tok):
        # one compile for all variants: the params do not depend on the pooling or the mask
        out = {}
        for pool, causal in variants:
            model = TextTransformer(pool=pool, causal=causal, **TXT)
            long = model.apply(params, jnp.pad(tok, ((0, 0), (0, 4))))
            feats = model.apply(params, tok, method=TextTransformer.token_features)
            out[pool, causal] = model.apply(params, tok), long, feats
        return out

    lengths = jnp.array([6, 4, 3, 1])
    real = jnp.arange(6)[None, :, None] < lengths[:, None, None]
    for (pool, _), (short, long, feats) in jax.jit(pooled)(_tokens()).items():
        np.testing.assert_allclose(short, long, atol=1e-5)
        if pool == "eot":
            # the eot feature is the one at the last real token
            np.testing.assert_allclose(short, feats[jnp.arange(B), lengths - 1], atol=1e-6)
        else:
            np.testing.assert_allclose(short, jnp.where(real, feats, 0).sum(1) / lengths[:, None], atol=1e-5)


def test_two_tower_embeddings_and_single_towers(clip_model):
    model, params = clip_model

    def embed(images, tokens):
        return (
            model.apply(params, images, tokens),
            model.apply(params, images, method=TwoTower.encode_image),
            model.apply(params, tokens, method=TwoTower.encode_text),
        )

    out, img, txt = jax.jit(embed)(_images(), _tokens())
    chex.assert_shape([out["img"], out["txt"]], (B, 16))
    for z in (out["img"], out["txt"]):
        np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(img, out["img"], atol=1e-6)
    np.testing.assert_allclose(txt, out["txt"], atol=1e-6)
    np.testing.assert_allclose(out["logit_scale"], 1 / 0.07, rtol=1e-5)
    np.testing.assert_allclose(out["logit_bias"], -10.0)


def test_temperature_is_clamped_at_100(clip_model):
    model, params = clip_model
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.float32(10.0) if "logit_scale" in jax.tree_util.keystr(path) else x, params
    )
    assert params["params"]["logit_scale"] == 10.0
    scale, bias = model.apply(params, method=TwoTower.temperature)
    np.testing.assert_allclose(scale, 100.0, rtol=1e-5)
    assert bias == -10.0


def test_bfloat16_compute_keeps_float32_params(clip_model):
    bf16 = jnp.bfloat16
    cnn_tokens = _tokens(length=16)
    vit_bf16 = TwoTower(ViT(**VIT, dtype=bf16), TextTransformer(**TXT, dtype=bf16), embed_dim=16)
    resnet = ResNet(stage_sizes=(1, 1), width=8, small_input=True, dtype=bf16)
    resnet_bf16 = TwoTower(resnet, TextCNN(vocab_size=V, dtype=bf16), embed_dim=16)
    for model, tokens in [(vit_bf16, _tokens()), (resnet_bf16, cnn_tokens)]:
        params = jax.eval_shape(model.init, KEY, _images(), tokens)
        assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        image_out = _shapes(model.image_tower, _images())[0]
        text_out = _shapes(model.text_tower, tokens)[0]
        assert image_out.dtype == text_out.dtype == bf16

    def embed(images, tokens, cnn_tokens):
        # the dtype only changes the compute, so the float32 model's params serve the bf16 one
        vit_out = vit_bf16.apply(clip_model[1], images, tokens)
        return vit_out, resnet_bf16.init_with_output(KEY, images, cnn_tokens)[0]

    for out in jax.jit(embed)(_images(), _tokens(), cnn_tokens):
        assert out["img"].dtype == out["txt"].dtype == jnp.float32
        chex.assert_tree_all_finite(out)
        np.testing.assert_allclose(jnp.linalg.norm(out["img"], axis=-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(jnp.linalg.norm(out["txt"], axis=-1), 1.0, atol=1e-5)


def test_unknown_tower_names_raise():
    allowed = "'vit', 'resnet18', 'resnet50', 'transformer', 'text_cnn'$"
    with pytest.raises(ValueError, match=f"name='clip' is invalid: expected one of {allowed}"):
        make_tower("clip")
    with pytest.raises(ValueError, match="image_tower='transformer'.*'vit', 'resnet18', 'resnet50'$"):
        build_two_tower(image_tower="transformer")
    with pytest.raises(ValueError, match="text_tower='bert'.*'transformer', 'text_cnn'$"):
        build_two_tower(text_tower="bert")
    assert isinstance(make_tower("text_cnn", vocab_size=V), TextCNN)


def test_sgd_on_clip_loss_decreases_it(clip_model):
    model, params = clip_model
    images, tokens = _images(), _tokens()

    def loss_fn(params):
        out = model.apply(params, images, tokens)
        logits = out["logit_scale"] * out["img"] @ out["txt"].T
        labels = jnp.arange(B)
        xent = optax.softmax_cross_entropy_with_integer_labels
        return 0.5 * (xent(logits, labels).mean() + xent(logits.T, labels).mean())

    opt = optax.sgd(0.05)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    state, p, losses = opt.init(params), params, []
    for _ in range(5):
        p, state, loss = step(p, state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.1, losses
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, p)
    assert moved["params"]["image_tower"]["patch"]["kernel"]
    assert moved["params"]["text_tower"]["token_embed"]["embedding"]
    assert moved["params"]["logit_scale"]
