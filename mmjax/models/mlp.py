"""MLP encoders (Flax Linen) for the numeric study."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

Array = jax.Array


def paper_widths(input_dim: int) -> tuple[int, ...]:
    """The reference encoder's hidden widths for input dimension d: [10d, 50d, 50d, 50d, 50d, 10d]."""
    return tuple(m * input_dim for m in (10, 50, 50, 50, 50, 10))


class MLP(nn.Module):
    """Dense layers with biases and LeakyReLU between them (none after the output layer)."""

    hidden: Sequence[int]
    out_dim: int
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Map (..., d_in) to (..., out_dim)."""
        for width in self.hidden:
            x = nn.leaky_relu(nn.Dense(width)(x), self.negative_slope)
        return nn.Dense(self.out_dim)(x)
