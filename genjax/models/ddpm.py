"""The DDPM family: denoising diffusion with the simple loss, the full bound and two samplers.

`DDPMFamily(config, info)` models images (uint8, scaled to [-1, 1] by
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
* Sampling (`sample_model` in model space; `generate` and `sample_grid` in data space):
  ancestral over all T steps or DDIM (`sampling.sampler`, `sampling.grid_sampler`),
  one compiled loop each; the trainer passes the EMA parameters by default. Figures:
  `samples`, and for images `trajectory` (reverse chains) and `interpolation` (through
  `x_t` of two test images, spherical in the noise).
* `experiments.evaluate` runs the exact bound on `eval.bound_examples` test examples.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from genjax import diffusion, losses
from genjax.data import preprocess
from genjax.models.base import PICTURE_POINTS, Evaluation, Family, Figure, FigureOptions, register
from genjax.nn.unet import TimeMLP, UNet
from genjax.schema import invalid, require

SAMPLERS = ("ancestral", "ddim")
INTERPOLATION_STEPS = 10


@dataclasses.dataclass(frozen=True)
class DDPMModel:
  """The `model` section: the noise process and the networks (see `genjax/configs/ddpm.py`)."""

  num_timesteps: int
  schedule: Literal["linear", "cosine"]
  beta_start: float
  beta_end: float
  variance: Literal["fixed_small", "fixed_large"]
  clip_denoised: bool  # images: clip x0_hat to [-1, 1] in the reverse mean
  ch: int
  ch_mult: tuple[int, ...]
  num_res_blocks: int
  attn_resolutions: tuple[int, ...]
  dropout: float
  norm_groups: int
  pad_to: int
  mlp_hidden: tuple[int, ...]  # vectors
  temb_dim: int  # vectors
  data_scale: float  # vectors are divided by this

  def __post_init__(self):
    require(self.num_timesteps >= 1, "num_timesteps", self.num_timesteps, "an integer >= 1")
    require(0 < self.beta_start <= self.beta_end < 1, "beta_end", self.beta_end, "beta_start <= beta_end < 1")
    for name in ("ch", "num_res_blocks", "norm_groups", "temb_dim"):
      require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
    require(len(self.ch_mult) > 0 and min(self.ch_mult) > 0, "ch_mult", self.ch_mult, "positive multipliers")
    require(0 <= self.dropout < 1, "dropout", self.dropout, "a number in [0, 1)")
    require(self.pad_to >= 0, "pad_to", self.pad_to, "an integer >= 0 (0 = the next multiple of 2**(levels-1))")
    require(
      len(self.mlp_hidden) > 0 and min(self.mlp_hidden) > 0, "mlp_hidden", self.mlp_hidden, "positive widths"
    )
    require(0 < self.data_scale < math.inf, "data_scale", self.data_scale, "a positive number")


@dataclasses.dataclass(frozen=True)
class DDPMSampling:
  """The `sampling` section."""

  sampler: Literal["ancestral", "ddim"]  # generate() and experiments.sample
  grid_sampler: Literal["ancestral", "ddim"]  # the train loop's periodic pictures
  ddim_steps: int
  ddim_eta: float  # 0 = deterministic DDIM, 1 = ancestral-like
  trajectory_every: int  # the trajectory figure: steps between shown states (0 = T/10)
  interp_t: int  # the interpolation figure: the step t of x_t (0-based)

  def __post_init__(self):
    require(self.ddim_steps >= 1, "ddim_steps", self.ddim_steps, "an integer >= 1")
    require(0 <= self.ddim_eta < math.inf, "ddim_eta", self.ddim_eta, "a finite number >= 0")
    require(self.trajectory_every >= 0, "trajectory_every", self.trajectory_every, "an integer >= 0 (0 = T/10)")
    require(self.interp_t >= 0, "interp_t", self.interp_t, "an integer >= 0")


@dataclasses.dataclass(frozen=True)
class DDPMEval:
  """The family's keys of the `eval` section."""

  bound_examples: int  # experiments.evaluate: test examples for the exact T-term bound (0 = all)

  def __post_init__(self):
    require(self.bound_examples >= 0, "bound_examples", self.bound_examples, "an integer >= 0 (0 = all)")


