"""The RealNVP family: affine-coupling normalizing flows with exact log-likelihoods.

`RealNVPFamily(config, info)` models

* images (`{'image': uint8[B, H, W, C]}`): each step draws uniform dequantization noise
  from its key, `y = (x + u) / 256` in [0, 1); the logit preprocessing
  `logit(alpha + (1 - 2 alpha) y)` and the multi-scale flow (`genjax.nn.flows`) map `y`
  to `z ~ N(0, I)`. The loss and `evaluate` report bits/dim of the 8-bit data with
  every Jacobian and the [0, 1] scaling counted (`losses.dequantized_bits_per_dim`), so
  the number is comparable with the paper's. With one dequantization sample per
  example, the test number is a single-sample estimate of an upper bound on the
  discrete data's bits/dim (the bound holds in expectation over the noise).
* vectors (`{'x': float32[B, D]}`, the toys): couplings with MLP networks on `x` itself,
  no dequantization; the loss and `evaluate` are the NLL in nats.

Batch norm (on by default, as in the paper) uses batch statistics in the loss and the
running averages, carried as `model_state = {'batch_stats': ...}`, in `evaluate`,
sampling, encoding and decoding. Sampling draws `z ~ N(0, T^2 I)` (`sampling.temperature`).
Figures: `samples`; images: `interpolation` (through z); 2-D toys: `density` (the
learned density on the picture's square).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genjax import losses
from genjax.data import preprocess
from genjax.models.base import Family, Figure, FigureOptions, register
from genjax.nn.flows import MultiScaleFlow, VectorFlow
from genjax.schema import require

NUM_BINS = 256
#: Cells per side of a density picture.
DENSITY_GRID = 256
INTERPOLATION_STEPS = 8


@dataclasses.dataclass(frozen=True)
class RealNVPModel:
  """The `model` section (see `genjax/configs/realnvp.py`)."""

  num_scales: int  # images: scales of the multi-scale flow
  features: int  # images: residual conv net width in every coupling
  num_blocks: int  # images: residual blocks per coupling net (0: conv in, conv out)
  batch_norm: bool
  bn_momentum: float
  alpha: float  # images: logit preprocessing logit(alpha + (1 - 2 alpha) x)
  num_couplings: int  # vectors: MLP couplings
  hidden: tuple[int, ...]  # vectors: MLP widths

  def __post_init__(self):
    for name in ("num_scales", "features", "num_couplings"):
      require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
    # 0: the coupling net is conv-relu-conv, no residual blocks (the peer preset's Glow-sized net)
    require(self.num_blocks >= 0, "num_blocks", self.num_blocks, "an integer >= 0")
    require(0.0 <= self.alpha < 0.5, "alpha", self.alpha, "a number in [0, 0.5)")
    require(0.0 <= self.bn_momentum < 1.0, "bn_momentum", self.bn_momentum, "a number in [0, 1)")
    require(len(self.hidden) > 0 and min(self.hidden) > 0, "hidden", self.hidden, "positive widths")


@dataclasses.dataclass(frozen=True)
class RealNVPSampling:
  """The `sampling` section."""

  temperature: float  # z ~ N(0, T^2 I)

  def __post_init__(self):
    require(0 <= self.temperature < math.inf, "temperature", self.temperature, "a finite number >= 0")


@register
class RealNVPFamily(Family):
  """A RealNVP flow over images or vectors as pure functions of explicit variables and keys."""

  @classmethod
  def conv_widths(cls, model) -> list[int]:
    return [model.features]

  Model = RealNVPModel
  Sampling = RealNVPSampling

  def __init__(self, config: Any, info: Any):
    super().__init__(config, info)
    cfg = self.cfg = self.model_config
    self.num_dims = math.prod(self.shape)
    self.batch_norm = bool(cfg.batch_norm)
    if self.images:
      h, w, _ = self.shape
      if h % 2 ** (cfg.num_scales - 1) or w % 2 ** (cfg.num_scales - 1):
        raise ValueError(
          f"model.num_scales={cfg.num_scales} needs the image size {h}x{w} to halve {cfg.num_scales - 1} time(s)"
        )
      self.net = MultiScaleFlow(
        num_scales=cfg.num_scales,
        features=cfg.features,
        num_blocks=cfg.num_blocks,
        batch_norm=self.batch_norm,
        bn_momentum=cfg.bn_momentum,
        dtype=self.compute_dtype,  # the couplings' networks; the bijections and log-dets are float32
        param_dtype=self.param_dtype,
      )
      self.best_metric = "bits_per_dim"
    else:
      self.net = VectorFlow(
        num_couplings=cfg.num_couplings,
        hidden=tuple(cfg.hidden),
        batch_norm=self.batch_norm,
        bn_momentum=cfg.bn_momentum,
        dtype=self.compute_dtype,
        param_dtype=self.param_dtype,
      )
      self.best_metric = "nll"

  # ------------------------------------------------------------------ the flow

  def _variables(self, params, model_state):
    return {"params": params, **model_state}

  def flow_forward(self, params, model_state, x, train: bool = False):
    """The flow on preprocessed `x` -> `(z [B, D], log_det [B], model_state)`.

    In train mode batch norm uses the batch statistics and the returned model_state
    holds the updated running averages; in eval mode it is `model_state` itself.
    """
    variables = self._variables(params, model_state)
    if train and self.batch_norm:
      (z, log_det), updates = self.net.apply(variables, x, True, method="forward", mutable=["batch_stats"])
      return z, log_det, dict(model_state, **updates)
    z, log_det = self.net.apply(variables, x, train, method="forward")
    return z, log_det, model_state

  def flow_inverse(self, params, model_state, z):
    """`z [B, D]` -> the preprocessed `x` (eval-mode batch norm)."""
    variables = self._variables(params, model_state)
    if self.images:
      return self.net.apply(variables, z, self.shape, method="inverse")
    return self.net.apply(variables, z, method="inverse")

  def log_prob(self, params, model_state, x, train: bool = False):
    """`(log p(x) [B] in nats, model_state)` of continuous `x`: images in [0, 1], or vectors.

    For images the logit preprocessing's Jacobian is included, so this is the density
    of `x` on [0, 1]^D.
    """
    log_det = 0.0
    if self.images:
      x, log_det = losses.logit_transform(x, self.cfg.alpha, event_ndims=len(self.shape))
    z, flow_log_det, model_state = self.flow_forward(params, model_state, x, train)
    return -losses.flow_nll(z, log_det + flow_log_det, event_ndims=1), model_state

  def _dequantize(self, key, image):
    return preprocess.dequantize_uniform(key, image, NUM_BINS)

  def _metrics(self, log_p):
    if not self.images:
      return {"nll": -log_p}
    nll = -log_p + self.num_dims * math.log(NUM_BINS)  # bound on the 8-bit data's NLL, nats
    return {"nll": nll, "bits_per_dim": losses.dequantized_bits_per_dim(-log_p, self.num_dims, NUM_BINS)}

  def to_model(self, batch, key):
    """The continuous data the flow scores: dequantized images in [0, 1) or the vectors themselves."""
    self.check_batch(batch)
    return self._dequantize(key, batch["image"]) if self.images else batch["x"]

  # ------------------------------------------------------------------ the contract

  def init(self, key, batch):
    self.check_batch(batch)
    n = max(2, jax.tree.leaves(batch)[0].shape[0])
    x = jnp.full((n,) + self.shape, 0.5, jnp.float32)
    if self.images:
      x, _ = losses.logit_transform(x, self.cfg.alpha, event_ndims=len(self.shape))
    variables = dict(self.net.init(key, x, True, method="forward"))
    params = variables.pop("params")
    return params, variables

  def loss(self, params, model_state, batch, key):
    log_p, model_state = self.log_prob(params, model_state, self.to_model(batch, key), train=True)
    metrics = {k: jnp.mean(v) for k, v in self._metrics(log_p).items()}
    loss = metrics["bits_per_dim"] if self.images else metrics["nll"]
    return loss, (metrics, model_state)

  def evaluate(self, params, model_state, batch, key):
    """Per-example metrics with eval-mode batch norm: `nll` (nats) and, for images, `bits_per_dim`.

    For images, one dequantization sample per example from `key`: an unbiased estimate
    of an upper bound on the 8-bit data's NLL.
    """
    log_p, _ = self.log_prob(params, model_state, self.to_model(batch, key), train=False)
    return self._metrics(log_p)

  # ------------------------------------------------------------------ sampling, encoding

  def sample_z(self, key, num: int, temperature: float = 1.0) -> jax.Array:
    """`z ~ N(0, temperature^2 I)`, `[num, D]`."""
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}")
    return temperature * jax.random.normal(key, (num, self.num_dims), jnp.float32)

  def decode(self, params, model_state, z) -> jax.Array:
    """`z [N, D]` -> `uint8[N, H, W, C]` images (the 8-bit bin of the flow's output), or `float32[N, D]`."""
    x = self.flow_inverse(params, model_state, z)
    if not self.images:
      return x
    y = losses.logit_transform_inverse(x, self.cfg.alpha)
    return jnp.clip(jnp.floor(y * NUM_BINS), 0, NUM_BINS - 1).astype(jnp.uint8)

  def encode(self, params, model_state, data, key=None) -> jax.Array:
    """Images `uint8[N, H, W, C]` (dequantized with `key`, or at bin centres when None), or
    vectors `[N, D]` -> `z [N, D]` with eval-mode batch norm."""
    if self.images:
      data = (jnp.asarray(data, jnp.float32) + 0.5) / NUM_BINS if key is None else self._dequantize(key, data)
      data, _ = losses.logit_transform(data, self.cfg.alpha, event_ndims=len(self.shape))
    z, _, _ = self.flow_forward(params, model_state, data, train=False)
    return z

  def sample(self, params, model_state, key, num: int, temperature: float | None = None) -> jax.Array:
    """`num` samples at `temperature` (default `sampling.temperature`): `uint8[num, H, W, C]` or `[num, D]`."""
    t = self.sampling_config.temperature if temperature is None else temperature
    return self.decode(params, model_state, self.sample_z(key, num, t))

  def generate(self, params, model_state, key, num: int, labels=None) -> jax.Array:
    """`num` fresh samples at `sampling.temperature` (unconditional: `labels` must be None)."""
    if labels is not None:
      raise ValueError("RealNVP is unconditional; generate() takes no labels")
    return self.sample(params, model_state, key, num)

  def interpolate(self, params, model_state, a, b, num_steps: int = 8) -> jax.Array:
    """Rows from `a[i]` to `b[i]` through z: `[N, num_steps, ...]` decoded outputs.

    Uses the paper's norm-preserving path `z(theta) = cos(theta) z_a + sin(theta) z_b`,
    `theta` in [0, pi/2] (in high dimension `z_a` and `z_b` are nearly orthogonal, so
    `|z(theta)|` stays near that of a sample). Images are encoded at bin centres.
    """
    za, zb = self.encode(params, model_state, a), self.encode(params, model_state, b)
    theta = jnp.linspace(0.0, jnp.pi / 2, num_steps)[None, :, None]
    z = jnp.cos(theta) * za[:, None] + jnp.sin(theta) * zb[:, None]  # [N, T, D]
    out = self.decode(params, model_state, z.reshape((-1, self.num_dims)))
    return out.reshape((za.shape[0], num_steps) + out.shape[1:])

  def grid_log_prob(self, params, model_state, lo: float, hi: float, size: int):
    """`(log p [size, size] at cell centres (row = second coordinate, ascending), cell area)`."""
    if self.shape != (2,):
      raise ValueError(f"a density picture needs 2-D data, got shape {self.shape}")
    centres = lo + (jnp.arange(size) + 0.5) * (hi - lo) / size
    gx, gy = jnp.meshgrid(centres, centres, indexing="xy")  # gy varies along rows
    points = jnp.stack([gx.reshape(-1), gy.reshape(-1)], axis=-1)
    log_p, _ = self.log_prob(params, model_state, points, train=False)
    return log_p.reshape(size, size), ((hi - lo) / size) ** 2

  # ------------------------------------------------------------------ pictures

  def figures(self):
    kinds = dict(super().figures())
    if self.images:
      kinds["interpolation"] = self.figure_interpolation
    if self.shape == (2,):
      kinds["density"] = self.figure_density
    return kinds

  def figure_interpolation(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """Rows of `INTERPOLATION_STEPS` decodings from one test image to another through z."""
    rows = max(options.num // INTERPOLATION_STEPS, 1)
    rng = np.random.default_rng(options.seed)
    images = source[rng.choice(len(source), size=2 * rows, replace=False)]["image"]
    out = jax.jit(self.interpolate, static_argnames="num_steps")(
      params, model_state, images[:rows], images[rows:], num_steps=INTERPOLATION_STEPS
    )
    return Figure.images(out.reshape((-1,) + out.shape[2:]), ncol=INTERPOLATION_STEPS)

  def figure_density(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """The learned density of a 2-D toy on the square `options.extent`."""
    lo, hi = options.extent
    grid = jax.jit(self.grid_log_prob, static_argnums=(2, 3, 4))
    log_p, _ = grid(params, model_state, lo, hi, DENSITY_GRID)
    return Figure.density(log_p, (lo, hi))
