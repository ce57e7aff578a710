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

Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022), with
`model.conditional=True`: the network takes the label (`batch['label']`; a learned
embedding added to the time embedding, `genjax.nn.unet`), and training replaces each
label by the null label `K` (K = the number of classes) with probability
`model.label_dropout`, so that one network learns both `eps(x_t, c)` and the
unconditional `eps(x_t, null)`. Sampling uses the guided prediction
`(1 + w) eps(x_t, c) - w eps(x_t, null)` with `w = sampling.guidance`
(`diffusion.guided_eps_fn`: one network call on the doubled batch; `w = 0` is the plain
conditional model and costs one call on the batch), in both samplers. `generate` takes
`labels int32[num]` (default: the classes in turn). The loss, `evaluate` and its bound
are those of the conditional model given the example's true label: the bound is on
`-log p(x | c)`, not on `-log p(x)` (no dropout, no guidance). The `guidance` figure
draws rows of classes against columns of guidance scales (`GUIDANCE_SCALES`), each row
from one shared noise; the interpolation figure uses the null label (its end points may
belong to different classes).
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
from genjax.models.base import PICTURE_POINTS, Evaluation, Family, Figure, FigureOptions, register, to_float32
from genjax.nn.unet import TimeMLP, UNet
from genjax.schema import invalid, require

SAMPLERS = ("ancestral", "ddim")
INTERPOLATION_STEPS = 10
#: The columns of the `guidance` figure: classifier-free guidance scales w.
GUIDANCE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)


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
  remat: bool  # recompute the U-Net's residual and attention blocks in the backward pass (less memory)
  mlp_hidden: tuple[int, ...]  # vectors
  temb_dim: int  # vectors
  data_scale: float  # vectors are divided by this
  conditional: bool  # class-conditional (takes batch['label']; classifier-free guidance)
  label_dropout: float  # conditional: probability that training replaces a label by the null label

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
    require(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "a probability in [0, 1)")


@dataclasses.dataclass(frozen=True)
class DDPMSampling:
  """The `sampling` section."""

  sampler: Literal["ancestral", "ddim"]  # generate() and experiments.sample
  grid_sampler: Literal["ancestral", "ddim"]  # the train loop's periodic pictures
  ddim_steps: int
  ddim_eta: float  # 0 = deterministic DDIM, 1 = ancestral-like
  trajectory_every: int  # the trajectory figure: steps between shown states (0 = T/10)
  interp_t: int  # the interpolation figure: the step t of x_t (0-based)
  guidance: float  # classifier-free guidance scale w >= 0 (conditional models; 0 = none)

  def __post_init__(self):
    require(self.ddim_steps >= 1, "ddim_steps", self.ddim_steps, "an integer >= 1")
    require(0 <= self.ddim_eta < math.inf, "ddim_eta", self.ddim_eta, "a finite number >= 0")
    require(self.trajectory_every >= 0, "trajectory_every", self.trajectory_every, "an integer >= 0 (0 = T/10)")
    require(self.interp_t >= 0, "interp_t", self.interp_t, "an integer >= 0")
    require(0 <= self.guidance < math.inf, "guidance", self.guidance, "a finite number >= 0")


@dataclasses.dataclass(frozen=True)
class DDPMEval:
  """The family's keys of the `eval` section."""

  bound_examples: int  # experiments.evaluate: test examples for the exact T-term bound (0 = all)

  def __post_init__(self):
    require(self.bound_examples >= 0, "bound_examples", self.bound_examples, "an integer >= 0 (0 = all)")


