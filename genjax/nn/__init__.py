"""Flax Linen building blocks shared by the model families."""

from genjax.nn.conv import ConvDecoder, ConvEncoder
from genjax.nn.masked import GatedPixelCNN, MaskedConv, PixelCNN
from genjax.nn.mlp import MLP

__all__ = ["MLP", "ConvEncoder", "ConvDecoder", "MaskedConv", "PixelCNN", "GatedPixelCNN"]
