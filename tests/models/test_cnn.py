"""PatchConv equals flax's nn.Conv with the same kernel; the image encoder's shapes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models.cnn import ConvEncoder, PatchConv


@pytest.mark.parametrize("shape, kernel, strides, padding", [
    ((2, 9, 8, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 8, 2), (3, 2), (1, 2), ((0, 2), (1, 0))),
    ((3, 10, 5), (4,), (2,), ((1, 1),)),
])
def test_patch_conv_equals_nn_conv(shape, kernel, strides, padding):
    x = jax.random.normal(jax.random.key(0), shape)
    mine = PatchConv(4, kernel, strides, padding)
    params = mine.init(jax.random.key(1), x)
    dense = params["params"]["Dense_0"]
    ref = nn.Conv(4, kernel, strides=strides, padding=padding)
    # PatchConv concatenates the patch offsets in row-major order, each with all input channels.
    conv_params = {"params": {"kernel": dense["kernel"].reshape(*kernel, shape[-1], 4),
                              "bias": dense["bias"]}}
    np.testing.assert_allclose(mine.apply(params, x), ref.apply(conv_params, x), rtol=1e-5, atol=1e-5)


def test_conv_encoder_shapes():
    enc = ConvEncoder((8, 16), hidden=20, out_dim=3)
    x = jnp.ones((4, 32, 32, 3))
    params = enc.init(jax.random.key(0), x)
    assert enc.apply(params, x).shape == (4, 3)
