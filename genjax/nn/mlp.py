"""Multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  """Dense layers with an activation between them and none after the last.

  Attributes:
    features: widths of the hidden layers followed by the output width.
  Shapes: `[B, D_in] -> [B, features[-1]]`.
  """

  features: Sequence[int]
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dtype: Any = None  # the compute dtype (None: the inputs'); parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense_{i}", dtype=self.dtype, param_dtype=self.param_dtype)(x)
      if i < len(self.features) - 1:
        x = self.activation(x)
    return x
