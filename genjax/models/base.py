"""The small protocol through which a model family plugs into the trainer.

A family is one object built from `(config.model, dataset_info)` that exposes pure
functions of explicit parameters and keys. `model_state` holds variables that are
not trained by gradient (batch-norm statistics); it travels through the step as a
returned value, never as hidden state, and is `{}` for families without any.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import jax

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class Family(Protocol):
  """What the trainer, evaluator, sampler and benchmarks need from a model family."""

  #: The metric (a key of `evaluate`'s output, averaged over the test split) used to
  #: pick the best checkpoint, and whether lower is better.
  best_metric: str
  best_mode: str  # 'min' or 'max'

  def init(self, key: jax.Array, batch: Batch) -> tuple[Any, Any]:
    """Returns `(params, model_state)` for inputs shaped like `batch`."""

  def loss(
    self, params: Any, model_state: Any, batch: Batch, key: jax.Array
  ) -> tuple[jax.Array, tuple[Metrics, Any]]:
    """Training objective: `(scalar loss, (scalar metrics, new model_state))`."""

  def evaluate(self, params: Any, model_state: Any, batch: Batch, key: jax.Array, **options: Any) -> Metrics:
    """Per-example evaluation metrics, each `[B]`, averaged over a split by the caller."""

  def sample_grid(self, params: Any, model_state: Any, key: jax.Array, batch: Batch, num: int) -> jax.Array:
    """`uint8[num, H, W, C]` images that show the model: samples or reconstructions.

    Families of vector (toy) data return one picture, `uint8[1, S, S, 1]`, drawn
    with `genjax.eval.plots`.
    """

  # Optional, for sample statistics (Frechet distance, toy mode coverage):
  #   generate(params, model_state, key, num, labels=None)
  #     -> uint8[num, H, W, C] for image data, float32[num, D] for vector data:
  #   `num` fresh samples from the model (labels int32[num] for conditional models).
