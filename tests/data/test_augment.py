"""Batched augmentations: shapes, determinism per key, identities, token conventions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.augment import (
    AugmentConfig,
    color_jitter,
    horizontal_flip,
    random_resized_crop,
    random_swap,
    two_views,
    word_dropout,
)
from mmjax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

KEY = jax.random.key(0)
IMAGES = jax.random.uniform(jax.random.key(1), (6, 16, 16, 3))
# rows: [sot] words [eot] pad..., words are ids >= 4
TOKENS = jnp.array([[BOS_ID, 4, 5, 6, 7, 8, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
                    [BOS_ID, 9, 10, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
                    [BOS_ID, 11, 12, 13, 14, 15, 16, 17, 18, EOS_ID]], jnp.int32)


# Jitted once per config: eager dispatch compiles every op separately, which is slow on a busy CPU.
two_views_jit = jax.jit(two_views, static_argnums=3)
crop_jit = jax.jit(random_resized_crop, static_argnames=("scale", "ratio", "size"))
CFG = AugmentConfig(crop_size=(8, 12), word_dropout=0.3, swap_prob=0.5)


def test_shapes_dtypes_and_range():
    (ia, ib), (ta, tb) = two_views_jit(KEY, IMAGES, TOKENS, CFG)
    chex.assert_shape([ia, ib], (6, 8, 12, 3))
    chex.assert_shape([ta, tb], TOKENS.shape)
    assert ia.dtype == IMAGES.dtype and ta.dtype == TOKENS.dtype
    assert float(ia.min()) >= 0 and float(ia.max()) <= 1
    assert not np.allclose(ia, ib)


def test_deterministic_given_key():
    first, second = two_views_jit(KEY, IMAGES, TOKENS, CFG), two_views_jit(KEY, IMAGES, TOKENS, CFG)
    chex.assert_trees_all_equal(first, second)
    other = two_views_jit(jax.random.key(7), IMAGES, TOKENS, CFG)
    assert not np.allclose(first[0][0], other[0][0])
    assert not np.array_equal(first[1][0], other[1][0])


def test_flip_twice_is_identity_and_flips_some():
    once = horizontal_flip(KEY, IMAGES)
    np.testing.assert_array_equal(horizontal_flip(KEY, once), IMAGES)
    flipped = np.asarray([not np.array_equal(a, b) for a, b in zip(once, IMAGES, strict=True)])
    assert 0 < flipped.sum() < len(IMAGES)
    for a, b, f in zip(once, IMAGES, flipped, strict=True):
        np.testing.assert_array_equal(a, b[:, ::-1] if f else b)


def test_full_crop_is_identity_and_partial_crop_zooms():
    full = crop_jit(KEY, IMAGES, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(full, IMAGES, atol=1e-5)
    # A constant image stays constant under any crop and resize.
    flat = jnp.full((2, 16, 16, 3), 0.25)
    np.testing.assert_allclose(crop_jit(KEY, flat, scale=(0.2, 0.5), size=(7, 9)), 0.25, atol=1e-5)
    # A left-to-right ramp cropped to a fraction has a smaller range of values.
    ramp = jnp.broadcast_to(jnp.linspace(0, 1, 16)[None, None, :, None], (4, 16, 16, 3))
    cropped = crop_jit(KEY, ramp, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    span = cropped[:, 0, -1, 0] - cropped[:, 0, 0, 0]
    assert (span > 0).all() and (span < 0.7).all()


def test_color_jitter_zero_strength_is_identity():
    np.testing.assert_allclose(color_jitter(KEY, IMAGES, brightness=0, contrast=0, saturation=0), IMAGES,
                               atol=1e-6)
    grey = jnp.repeat(IMAGES[..., :1], 3, axis=-1)
    sat = color_jitter(KEY, grey, brightness=0, contrast=0, saturation=0.9)
    np.testing.assert_allclose(sat, grey, atol=1e-6)  # saturation has nothing to act on in grey


def test_word_dropout_p0_identity_p1_only_specials():
    np.testing.assert_array_equal(word_dropout(KEY, TOKENS, 0.0), TOKENS)
    expected = np.full(TOKENS.shape, PAD_ID)
    expected[:, :2] = [BOS_ID, EOS_ID]
    np.testing.assert_array_equal(word_dropout(KEY, TOKENS, 1.0), expected)


def test_word_dropout_keeps_order_and_eot():
    out = np.asarray(word_dropout(KEY, TOKENS, 0.5))
    for row, src in zip(out, np.asarray(TOKENS), strict=True):
        words = [t for t in row if t > EOS_ID]
        assert words == [t for t in src if t in words]  # a subsequence, in order
        assert row[0] == BOS_ID and row[len(words) + 1] == EOS_ID
        assert (row[len(words) + 2:] == PAD_ID).all()


def test_random_swap_permutes_words_only():
    np.testing.assert_array_equal(random_swap(KEY, TOKENS, 0.0), TOKENS)
    out = np.asarray(random_swap(KEY, TOKENS, 1.0))
    # p = 1: pairs (1, 2), (3, 4), ... swap, never touching sot/eot/pad.
    np.testing.assert_array_equal(out[0], [BOS_ID, 5, 4, 7, 6, 8, EOS_ID, PAD_ID, PAD_ID, PAD_ID])
    np.testing.assert_array_equal(out[1], [BOS_ID, 10, 9, EOS_ID] + [PAD_ID] * 6)
    for key in jax.random.split(KEY, 5):
        some = np.asarray(random_swap(key, TOKENS, 0.5))
        for row, src in zip(some, np.asarray(TOKENS), strict=True):
            assert sorted(row) == sorted(src)
            moved = np.flatnonzero(row != src)
            assert all(src[i] > EOS_ID for i in moved)


def test_config_validation_names_field():
    with pytest.raises(ValueError, match=r"^word_dropout=1.5 is invalid"):
        AugmentConfig(word_dropout=1.5)
    with pytest.raises(ValueError, match=r"^crop_scale="):
        AugmentConfig(crop_scale=(0.5, 0.2))
