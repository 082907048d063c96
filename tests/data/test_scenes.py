"""Procedural scenes: rendering geometry, causal sampling, caption selection/perturbation and token layout."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.scenes import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    CONTINUOUS,
    DISCRETE,
    MARGIN,
    TEMPLATES,
    SceneConfig,
    caption_max_len,
    caption_strings,
    caption_tokens,
    captions,
    render,
    sample_factors,
    scene_tokenizer,
    scene_vocab,
)
from mmjax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

CFG = SceneConfig(image_size=32)
N = 4000  # one batch size for every statistical test, so each jitted function compiles once
FACTORS = sample_factors(jax.random.key(0), N, CFG)
ALL = jnp.ones(5, jnp.int32)
NONE = jnp.zeros(5, jnp.int32)


def scene(n: int, **values) -> dict[str, jax.Array]:
    """n copies of one mid-image scene (large red square at middle height), with some factors overridden."""
    base = dict(colour=0, shape=0, size=1, height=1, background=0, template=0, pos_x=0.5, pos_y=0.0,
                rotation=0.0)
    out = {}
    for name, default in base.items():
        value = jnp.broadcast_to(jnp.asarray(values.get(name, default)), (n,))
        out[name] = value.astype(jnp.float32 if name in CONTINUOUS else jnp.int32)
    return out


def object_mask(images: jax.Array, factors: dict[str, jax.Array], cfg: SceneConfig) -> np.ndarray:
    """Pixels that differ visibly from the background colour."""
    bg = np.asarray([BACKGROUND_RGB[cfg.backgrounds[b]] for b in np.asarray(factors["background"])])
    return np.abs(np.asarray(images) - bg[:, None, None, :]).max(-1) > 0.05


def reference_caption(template: int, values: dict[str, str], selected: tuple[int, ...]) -> str:
    """The caption spelled out from TEMPLATES in plain Python."""
    parts = [text.replace("{}", values[attr]) if attr else text for attr, text in TEMPLATES[template]
             if attr is None or selected[DISCRETE.index(attr)]]
    return " ".join(parts)


def test_sample_factors_dtypes_and_ranges():
    assert set(FACTORS) == {*DISCRETE, *CONTINUOUS, "template"}
    for name, n_values in zip(DISCRETE, CFG.n_values, strict=True):
        assert FACTORS[name].dtype == jnp.int32
        assert set(np.unique(FACTORS[name])) == set(range(n_values))
    assert set(np.unique(FACTORS["template"])) == set(range(len(TEMPLATES)))
    for name, (lo, hi) in {"pos_x": (0, 1), "pos_y": (-0.5, 0.5), "rotation": (0, 2 * math.pi)}.items():
        values = np.asarray(FACTORS[name])
        assert values.dtype == np.float32 and lo <= values.min() and values.max() < hi
        assert values.max() - values.min() > 0.9 * (hi - lo)


def test_render_shape_dtype_range_and_determinism():
    images = render(sample_factors(jax.random.key(1), 8, CFG), CFG)
    chex.assert_shape(images, (8, 32, 32, 3))
    assert images.dtype == jnp.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    again = render(sample_factors(jax.random.key(1), 8, CFG), CFG)
    np.testing.assert_array_equal(images, again)
    other = render(sample_factors(jax.random.key(2), 8, CFG), CFG)
    assert not np.allclose(images, other)


def test_colour_sets_the_object_colour():
    factors = scene(4, colour=jnp.arange(4))
    images = np.asarray(render(factors, CFG))
    mask = object_mask(images, factors, CFG)
    means = np.stack([images[i][mask[i]].mean(0) for i in range(4)])
    expected = np.asarray([COLOUR_RGB[c] for c in CFG.colours])
    np.testing.assert_allclose(means, expected, atol=0.06)  # edge pixels blend with the background
    assert np.min(np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(4)) > 0.3


def test_centroid_follows_pos_x_and_height():
    s = CFG.image_size
    span = 1 - 2 * MARGIN
    pos_x = jnp.asarray([0.0, 0.5, 1.0, 0.5, 0.5, 0.5])
    height = jnp.asarray([1, 1, 1, 0, 1, 2])
    factors = scene(6, pos_x=pos_x, height=height, shape=1)  # a circle: its centroid is its centre
    mask = object_mask(render(factors, CFG), factors, CFG)
    rows, cols = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5, indexing="ij")
    centroid_col = (mask * cols).sum((1, 2)) / mask.sum((1, 2))
    centroid_row = (mask * rows).sum((1, 2)) / mask.sum((1, 2))
    np.testing.assert_allclose(centroid_col[:3], (MARGIN + span * np.asarray(pos_x[:3])) * s, atol=0.3)
    band = span / 3
    expected_row = s - (MARGIN + band * (np.asarray(height[3:]) + 0.5)) * s  # rows count downwards
    np.testing.assert_allclose(centroid_row[3:], expected_row, atol=0.3)
    assert centroid_row[3] > centroid_row[4] > centroid_row[5]  # "high" is nearer the top


def test_square_is_symmetric_under_quarter_turns_only():
    rotation = 0.3 + jnp.asarray([0.0, math.pi / 2, math.pi / 4])
    images = np.asarray(render(scene(3, rotation=rotation, pos_x=0.37, pos_y=0.21), CFG))
    assert np.abs(images[0] - images[1]).max() < 1e-3
    assert np.abs(images[0] - images[2]).max() > 0.5


def test_antialias_softens_edges():
    factors = scene(2, rotation=jnp.asarray([0.2, 1.0]), shape=jnp.asarray([1, 2]))
    fg = np.asarray(COLOUR_RGB[CFG.colours[0]])
    bg = np.asarray(BACKGROUND_RGB[CFG.backgrounds[0]])
    # Per pixel, alpha = how far the pixel sits from the background towards the object colour.
    for softness, expect_soft in ((0.0, False), (2.0, True)):
        cfg = SceneConfig(image_size=32, antialias=softness)
        alpha = ((np.asarray(render(factors, cfg)) - bg) / (fg - bg)).mean(-1)
        partial = (alpha > 0.05) & (alpha < 0.95)
        assert partial.any() == expect_soft
        assert (alpha > 0.95).sum() > 20  # the object is there either way


def test_causal_mode_links_colour_to_position_and_size_to_height():
    def correlations(cfg: SceneConfig) -> tuple[float, float]:
        f = sample_factors(jax.random.key(3), N, cfg)
        return (np.corrcoef(f["pos_x"], f["colour"])[0, 1], np.corrcoef(f["height"], f["size"])[0, 1])

    independent = correlations(CFG)
    causal = correlations(SceneConfig(image_size=32, causal=True))
    assert max(abs(c) for c in independent) < 0.06  # about 4 standard errors at N = 4000
    assert min(causal) > 0.5


def test_full_captions_state_every_value_in_template_order():
    tokens, record = caption_tokens(jax.random.key(4), FACTORS, CFG, ALL, NONE)
    texts = caption_strings(tokens, CFG)
    for i in range(0, N, 97):
        values = {f: CFG.values(f)[int(FACTORS[f][i])] for f in DISCRETE}
        assert texts[i] == reference_caption(int(FACTORS["template"][i]), values, (1,) * 5)
    assert not np.asarray(record["dropped"]).any() and not np.asarray(record["changed"]).any()
    np.testing.assert_array_equal(record["text_values"], np.stack([FACTORS[f] for f in DISCRETE], -1))


@pytest.mark.parametrize("selected", [(1, 0, 0, 0, 0), (1, 0, 1, 0, 1), (0, 1, 1, 1, 0), (0, 0, 0, 0, 0)])
def test_selection_drops_whole_phrases(selected):
    tokens, record = caption_tokens(jax.random.key(5), FACTORS, CFG, jnp.asarray(selected), NONE)
    texts = caption_strings(tokens, CFG)
    for i in range(0, N, 131):
        values = {f: CFG.values(f)[int(FACTORS[f][i])] for f in DISCRETE}
        assert texts[i] == reference_caption(int(FACTORS["template"][i]), values, selected)
        words = texts[i].split()
        for f, keep in zip(DISCRETE, selected, strict=True):
            assert (values[f] in words) == bool(keep)
    np.testing.assert_array_equal(record["dropped"], np.broadcast_to(np.asarray(selected) == 0, (N, 5)))
    assert (np.asarray(record["text_values"])[:, np.asarray(selected) == 0] == -1).all()


def test_perturbation_rates():
    unchanged, record = caption_tokens(jax.random.key(6), FACTORS, CFG, ALL, ALL, 0.0)
    assert not np.asarray(record["changed"]).any()
    np.testing.assert_array_equal(unchanged, caption_tokens(jax.random.key(7), FACTORS, CFG, ALL, NONE)[0])

    tokens, record = caption_tokens(jax.random.key(6), FACTORS, CFG, ALL, ALL, 1.0)
    rate = np.asarray(record["changed"]).mean(0)
    expected = 1 - 1 / np.asarray(CFG.n_values)
    np.testing.assert_allclose(rate, expected, atol=0.04)  # standard error <= 0.008 at N = 4000
    # The caption states exactly the recorded values.
    texts = caption_strings(tokens, CFG)
    text_values = np.asarray(record["text_values"])
    for i in range(0, N, 113):
        words = texts[i].split()
        assert all(CFG.values(f)[text_values[i, j]] in words for j, f in enumerate(DISCRETE))

    only_background = jnp.asarray([0, 0, 0, 0, 1])
    _, record = caption_tokens(jax.random.key(6), FACTORS, CFG, ALL, only_background, 0.9)
    rate = np.asarray(record["changed"]).mean(0)
    assert (rate[:4] == 0).all() and abs(rate[4] - 0.9 * 2 / 3) < 0.04


def test_token_layout_vocab_and_round_trip():
    tokens, _ = caption_tokens(jax.random.key(8), FACTORS, CFG, jnp.asarray([1, 1, 0, 1, 0]), ALL, 0.5)
    tokens = np.asarray(tokens)
    vocab = scene_vocab(CFG)
    assert vocab[:4] == ["<pad>", "<sot>", "<eot>", "<unk>"] and len(set(vocab)) == len(vocab)
    assert tokens.dtype == np.int32 and tokens.shape == (N, caption_max_len(CFG))
    assert tokens.min() >= 0 and tokens.max() < len(vocab)
    assert (tokens[:, 0] == BOS_ID).all() and ((tokens == EOS_ID).sum(1) == 1).all()
    eot = (tokens == EOS_ID).argmax(1)
    after = np.arange(tokens.shape[1]) > eot[:, None]
    assert (tokens[after] == PAD_ID).all() and (tokens[~after][:, None] != PAD_ID).all()
    texts = caption_strings(tokens, CFG)
    np.testing.assert_array_equal(scene_tokenizer(CFG).encode(texts, tokens.shape[1]), tokens)
    assert captions({k: v[:5] for k, v in FACTORS.items()}, CFG) == caption_strings(
        caption_tokens(jax.random.key(0), {k: v[:5] for k, v in FACTORS.items()}, CFG, ALL, NONE)[0], CFG)


def test_max_len_pads_or_rejects():
    small = {k: v[:5] for k, v in FACTORS.items()}
    longer, _ = caption_tokens(jax.random.key(0), small, CFG, ALL, NONE, max_len=caption_max_len(CFG) + 3)
    shorter, _ = caption_tokens(jax.random.key(0), small, CFG, ALL, NONE)
    np.testing.assert_array_equal(longer[:, : shorter.shape[1]], shorter)
    assert (np.asarray(longer[:, shorter.shape[1]:]) == PAD_ID).all()
    with pytest.raises(ValueError, match="max_len=5"):
        caption_tokens(jax.random.key(0), small, CFG, ALL, NONE, max_len=5)


def test_traced_masks_under_jit_and_vmap():
    small = {k: v[:64] for k, v in FACTORS.items()}
    masks = jnp.asarray([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 1, 1]])
    perturbs = jnp.asarray([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [1, 1, 0, 0, 1]])
    key = jax.random.key(9)

    @jax.jit
    def batch(selected, perturbed, p_change):
        return jax.vmap(lambda s, p: caption_tokens(key, small, CFG, s, p, p_change)[0])(selected, perturbed)

    stacked = batch(masks, perturbs, 0.7)
    for i in range(3):
        one, _ = caption_tokens(key, small, CFG, masks[i], perturbs[i], 0.7)
        np.testing.assert_array_equal(stacked[i], one)
    assert len({np.asarray(stacked[i]).tobytes() for i in range(3)}) == 3


@pytest.mark.parametrize(("field", "value"), [
    ("shapes", ("square", "circle", "triangle")),
    ("colours", ("red", "green", "blue", "mauve")),
    ("backgrounds", ("dark", "grey", "red")),
    ("sizes", ("small", "small")),
    ("heights", ("low", "a", "high")),
    ("image_size", 8),
    ("antialias", -1.0),
    ("causal_strength", 1.5),
])
def test_bad_config_raises_one_line_error(field, value):
    with pytest.raises(ValueError, match=f"^{field}=") as error:
        SceneConfig(**{field: value})
    assert "\n" not in str(error.value) and "invalid" in str(error.value)
