"""The DDPM family: denoising diffusion with the simple loss, the full bound and two samplers.

`DDPMFamily(model_config, info)` models images (uint8, scaled to [-1, 1] by
`preprocess.to_symmetric`) with the U-Net of `genjax.nn.unet`, or vectors (toy
densities, divided by `model.data_scale`) with a time-conditioned MLP. The process
and the bound are `genjax.diffusion`; this module wires them to a network.

* Training minimizes `L_simple` (Ho et al. 2020): `t ~ U{0..T-1}`, `x_t ~ q(x_t|x_0)`,
  the mean squared error of the network's epsilon. Dropout uses the step key.
* `evaluate` returns per example the simple loss (at a random `t`) and, by default,
  `bits_per_dim_estimate`: the unbiased one-call estimate `L_T + T * L_t` of the
  bound (cheap, noisy; for the periodic evaluation of the train loop). With
  `full_bound=True` it runs all T terms and returns `bits_per_dim` (the bound) with
  its parts `prior_bits_per_dim` (L_T), `kl_bits_per_dim` (L_1..L_{T-1}) and
  `decoder_bits_per_dim` (L_0), and the bound in nats, `nll_bound`.
* For images, `L_0` is the discretized Gaussian over the 256 values, so the bound is
  on the discrete 8-bit likelihood and bits/dim count exactly H*W*C dimensions.
  28x28 digits are padded to the U-Net's grid *inside* the network (its output is
  cropped back), so the process, the loss and the bound are on the real 784 pixels
  only. For vectors the decoder is a continuous Gaussian density, and the bound is on
  the density of the unscaled data, in nats (`nll_bound`), with no bits/dim.
* Sampling (`sample`, `generate`, `sample_grid`): ancestral over all T steps or DDIM,
  one compiled loop each; the trainer passes the EMA parameters by default.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from genjax import diffusion, losses
from genjax.data import preprocess
from genjax.eval.plots import scatter_image
from genjax.nn.unet import TimeMLP, UNet

SAMPLERS = ("ancestral", "ddim")


class DDPMFamily:
  """Denoising diffusion probabilistic model as pure functions of `(params, batch, key)`."""

  def __init__(self, cfg: Any, info: Any):
    for name, value, choices in (
      ("model.schedule", cfg.schedule, diffusion.SCHEDULES),
      ("model.variance", cfg.variance, diffusion.VARIANCES),
      ("model.sampler", cfg.sampler, SAMPLERS),
      ("model.grid_sampler", cfg.grid_sampler, SAMPLERS),
    ):
      if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {choices}")
    self.cfg, self.info = cfg, info
    self.schedule = diffusion.get_schedule(cfg.schedule, int(cfg.num_timesteps), cfg.beta_start, cfg.beta_end)
    self.num_timesteps = int(cfg.num_timesteps)
    self.images = info.kind == "image"
    self.shape = tuple(info.shape)
    self.num_dims = math.prod(self.shape)
    if self.images:
      self.net = UNet(
        ch=cfg.ch,
        ch_mult=tuple(cfg.ch_mult),
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=tuple(cfg.attn_resolutions),
        dropout=cfg.dropout,
        norm_groups=cfg.norm_groups,
        pad_to=cfg.pad_to,
      )
      self.clip_denoised = bool(cfg.clip_denoised)
    else:
      if cfg.data_scale <= 0:
        raise ValueError(f"model.data_scale must be positive, got {cfg.data_scale}")
      self.net = TimeMLP(hidden=tuple(cfg.mlp_hidden), temb_dim=cfg.temb_dim)
      self.clip_denoised = False  # vectors are not bounded to [-1, 1]
    self.variance = cfg.variance
    self.best_metric = "simple_loss"
    self.best_mode = "min"

  # ------------------------------------------------------------------ data

  def to_model(self, batch) -> jax.Array:
    """The data the process runs on: images in [-1, 1] `[B, H, W, C]`, or scaled vectors `[B, D]`."""
    if self.images:
      return preprocess.to_symmetric(batch["image"])
    return jnp.asarray(batch["x"], jnp.float32) / self.cfg.data_scale

  def to_data(self, x: jax.Array) -> jax.Array:
    """Model space -> data: `uint8` images, or float vectors on the data's scale."""
    return preprocess.from_symmetric(x) if self.images else x * self.cfg.data_scale

  def eps_fn(self, params, train: bool = False, key: jax.Array | None = None):
    """The network as `eps_fn(x_t, t)`; with `train`, dropout draws from `key`."""
    rngs = {"dropout": key} if train else None
    return lambda x, t: self.net.apply({"params": params}, x, t, train, rngs=rngs)

  # ------------------------------------------------------------------ protocol

  def init(self, key, batch):
    x = jnp.zeros((1,) + self.shape, jnp.float32)
    return self.net.init(key, x, jnp.zeros((1,), jnp.int32))["params"], {}

  def loss(self, params, model_state, batch, key):
    x0 = self.to_model(batch)
    k_t, k_noise, k_drop = jax.random.split(key, 3)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, self.num_timesteps)
    xt, noise = diffusion.q_sample(self.schedule, k_noise, x0, t)
    eps = self.eps_fn(params, train=True, key=k_drop)(xt, t)
    loss = jnp.mean(diffusion.simple_loss(noise, eps, event_ndims=len(self.shape)))
    return loss, ({"simple_loss": loss}, model_state)

  def _nll_to_data(self, nats):
    """Bound on the model-space data -> bound on the data: undo the vector scaling."""
    return nats if self.images else nats + self.num_dims * math.log(self.cfg.data_scale)

  def evaluate(self, params, model_state, batch, key, full_bound: bool = False):
    x0 = self.to_model(batch)
    s, eps_fn = self.schedule, self.eps_fn(params)
    k_simple, k_bound = jax.random.split(key)
    k_t, k_noise = jax.random.split(k_simple)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, self.num_timesteps)
    xt, noise = diffusion.q_sample(s, k_noise, x0, t)
    out = {"simple_loss": diffusion.simple_loss(noise, eps_fn(xt, t), event_ndims=len(self.shape))}
    decoder = None if self.images else self._gaussian_decoder_nll
    if not full_bound:
      nll = diffusion.single_t_bound(
        s, eps_fn, k_bound, x0, self.variance, clip_denoised=self.clip_denoised, decoder_nll=decoder
      )
      out["nll_bound_estimate"] = self._nll_to_data(nll)
      if self.images:
        out["bits_per_dim_estimate"] = losses.bits_per_dim(nll, self.num_dims)
      return out
    terms = diffusion.full_bound(
      s, eps_fn, k_bound, x0, self.variance, clip_denoised=self.clip_denoised, decoder_nll=decoder
    )
    out["nll_bound"] = self._nll_to_data(terms["total"])
    if self.images:
      for name, key_ in (
        ("bits_per_dim", "total"),
        ("prior_bits_per_dim", "prior"),
        ("kl_bits_per_dim", "kl"),
        ("decoder_bits_per_dim", "decoder"),
      ):
        out[name] = losses.bits_per_dim(terms[key_], self.num_dims)
    else:
      out.update(prior_nats=terms["prior"], kl_nats=terms["kl"], decoder_nats=terms["decoder"])
    return out

  @staticmethod
  def _gaussian_decoder_nll(x0, mean, logvar):
    """Continuous `-log N(x0; mean, e^logvar)` summed over dimensions, `[B]` (vector data)."""
    return -losses.gaussian_log_prob(x0, mean, logvar, event_ndims=x0.ndim - 1)

  # ------------------------------------------------------------------ sampling

  def sample(
    self,
    params,
    key,
    num: int,
    sampler: str | None = None,
    ddim_steps: int | None = None,
    eta: float | None = None,
    trajectory_every: int = 0,
  ):
    """`num` samples in model space, `float32[num, *shape]` (and the trajectory, if asked).

    `sampler` (default `model.sampler`): 'ancestral' (all T steps; `trajectory_every=k`
    also returns `[T/k, num, *shape]`) or 'ddim' (`ddim_steps`, `eta`).
    """
    sampler = sampler or self.cfg.sampler
    shape = (num,) + self.shape
    eps_fn = self.eps_fn(params)
    if sampler == "ancestral":
      return diffusion.ancestral_sample(
        self.schedule,
        eps_fn,
        key,
        shape,
        self.variance,
        clip_denoised=self.clip_denoised,
        trajectory_every=trajectory_every,
      )
    if sampler == "ddim":
      if trajectory_every:
        raise ValueError("trajectory_every is only supported by the ancestral sampler")
      steps = int(ddim_steps or self.cfg.ddim_steps)
      return diffusion.ddim_sample(
        self.schedule,
        eps_fn,
        key,
        shape,
        steps,
        self.cfg.ddim_eta if eta is None else eta,
        clip_denoised=self.clip_denoised,
      )
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")

  def generate(self, params, model_state, key, num: int, labels=None):
    """`num` fresh samples with `model.sampler`: `uint8[num, H, W, C]` or `float32[num, D]`."""
    del model_state, labels  # unconditional
    return self.to_data(self.sample(params, key, num))

  def sample_grid(self, params, model_state, key, batch, num: int):
    """Images: `num` samples with `model.grid_sampler`. Vectors: a scatter of `model.plot_points` of them."""
    sampler = self.cfg.grid_sampler
    if self.images:
      return self.to_data(self.sample(params, key, num, sampler=sampler))
    points = self.to_data(self.sample(params, key, int(self.cfg.plot_points), sampler=sampler))
    r = float(self.cfg.plot_range)
    return scatter_image(points[:, :2], -r, r)[None]

  def interpolate(self, params, key, image_a, image_b, t: int, num: int = 8):
    """`uint8[num, H, W, C]`: decodings of `x_t` interpolated between two images (see `diffusion.interpolate`)."""
    if not self.images:
      raise ValueError("interpolation is defined for image data")
    if not 0 <= t < self.num_timesteps:
      raise ValueError(f"interpolation step t must be in [0, {self.num_timesteps}), got {t}")
    x_a, x_b = (preprocess.to_symmetric(im) for im in (image_a, image_b))
    x = diffusion.interpolate(
      self.schedule,
      self.eps_fn(params),
      key,
      x_a,
      x_b,
      t,
      jnp.linspace(0.0, 1.0, num),
      self.variance,
      clip_denoised=self.clip_denoised,
    )
    return self.to_data(x)
