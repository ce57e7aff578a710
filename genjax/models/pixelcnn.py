"""The PixelCNN family: autoregressive masked-convolution models with exact likelihoods.

`PixelCNNFamily(model_config, info)` models `p(x) = prod_i p(x_i | x_<i)` in raster
order, R before G before B within a pixel (van den Oord et al. 2016), with

* `likelihood='categorical'`: a 256-way softmax per channel over the 8-bit values;
* `likelihood='bernoulli'`: one logit per pixel of binarized data (dynamic
  binarization with an explicit key while training, a fixed key at evaluation).

Both are exact discrete log-likelihoods, so `bits_per_dim` counts every dimension
with no dequantization term. `variant` picks the plain residual stack (which has a
blind spot) or the gated stack with vertical and horizontal stacks (which does not).
`conditional=True` adds a learned label embedding to every layer.

Sampling (`sample`, `complete`) is one compiled program that visits the H*W*C
positions in order and samples each from its logits with a softmax temperature
(0 = arg-max) and a key `fold_in(key, position)`. `sampler='cached'` (the default)
computes each position's logits from only the part of the image they depend on;
`sampler='naive'` runs a full forward pass per position (the reference; same samples
per key, see `genjax.nn.pixelcnn_sampling`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from genjax import losses
from genjax.data import preprocess
from genjax.nn import pixelcnn_sampling
from genjax.nn.masked import GatedPixelCNN, PixelCNN

VARIANTS = ("plain", "gated")
LIKELIHOODS = ("categorical", "bernoulli")
BINARIZATIONS = ("dynamic", "threshold")


class PixelCNNFamily:
  """A PixelCNN (plain or gated, optionally class-conditional) as pure functions."""

  def __init__(self, cfg: Any, info: Any):
    if info.kind != "image":
      raise ValueError(f"PixelCNN models images, but dataset {info.name!r} is {info.kind!r} data")
    for name, value, choices in (
      ("model.variant", cfg.variant, VARIANTS),
      ("model.likelihood", cfg.likelihood, LIKELIHOODS),
      ("model.binarization", cfg.binarization, BINARIZATIONS),
    ):
      if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {choices}")
    if cfg.conditional and info.num_classes <= 0:
      raise ValueError(f"model.conditional=True needs labels, but dataset {info.name!r} has none")
    self.cfg, self.info = cfg, info
    self.image_shape = tuple(info.shape)
    self.num_dims = math.prod(self.image_shape)
    self.categorical = cfg.likelihood == "categorical"
    self.conditional = bool(cfg.conditional)
    self.num_classes = info.num_classes if self.conditional else 0
    num_logits = 256 if self.categorical else 1
    channels = self.image_shape[-1]
    if cfg.variant == "plain":
      self.net = PixelCNN(
        features=cfg.features,
        num_blocks=cfg.num_blocks,
        num_logits=num_logits,
        num_color_channels=channels,
        num_classes=self.num_classes,
      )
    else:
      self.net = GatedPixelCNN(
        features=cfg.features,
        num_layers=cfg.num_layers,
        kernel_size=cfg.kernel_size,
        num_logits=num_logits,
        num_color_channels=channels,
        num_classes=self.num_classes,
      )
    self.best_metric = "bits_per_dim"
    self.best_mode = "min"

  # ------------------------------------------------------------------ data model

  def values(self, image: jax.Array, key: jax.Array) -> jax.Array:
    """The discrete values modelled, `int32[B, H, W, C]`: 0..255, or 0/1 when binarized."""
    if self.categorical:
      return image.astype(jnp.int32)
    if self.cfg.binarization == "dynamic":
      return preprocess.binarize_dynamic(key, image).astype(jnp.int32)
    return preprocess.binarize_threshold(image).astype(jnp.int32)

  def _net_input(self, values: jax.Array) -> jax.Array:
    """Values -> network input in [-1, 1]."""
    if self.categorical:
      return values.astype(jnp.float32) / 127.5 - 1.0
    return 2.0 * values.astype(jnp.float32) - 1.0

  def _labels(self, batch) -> jax.Array | None:
    return batch["label"] if self.conditional else None

  def logits(self, params, values, labels=None) -> jax.Array:
    """`[B, H, W, C, K]` logits (K = 256 or 1) for `int32[B, H, W, C]` values."""
    return self.net.apply({"params": params}, self._net_input(values), labels)

  def log_prob_values(self, params, values, labels=None) -> jax.Array:
    """Exact `log p(values)`, `[B]` nats."""
    logits = self.logits(params, values, labels)
    if self.categorical:
      return losses.categorical_log_likelihood(values, logits)
    return losses.bernoulli_log_likelihood(values.astype(jnp.float32), logits[..., 0])

  def _bits(self, nll):
    return losses.bits_per_dim(nll, self.num_dims)

  # ------------------------------------------------------------------ protocol

  def init(self, key, batch):
    values = jnp.zeros((batch["image"].shape[0],) + self.image_shape, jnp.int32)
    labels = jnp.zeros((values.shape[0],), jnp.int32) if self.conditional else None
    return self.net.init(key, self._net_input(values), labels)["params"], {}

  def loss(self, params, model_state, batch, key):
    nll = -self.log_prob_values(params, self.values(batch["image"], key), self._labels(batch))
    loss = jnp.mean(nll)
    return loss, ({"nll": loss, "bits_per_dim": jnp.mean(self._bits(nll))}, model_state)

  def evaluate(self, params, model_state, batch, key):
    nll = -self.log_prob_values(params, self.values(batch["image"], key), self._labels(batch))
    return {"nll": nll, "bits_per_dim": self._bits(nll)}

  # ------------------------------------------------------------------ sampling

  def _draw(self, key, logits, temperature: float) -> jax.Array:
    """One value per row of `logits` `[N, K]`; temperature 0 takes the arg-max."""
    if self.categorical:
      if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
      return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)
    if temperature == 0:
      return (logits[:, 0] > 0).astype(jnp.int32)
    return jax.random.bernoulli(key, jax.nn.sigmoid(logits[:, 0] / temperature)).astype(jnp.int32)

  def _fill(self, params, key, values, labels, start: int, temperature: float, sampler: str) -> jax.Array:
    """Samples positions `start..H*W*C-1` of `values` in order, one compiled loop."""
    return pixelcnn_sampling.fill(
      self.net,
      params,
      key,
      values,
      labels,
      start,
      lambda k, logits: self._draw(k, logits, temperature),
      self._net_input,
      sampler,
    )

  def _to_image(self, values):
    return values.astype(jnp.uint8) if self.categorical else (255 * values).astype(jnp.uint8)

  def _check_labels(self, labels, num):
    if not self.conditional:
      return None
    return jnp.arange(num) % self.num_classes if labels is None else jnp.asarray(labels, jnp.int32)

  def sample(
    self, params, key, num: int, labels=None, temperature: float = 1.0, sampler: str = "cached"
  ) -> jax.Array:
    """`uint8[num, H, W, C]` samples; conditional models cycle through the classes by default."""
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}")
    values = jnp.zeros((num,) + self.image_shape, jnp.int32)
    return self._to_image(
      self._fill(params, key, values, self._check_labels(labels, num), 0, temperature, sampler)
    )

  def generate(self, params, model_state, key, num: int, labels=None) -> jax.Array:
    """`num` fresh samples at temperature 1, `uint8[num, H, W, C]` (the protocol's `generate`)."""
    return self.sample(params, key, num, labels=labels)

  def complete(
    self, params, key, image, labels=None, temperature: float = 1.0, sampler: str = "cached"
  ) -> jax.Array:
    """Keeps the upper half of `image` (`uint8[N, H, W, C]`) and samples the lower half."""
    h, w, c = self.image_shape
    values = self.values(jnp.asarray(image), key)
    start = (h // 2) * w * c
    return self._to_image(
      self._fill(params, key, values, self._check_labels(labels, image.shape[0]), start, temperature, sampler)
    )

  def sample_grid(self, params, model_state, key, batch, num: int) -> jax.Array:
    return self.sample(params, key, num)
