"""Flax Linen building blocks shared by the model families."""

from genjax.nn.mlp import MLP
from genjax.nn.conv import ConvDecoder, ConvEncoder

__all__ = ["MLP", "ConvEncoder", "ConvDecoder"]