@register
class DDPMFamily(Family):
  """Denoising diffusion probabilistic model as pure functions of `(params, batch, key)`."""

  @classmethod
  def conv_widths(cls, model) -> list[int]:
    return [model.ch * k for k in model.ch_mult]

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
    self.conditional = bool(cfg.conditional)
    if self.conditional and self.num_classes < 1:
      raise invalid("model.conditional", True, f"False: dataset {info.name!r} has no class labels")
    if sc.guidance > 0 and not self.conditional:
      raise invalid("sampling.guidance", sc.guidance, "0 for an unconditional model (model.conditional=False)")
    self.label_dropout = float(cfg.label_dropout)
    classes = self.num_classes if self.conditional else 0
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
        num_classes=classes,
        remat=cfg.remat,
        dtype=self.compute_dtype,
        param_dtype=self.param_dtype,
      )
      self.clip_denoised = bool(cfg.clip_denoised)
    else:
      self.net = TimeMLP(
        hidden=tuple(cfg.mlp_hidden),
        temb_dim=cfg.temb_dim,
        num_classes=classes,
        dtype=self.compute_dtype,
        param_dtype=self.param_dtype,
      )
      self.clip_denoised = False  # vectors are not bounded to [-1, 1]
    self.variance = cfg.variance

  # ------------------------------------------------------------------ data

  def to_model(self, batch, key: jax.Array | None = None) -> jax.Array:
    """The data the process runs on: images in [-1, 1] `[B, H, W, C]`, or scaled vectors `[B, D]`
    (deterministic: `key` is not used)."""
    del key
    self.check_batch(batch, need_labels=self.conditional)
    if self.images:
      return preprocess.to_symmetric(batch["image"])
    return jnp.asarray(batch["x"], jnp.float32) / self.cfg.data_scale

  def to_data(self, x: jax.Array) -> jax.Array:
    """Model space -> data: `uint8` images, or float vectors on the data's scale."""
    return preprocess.from_symmetric(x) if self.images else x * self.cfg.data_scale

  @property
  def null_label(self) -> int:
    """The label of the unconditional model: the number of classes (conditional models)."""
    return self.num_classes

  def eps_fn(self, params, train: bool = False, key: jax.Array | None = None, labels: jax.Array | None = None):
    """The network as `eps_fn(x_t, t)`; with `train`, dropout draws from `key`. A conditional
    model needs `labels int32[B]` in `[0, K]` (`K` = the null label) for batches of `B`. The network
    runs in `model.dtype`; `eps_fn` returns float32 (the loss, the bound and the samplers are float32)."""
    rngs = {"dropout": key} if train else None
    if not self.conditional:
      if labels is not None:
        raise ValueError("this DDPM is unconditional (model.conditional=False); it takes no labels")
      return lambda x, t: to_float32(self.net.apply({"params": params}, x, t, train, rngs=rngs))
    if labels is None:
      raise ValueError("this DDPM is conditional (model.conditional=True); pass labels int32[B]")
    return lambda x, t: to_float32(self.net.apply({"params": params}, x, t, train, label=labels, rngs=rngs))

  def label_eps_fn(self, params):
    """The conditional network as `eps_fn(x_t, t, labels)` (labels in `[0, K]`, `K` = null)."""
    return lambda x, t, labels: self.eps_fn(params, labels=labels)(x, t)

  def guided_eps_fn(self, params, labels: jax.Array | None, guidance: float | jax.Array | None = None):
    """The sampling network `eps_fn(x_t, t)`: the unconditional model's, or a conditional
    model's guided `(1 + w) eps(x, c) - w eps(x, null)` for `labels int32[B]` with
    `w = guidance` (default `sampling.guidance`; a Python 0 costs one call on the batch)."""
    if not self.conditional:
      return self.eps_fn(params, labels=labels)
    w = self.sampling_config.guidance if guidance is None else guidance
    labels = jnp.asarray(labels, jnp.int32)
    return diffusion.guided_eps_fn(self.label_eps_fn(params), labels, jnp.full_like(labels, self.null_label), w)

  def drop_labels(self, labels: jax.Array, key: jax.Array) -> jax.Array:
    """`labels int32[B]` with each replaced by the null label `K` with probability `model.label_dropout`."""
    drop = jax.random.bernoulli(key, self.label_dropout, labels.shape)
    return jnp.where(drop, self.null_label, labels).astype(jnp.int32)

  # ------------------------------------------------------------------ the contract

  def init(self, key, batch):
    self.check_batch(batch)
    x = jnp.zeros((1,) + self.shape, jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    if self.conditional:
      return self.net.init(key, x, t, label=jnp.zeros((1,), jnp.int32))["params"], {}
    return self.net.init(key, x, t)["params"], {}

  def loss(self, params, model_state, batch, key):
    x0 = self.to_model(batch, key)
    k_t, k_noise, k_drop = jax.random.split(key, 3)
    labels = None
    if self.conditional:  # (unconditional models: the same keys as before conditioning existed)
      k_drop, k_label = jax.random.split(k_drop)
      labels = self.drop_labels(jnp.asarray(batch["label"], jnp.int32), k_label)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, self.num_timesteps)
    xt, noise = diffusion.q_sample(self.schedule, k_noise, x0, t)
    eps = self.eps_fn(params, train=True, key=k_drop, labels=labels)(xt, t)
    loss = jnp.mean(diffusion.simple_loss(noise, eps, event_ndims=len(self.shape)))
    return loss, ({"simple_loss": loss}, model_state)

  def _nll_to_data(self, nats):
    """Bound on the model-space data -> bound on the data: undo the vector scaling."""
    return nats if self.images else nats + self.num_dims * math.log(self.cfg.data_scale)

  def evaluate(self, params, model_state, batch, key, full_bound: bool = False):
    """Per-example metrics `[B]` (see the module docstring); a conditional model is scored
    given each example's true label: the bound is on `-log p(x | c)`."""
    x0 = self.to_model(batch, key)
    labels = jnp.asarray(batch["label"], jnp.int32) if self.conditional else None
    s, eps_fn = self.schedule, self.eps_fn(params, labels=labels)
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
    labels: jax.Array | None = None,
    guidance: float | jax.Array | None = None,
  ):
    """`num` samples in model space, `float32[num, *shape]` (and the trajectory, if asked).

    `sampler` (default `sampling.sampler`): 'ancestral' (all T steps; `trajectory_every=k`
    also returns `[T/k, num, *shape]`) or 'ddim' (`sampling.ddim_steps`, `sampling.ddim_eta`).
    A conditional model draws class `labels int32[num]` (default: the classes in turn)
    with guidance scale `guidance` (default `sampling.guidance`); the noise depends on
    `key` only, so the same key gives the same noise for any labels and guidance.
    """
    sampler = sampler or self.sampling_config.sampler
    shape = (num,) + self.shape
    if self.conditional:
      labels = self.default_labels(num, labels)
    eps_fn = self.guided_eps_fn(params, labels, guidance)
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
    """`num` fresh samples with `sampling.sampler`: `uint8[num, H, W, C]` or `float32[num, D]`.

    A conditional model draws `labels int32[num]` (default: the classes in turn) with
    guidance `sampling.guidance`."""
    if labels is not None and not self.conditional:
      raise ValueError("this DDPM is unconditional; generate() takes no labels")
    return self.to_data(self.sample_model(params, key, num, labels=labels))

  def interpolate(self, params, key, image_a, image_b, t: int, num: int = 8):
    """`uint8[num, H, W, C]`: decodings of `x_t` interpolated between two images (see `diffusion.interpolate`)."""
    if not self.images:
      raise ValueError("interpolation is defined for image data")
    if not 0 <= t < self.num_timesteps:
      raise ValueError(f"interpolation step t must be in [0, {self.num_timesteps}), got {t}")
    x_a, x_b = (preprocess.to_symmetric(im) for im in (image_a, image_b))
    labels = jnp.full((num,), self.null_label, jnp.int32) if self.conditional else None
    x = diffusion.interpolate(
      self.schedule,
      self.eps_fn(params, labels=labels),
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
    """`num` samples (vector data: `PICTURE_POINTS`) with `sampling.grid_sampler` (cheaper than `sampler`);
    a conditional model draws the classes in turn, one class per column."""
    sampler = self.sampling_config.grid_sampler
    if self.images:
      x = self.to_data(self.sample_model(params, key, num, sampler=sampler))
      return Figure.images(x, ncol=self.num_classes if self.conditional else 0)
    num = PICTURE_POINTS
    x = self.to_data(self.sample_model(params, key, num, sampler=sampler))
    labels = self.default_labels(num, None) if self.conditional else None
    return Figure.points(x, labels=labels)

  def figures(self):
    kinds = dict(super().figures())
    if self.images:
      kinds.update(trajectory=self.figure_trajectory, interpolation=self.figure_interpolation)
      if self.conditional:
        kinds.update(guidance=self.figure_guidance)
    return kinds

  def guidance_images(self, params, key, labels: jax.Array, scales=GUIDANCE_SCALES) -> jax.Array:
    """`uint8[R, S, H, W, C]`: for each of the `S` guidance `scales`, samples of `labels int32[R]`
    from the same key, so that the columns share every noise draw and differ only by w."""
    sample = jax.jit(
      lambda p, w: self.to_data(self.sample_model(p, key, labels.shape[0], labels=labels, guidance=w))
    )
    columns = [sample(params, jnp.float32(w)) for w in scales]  # one compile: w is traced
    return jnp.stack(columns, axis=1)

  def figure_guidance(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """Rows: the classes 0..K-1 (or, with `options.label`, `options.num // len(GUIDANCE_SCALES)`
    rows of that class); columns: the guidance scales `GUIDANCE_SCALES`, left to right,
    each row from one noise (`sampling.sampler`)."""
    del model_state, source
    if options.label is None:
      labels = jnp.arange(self.num_classes, dtype=jnp.int32)
    else:
      labels = jnp.full((max(options.num // len(GUIDANCE_SCALES), 1),), options.label, jnp.int32)
    grid = self.guidance_images(params, key, labels)
    return Figure.images(grid.reshape((-1,) + self.shape), ncol=len(GUIDANCE_SCALES))

  def figure_trajectory(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """`options.num` ancestral chains (rows), the state every `sampling.trajectory_every` steps
    (0: T/10), from noise (left) to `x_0` (right), pixels clipped to [-1, 1]."""
    every = self.sampling_config.trajectory_every or max(self.num_timesteps // 10, 1)
    sample = jax.jit(self.sample_model, static_argnames=("num", "sampler", "trajectory_every"))
    labels = None
    if self.conditional:
      labels = self.default_labels(
        options.num, None if options.label is None else jnp.full((options.num,), options.label)
      )
    _, traj = sample(params, key, num=options.num, sampler="ancestral", trajectory_every=every, labels=labels)
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
