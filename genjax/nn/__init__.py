"""Flax Linen building blocks shared by the model families."""

from genjax.nn.mlp import MLP
from genjax.nn.conv import ConvDecoder, ConvEncoder
from genjax.nn.masked import GatedPixelCNN, MaskedConv, PixelCNN

__all__ = ["MLP", "ConvEncoder", "ConvDecoder", "MaskedConv", "PixelCNN", "GatedPixelCNN"]
