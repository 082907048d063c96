"""Flax Linen encoders."""

from mmjax.models.mlp import MLP, paper_widths

__all__ = ["MLP", "paper_widths"]