@register
class DDPMFamily(Family):
  """Denoising diffusion probabilistic model as pure functions of `(params, batch, key)`."""

  Model = DDPMModel
  Sampling = DDPMSampling
  EvalOptions = DDPMEval
  best_metric = "simple_loss"

  def __init__(self, config: Any, info: Any):
    super().__init__(config, info)
    cfg = self.cfg = self.model_config
    sc = self.sampling_config
    if sc.ddim_steps > cfg.num_timesteps:
      raise invalid("sampling.ddim_steps", sc.ddim_steps, f"at most model.num_timesteps={cfg.num_timesteps}")
    if sc.interp_t >= cfg.num_timesteps:
      raise invalid("sampling.interp_t", sc.interp_t, f"less than model.num_timesteps={cfg.num_timesteps}")
    self.schedule = diffusion.get_schedule(cfg.schedule, int(cfg.num_timesteps), cfg.beta_start, cfg.beta_end)
    self.num_timesteps = int(cfg.num_timesteps)
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
      self.net = TimeMLP(hidden=tuple(cfg.mlp_hidden), temb_dim=cfg.temb_dim)
      self.clip_denoised = False  # vectors are not bounded to [-1, 1]
    self.variance = cfg.variance

  # ------------------------------------------------------------------ data

  def to_model(self, batch, key: jax.Array | None = None) -> jax.Array:
    """The data the process runs on: images in [-1, 1] `[B, H, W, C]`, or scaled vectors `[B, D]`
    (deterministic: `key` is not used)."""
    del key
    self.check_batch(batch)
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

  # ------------------------------------------------------------------ the contract

  def init(self, key, batch):
    self.check_batch(batch)
    x = jnp.zeros((1,) + self.shape, jnp.float32)
    return self.net.init(key, x, jnp.zeros((1,), jnp.int32))["params"], {}

  def loss(self, params, model_state, batch, key):
    x0 = self.to_model(batch, key)
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
    x0 = self.to_model(batch, key)
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

  def sample_model(
    self,
    params,
    key,
    num: int,
    sampler: str | None = None,
    trajectory_every: int = 0,
  ):
    """`num` samples in model space, `float32[num, *shape]` (and the trajectory, if asked).

    `sampler` (default `sampling.sampler`): 'ancestral' (all T steps; `trajectory_every=k`
    also returns `[T/k, num, *shape]`) or 'ddim' (`sampling.ddim_steps`, `sampling.ddim_eta`).
    """
    sampler = sampler or self.sampling_config.sampler
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
      sc = self.sampling_config
      return diffusion.ddim_sample(
        self.schedule, eps_fn, key, shape, sc.ddim_steps, sc.ddim_eta, clip_denoised=self.clip_denoised
      )
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")

  def generate(self, params, model_state, key, num: int, labels=None):
    """`num` fresh samples with `sampling.sampler`: `uint8[num, H, W, C]` or `float32[num, D]`."""
    if labels is not None:
      raise ValueError("this DDPM is unconditional; generate() takes no labels")
    return self.to_data(self.sample_model(params, key, num))

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

  # ------------------------------------------------------------------ pictures

  def sample_grid(self, params, model_state, key, batch, num: int) -> Figure:
    """`num` samples (vector data: `PICTURE_POINTS`) with `sampling.grid_sampler` (cheaper than `sampler`)."""
    sampler = self.sampling_config.grid_sampler
    if self.images:
      return Figure.images(self.to_data(self.sample_model(params, key, num, sampler=sampler)))
    return Figure.points(self.to_data(self.sample_model(params, key, PICTURE_POINTS, sampler=sampler)))

  def figures(self):
    kinds = dict(super().figures())
    if self.images:
      kinds.update(trajectory=self.figure_trajectory, interpolation=self.figure_interpolation)
    return kinds

  def figure_trajectory(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """`options.num` ancestral chains (rows), the state every `sampling.trajectory_every` steps
    (0: T/10), from noise (left) to `x_0` (right), pixels clipped to [-1, 1]."""
    every = self.sampling_config.trajectory_every or max(self.num_timesteps // 10, 1)
    sample = jax.jit(self.sample_model, static_argnames=("num", "sampler", "trajectory_every"))
    _, traj = sample(params, key, num=options.num, sampler="ancestral", trajectory_every=every)  # [S, num, ...]
    traj = self.to_data(jnp.clip(traj, -1.0, 1.0))
    steps = traj.shape[0]
    return Figure.images(jnp.swapaxes(traj, 0, 1).reshape((-1,) + self.shape), ncol=steps)

  def figure_interpolation(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """`options.num // 10` rows: test image a, 8 decodings of `x_t` (t = `sampling.interp_t`), image b."""
    rows = max(options.num // INTERPOLATION_STEPS, 1)
    rng = np.random.default_rng(options.seed)
    images = source[rng.choice(len(source), size=2 * rows, replace=False)]["image"]
    interp = jax.jit(self.interpolate, static_argnames=("t", "num"))
    out = []
    for r in range(rows):
      a, b = images[2 * r], images[2 * r + 1]
      t = self.sampling_config.interp_t
      mid = np.asarray(interp(params, jax.random.fold_in(key, r), a, b, t=t, num=INTERPOLATION_STEPS))[1:-1]
      out.extend([a, *mid, b])
    return Figure.images(np.stack(out), ncol=INTERPOLATION_STEPS)

  # ------------------------------------------------------------------ evaluation

  def final_evaluation(self) -> Evaluation:
    """The exact bound (all T terms) on `eval.bound_examples` examples (a class-balanced choice)."""
    return Evaluation(options={"full_bound": True}, max_examples=self.eval_config.bound_examples)
