"""The RealNVP family: affine-coupling normalizing flows with exact log-likelihoods.

`RealNVPFamily(model_config, info)` models

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
sampling, encoding and decoding. Sampling draws `z ~ N(0, temperature^2 I)`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from genjax import losses
from genjax.data import preprocess
from genjax.eval import plots
from genjax.nn.flows import MultiScaleFlow, VectorFlow

NUM_BINS = 256


class RealNVPFamily:
  """A RealNVP flow over images or vectors as pure functions of explicit variables and keys."""

  def __init__(self, cfg: Any, info: Any):
    if info.kind not in ("image", "vector"):
      raise ValueError(f"RealNVP models images or vectors, but dataset {info.name!r} is {info.kind!r} data")
    if not 0.0 <= cfg.alpha < 0.5:
      raise ValueError(f"model.alpha={cfg.alpha} is not valid; expected 0 <= alpha < 0.5")
    if not 0.0 <= cfg.bn_momentum < 1.0:
      raise ValueError(f"model.bn_momentum={cfg.bn_momentum} is not valid; expected [0, 1)")
    self.cfg, self.info = cfg, info
    self.is_image = info.kind == "image"
    self.shape = tuple(info.shape)
    self.num_dims = math.prod(self.shape)
    self.batch_norm = bool(cfg.batch_norm)
    if self.is_image:
      if cfg.num_scales < 1:
        raise ValueError(f"model.num_scales must be >= 1, got {cfg.num_scales}")
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
      )
      self.best_metric = "bits_per_dim"
    else:
      if cfg.num_couplings < 1:
        raise ValueError(f"model.num_couplings must be >= 1, got {cfg.num_couplings}")
      self.net = VectorFlow(
        num_couplings=cfg.num_couplings,
        hidden=tuple(cfg.hidden),
        batch_norm=self.batch_norm,
        bn_momentum=cfg.bn_momentum,
      )
      self.best_metric = "nll"
    self.best_mode = "min"

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
    if self.is_image:
      return self.net.apply(variables, z, self.shape, method="inverse")
    return self.net.apply(variables, z, method="inverse")

  def log_prob(self, params, model_state, x, train: bool = False):
    """`(log p(x) [B] in nats, model_state)` of continuous `x`: images in [0, 1], or vectors.

    For images the logit preprocessing's Jacobian is included, so this is the density
    of `x` on [0, 1]^D.
    """
    log_det = 0.0
    if self.is_image:
      x, log_det = losses.logit_transform(x, self.cfg.alpha, event_ndims=len(self.shape))
    z, flow_log_det, model_state = self.flow_forward(params, model_state, x, train)
    return -losses.flow_nll(z, log_det + flow_log_det, event_ndims=1), model_state

  def _dequantize(self, key, image):
    return preprocess.dequantize_uniform(key, image, NUM_BINS)

  def _metrics(self, log_p):
    if not self.is_image:
      return {"nll": -log_p}
    nll = -log_p + self.num_dims * math.log(NUM_BINS)  # bound on the 8-bit data's NLL, nats
    return {"nll": nll, "bits_per_dim": losses.dequantized_bits_per_dim(-log_p, self.num_dims, NUM_BINS)}

  def _data(self, batch, key):
    return self._dequantize(key, batch["image"]) if self.is_image else batch["x"]

  # ------------------------------------------------------------------ protocol

  def init(self, key, batch):
    n = max(2, jax.tree.leaves(batch)[0].shape[0])
    x = jnp.full((n,) + self.shape, 0.5, jnp.float32)
    if self.is_image:
      x, _ = losses.logit_transform(x, self.cfg.alpha, event_ndims=len(self.shape))
    variables = dict(self.net.init(key, x, True, method="forward"))
    params = variables.pop("params")
    return params, variables

  def loss(self, params, model_state, batch, key):
    log_p, model_state = self.log_prob(params, model_state, self._data(batch, key), train=True)
    metrics = {k: jnp.mean(v) for k, v in self._metrics(log_p).items()}
    loss = metrics["bits_per_dim"] if self.is_image else metrics["nll"]
    return loss, (metrics, model_state)

  def evaluate(self, params, model_state, batch, key):
    """Per-example metrics with eval-mode batch norm: `nll` (nats) and, for images, `bits_per_dim`.

    For images, one dequantization sample per example from `key`: an unbiased estimate
    of an upper bound on the 8-bit data's NLL.
    """
    log_p, _ = self.log_prob(params, model_state, self._data(batch, key), train=False)
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
    if not self.is_image:
      return x
    y = losses.logit_transform_inverse(x, self.cfg.alpha)
    return jnp.clip(jnp.floor(y * NUM_BINS), 0, NUM_BINS - 1).astype(jnp.uint8)

  def encode(self, params, model_state, data, key=None) -> jax.Array:
    """Images `uint8[N, H, W, C]` (dequantized with `key`, or at bin centres when None), or
    vectors `[N, D]` -> `z [N, D]` with eval-mode batch norm."""
    if self.is_image:
      data = (jnp.asarray(data, jnp.float32) + 0.5) / NUM_BINS if key is None else self._dequantize(key, data)
      data, _ = losses.logit_transform(data, self.cfg.alpha, event_ndims=len(self.shape))
    z, _, _ = self.flow_forward(params, model_state, data, train=False)
    return z

  def sample(self, params, key, num: int, temperature: float = 1.0, *, model_state) -> jax.Array:
    """`num` samples: `uint8[num, H, W, C]` images or `float32[num, D]` vectors."""
    return self.decode(params, model_state, self.sample_z(key, num, temperature))

  def generate(self, params, model_state, key, num: int, labels=None) -> jax.Array:
    del labels  # unconditional
    return self.sample(params, key, num, model_state=model_state)

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

  def density_image(self, params, model_state, lo: float, hi: float, size: int = 128) -> jax.Array:
    """The learned density of a 2-D toy on `[lo, hi]^2` as `uint8[size, size, 1]` (dark = dense).

    Row 0 is the top (largest second coordinate), as in `plots.scatter_image`.
    """
    log_p, _ = self.grid_log_prob(params, model_state, lo, hi, size)
    p = jnp.exp(log_p)
    level = p / jnp.maximum(p.max(), 1e-30)
    return jnp.round(255.0 * (1.0 - level)).astype(jnp.uint8)[::-1, :, None]

  def grid_log_prob(self, params, model_state, lo: float, hi: float, size: int):
    """`(log p [size, size] at cell centres (row = second coordinate, ascending), cell area)`."""
    if self.shape != (2,):
      raise ValueError(f"a density picture needs 2-D data, got shape {self.shape}")
    centres = lo + (jnp.arange(size) + 0.5) * (hi - lo) / size
    gx, gy = jnp.meshgrid(centres, centres, indexing="xy")  # gy varies along rows
    points = jnp.stack([gx.reshape(-1), gy.reshape(-1)], axis=-1)
    log_p, _ = self.log_prob(params, model_state, points, train=False)
    return log_p.reshape(size, size), ((hi - lo) / size) ** 2

  def sample_grid(self, params, model_state, key, batch, num: int) -> jax.Array:
    if self.is_image:
      return self.sample(params, key, num, self.cfg.sample_temperature, model_state=model_state)
    points = self.sample(params, key, max(num, self.cfg.plot_points), model_state=model_state)
    return plots.scatter_image(points, self.cfg.plot_lo, self.cfg.plot_hi)[None]
