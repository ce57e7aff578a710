"""The PixelCNN family: autoregressive masked-convolution models with exact likelihoods.

`PixelCNNFamily(config, info)` models `p(x) = prod_i p(x_i | x_<i)` in raster
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
(`sampling.temperature`, 0 = arg-max) and a key `fold_in(key, position)`.
`sampling.sampler='cached'` (the default) computes each position's logits from only the part of
the image they depend on; `'naive'` runs a full forward pass per position (the
reference; the same samples per key, see `genjax.nn.pixelcnn_sampling`). Figures:
`samples` (a conditional model: class `--label`, or one class per column) and
`completion` (test images above their completions).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp

from genjax import losses
from genjax.data import preprocess
from genjax.data.select import balanced_examples
from genjax.models.base import Family, Figure, FigureOptions, register, to_float32
from genjax.nn import pixelcnn_sampling
from genjax.nn.masked import GatedPixelCNN, PixelCNN
from genjax.schema import require


@dataclasses.dataclass(frozen=True)
class PixelCNNModel:
  """The `model` section (see `genjax/configs/pixelcnn.py`)."""

  variant: Literal["plain", "gated"]
  likelihood: Literal["categorical", "bernoulli"]
  binarization: Literal["dynamic", "threshold"]
  features: int
  num_layers: int  # gated layers
  num_blocks: int  # plain residual blocks
  kernel_size: int  # gated stacks' kernel
  conditional: bool

  def __post_init__(self):
    for name in ("features", "num_layers", "num_blocks"):
      require(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
    require(
      self.kernel_size > 0 and self.kernel_size % 2 == 1,
      "kernel_size",
      self.kernel_size,
      "an odd positive integer",
    )


@dataclasses.dataclass(frozen=True)
class PixelCNNSampling:
  """The `sampling` section."""

  temperature: float  # softmax temperature; 0 = arg-max
  sampler: Literal["cached", "naive"]  # the same samples per key; naive is the reference, H*W*C full passes

  def __post_init__(self):
    require(0 <= self.temperature < math.inf, "temperature", self.temperature, "a finite number >= 0")


@register
class PixelCNNFamily(Family):
  """A PixelCNN (plain or gated, optionally class-conditional) as pure functions."""

  @classmethod
  def conv_widths(cls, model) -> list[int]:
    return [2 * model.features if model.variant == "gated" else model.features]

  Model = PixelCNNModel
  Sampling = PixelCNNSampling
  best_metric = "bits_per_dim"

  def __init__(self, config: Any, info: Any):
    super().__init__(config, info)
    cfg = self.cfg = self.model_config
    if not self.images:
      raise ValueError(f"PixelCNN models images, but dataset {info.name!r} is vector data")
    if cfg.conditional and info.num_classes <= 0:
      raise ValueError(f"model.conditional=True needs labels, but dataset {info.name!r} has none")
    self.image_shape = self.shape
    self.num_dims = math.prod(self.image_shape)
    self.categorical = cfg.likelihood == "categorical"
    self.conditional = bool(cfg.conditional)
    num_classes = info.num_classes if self.conditional else 0
    num_logits = 256 if self.categorical else 1
    channels = self.image_shape[-1]
    if cfg.variant == "plain":
      self.net = PixelCNN(
        features=cfg.features,
        num_blocks=cfg.num_blocks,
        num_logits=num_logits,
        num_color_channels=channels,
        num_classes=num_classes,
        dtype=self.compute_dtype,
        param_dtype=self.param_dtype,
      )
    else:
      self.net = GatedPixelCNN(
        features=cfg.features,
        num_layers=cfg.num_layers,
        kernel_size=cfg.kernel_size,
        num_logits=num_logits,
        num_color_channels=channels,
        num_classes=num_classes,
        dtype=self.compute_dtype,
        param_dtype=self.param_dtype,
      )

  # ------------------------------------------------------------------ data model

  def to_model(self, image: jax.Array, key: jax.Array) -> jax.Array:
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
    self.check_batch(batch, need_labels=self.conditional)
    return batch["label"] if self.conditional else None

  def logits(self, params, values, labels=None) -> jax.Array:
    """`[B, H, W, C, K]` float32 logits (K = 256 or 1) for `int32[B, H, W, C]` values (the network runs
    in `model.dtype`; the log-softmax and the likelihood are float32)."""
    return to_float32(self.net.apply({"params": params}, self._net_input(values), labels))

  def log_prob_values(self, params, values, labels=None) -> jax.Array:
    """Exact `log p(values)`, `[B]` nats."""
    logits = self.logits(params, values, labels)
    if self.categorical:
      return losses.categorical_log_prob(values, logits, event_ndims=len(self.image_shape))
    return losses.bernoulli_log_prob(values.astype(jnp.float32), logits[..., 0], event_ndims=len(self.image_shape))

  def _bits(self, nll):
    return losses.bits_per_dim(nll, self.num_dims)

  # ------------------------------------------------------------------ protocol

  def init(self, key, batch):
    self._labels(batch)
    values = jnp.zeros((batch["image"].shape[0],) + self.image_shape, jnp.int32)
    labels = jnp.zeros((values.shape[0],), jnp.int32) if self.conditional else None
    return self.net.init(key, self._net_input(values), labels)["params"], {}

  def loss(self, params, model_state, batch, key):
    labels = self._labels(batch)
    nll = -self.log_prob_values(params, self.to_model(batch["image"], key), labels)
    loss = jnp.mean(nll)
    return loss, ({"nll": loss, "bits_per_dim": jnp.mean(self._bits(nll))}, model_state)

  def evaluate(self, params, model_state, batch, key):
    labels = self._labels(batch)
    nll = -self.log_prob_values(params, self.to_model(batch["image"], key), labels)
    return {"nll": nll, "bits_per_dim": self._bits(nll)}

  # ------------------------------------------------------------------ sampling

  def _draw(self, key, logits, temperature: float) -> jax.Array:
    """One value per row of `logits` `[N, K]` (cast to float32); temperature 0 takes the arg-max."""
    logits = to_float32(logits)
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
    return self.default_labels(num, labels) if self.conditional else None

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
    """`num` fresh samples at `sampling.temperature`, `uint8[num, H, W, C]`."""
    sc = self.sampling_config
    return self.sample(params, key, num, labels=labels, temperature=sc.temperature, sampler=sc.sampler)

  def complete(
    self, params, key, image, labels=None, temperature: float = 1.0, sampler: str = "cached"
  ) -> jax.Array:
    """Keeps the upper half of `image` (`uint8[N, H, W, C]`) and samples the lower half."""
    h, w, c = self.image_shape
    values = self.to_model(jnp.asarray(image), key)
    start = (h // 2) * w * c
    return self._to_image(
      self._fill(params, key, values, self._check_labels(labels, image.shape[0]), start, temperature, sampler)
    )

  # ------------------------------------------------------------------ pictures

  def figures(self):
    return dict(super().figures(), completion=self.figure_completion)

  def figure_completion(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """`options.num // 2` test images (class-balanced), each above its completion: the upper half
    kept, the lower half sampled at `sampling.temperature`."""
    batch = balanced_examples(source, max(options.num // 2, 1), options.seed)
    labels = batch.get("label") if self.conditional else None
    sc = self.sampling_config
    complete = jax.jit(self.complete, static_argnames=("temperature", "sampler"))
    done = complete(params, key, batch["image"], labels, temperature=sc.temperature, sampler=sc.sampler)
    return Figure.pairs(batch["image"], done)
