"""The flow-matching family: conditional flow matching / rectified flow with ODE sampling and likelihood.

`FlowMatchingFamily(config, info)` learns a velocity field `v(x, t)` whose flow carries
`N(0, I)` at `t = 0` to the data at `t = 1` (Lipman et al. 2023; Liu et al. 2023). The
mathematics (paths, the CFM loss, the solvers, the likelihood) is `genjax.flow_matching`;
this module wires it to a network and to the data.

* Networks: images use the U-Net of `genjax.nn.unet` (the DDPM's), vectors the
  time-conditioned MLP. Both embed an integer-like timestep sinusoidally, so the
  continuous time `t` in [0, 1] enters them as `t * TIME_SCALE` (0..1000, the range the
  embedding's frequencies were laid out for); the networks are unchanged.
* Data: images `uint8[B, H, W, C]` are dequantized with uniform noise from the key and
  mapped to [-1, 1], `y = (x + u) / 256 * 2 - 1`, in training and evaluation alike, so the
  model is a density on [-1, 1]^D whose likelihood bounds that of the 8-bit data.
  Vectors `float32[B, D]` are divided by `model.data_scale`.
* Training minimizes the CFM loss (`flow_matching.cfm_loss`: the mean squared error per
  dimension of the network against the path's target velocity) at times from
  `model.time_distribution`; dropout draws from the step key.
* `evaluate` returns per example `cfm_loss` (one random `t`, cheap: the train loop's
  metric and `best_metric`). With `likelihood=True` it also solves the instantaneous
  change of variables backwards (`eval.likelihood_solver`, `eval.likelihood_steps`) and
  returns `nll` in nats of the data: for images the bound `-log p(y) + D log(256 / 2)` on
  the 8-bit likelihood, and `bits_per_dim` (`flow_matching.log_prob_to_bits_per_dim`); for
  vectors `-log p(x / s) + D log s` (no bits/dim). The divergence (`eval.divergence`) is
  by default Hutchinson's estimate for images (`eval.num_probes` Rademacher probes per
  example) and exact for vectors. `experiments.evaluate` asks for the likelihood on
  `eval.likelihood_examples` class-balanced test examples (`final_evaluation`).
* Sampling (`sample_model` in model space; `generate` and `sample_grid` in data space)
  integrates from `temperature * N(0, I)` with `sampling.solver` / `sampling.num_steps`
  (the periodic grid with `sampling.grid_solver` / `sampling.grid_steps`), one compiled
  loop each. Images are the 8-bit bins of the result (`floor((y + 1) * 128)`, clipped),
  the inverse of the dequantization.
* Figures: `samples`; images: `trajectory` (rows of states along the ODE, from the
  noise to the image); 2-D vectors: `density` (the exact log-likelihood on the picture's
  square, with the evaluation's solver settings).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp

from genjax import flow_matching as fm
from genjax.data import preprocess
from genjax.models.base import PICTURE_POINTS, Evaluation, Family, Figure, FigureOptions, register, to_float32
from genjax.nn.unet import TimeMLP, UNet
from genjax.schema import require

#: The networks see `t * TIME_SCALE`: their sinusoidal embedding is laid out for timesteps 0..1000.
TIME_SCALE = 1000.0
#: Values per 8-bit channel; the dequantized data's bins have width `2 / NUM_BINS` in [-1, 1].
NUM_BINS = 256
#: Cells per side of a density picture (each cell costs one ODE solve with exact divergence).
DENSITY_GRID = 128
#: The trajectory figure shows at most this many states after the noise (when `trajectory_every` is 0).
TRAJECTORY_STATES = 10


@dataclasses.dataclass(frozen=True)
class FlowMatchingModel:
  """The `model` section: the path, the training times and the networks (see `genjax/configs/flow_matching.py`)."""

  path: Literal["linear", "cosine"]
  sigma_min: float  # linear path: the noise left at t = 1 (0 = rectified flow)
  time_distribution: Literal["uniform", "logit_normal"]  # training times
  logit_loc: float  # logit_normal: t = sigmoid(loc + scale n); loc > 0 weights the data end
  logit_scale: float
  ch: int  # images: the U-Net
  ch_mult: tuple[int, ...]
  num_res_blocks: int
  attn_resolutions: tuple[int, ...]
  dropout: float
  norm_groups: int
  pad_to: int
  remat: bool  # recompute the U-Net's residual and attention blocks in the backward pass (less memory)
  mlp_hidden: tuple[int, ...]  # vectors: the time-conditioned MLP
  temb_dim: int
  data_scale: float  # vectors are divided by this

  def __post_init__(self):
    require(0 <= self.sigma_min < 1, "sigma_min", self.sigma_min, "a number in [0, 1)")
    require(
      self.path == "linear" or self.sigma_min == 0,
      "sigma_min",
      self.sigma_min,
      "0 for the cosine path (sigma_min applies to the linear path only)",
    )
    require(math.isfinite(self.logit_loc), "logit_loc", self.logit_loc, "a finite number")
    require(0 < self.logit_scale < math.inf, "logit_scale", self.logit_scale, "a positive number")
    for name in ("ch", "num_res_blocks", "norm_groups", "temb_dim"):
      require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
    require(len(self.ch_mult) > 0 and min(self.ch_mult) > 0, "ch_mult", self.ch_mult, "positive multipliers")
    require(0 <= self.dropout < 1, "dropout", self.dropout, "a number in [0, 1)")
    require(self.pad_to >= 0, "pad_to", self.pad_to, "an integer >= 0 (0 = the next multiple of 2**(levels-1))")
    require(self.temb_dim % 2 == 0, "temb_dim", self.temb_dim, "an even integer (sin and cos halves)")
    require(
      len(self.mlp_hidden) > 0 and min(self.mlp_hidden) > 0, "mlp_hidden", self.mlp_hidden, "positive widths"
    )
    require(0 < self.data_scale < math.inf, "data_scale", self.data_scale, "a positive number")


@dataclasses.dataclass(frozen=True)
class FlowMatchingSampling:
  """The `sampling` section."""

  solver: Literal["euler", "heun", "rk4"]  # generate() and experiments.sample
  num_steps: int
  temperature: float  # scales the base noise: 1 samples the model
  grid_solver: Literal["euler", "heun", "rk4"]  # the train loop's periodic pictures
  grid_steps: int
  trajectory_every: int  # --kind=trajectory: steps between shown states (0 = at most 10 states)

  def __post_init__(self):
    for name in ("num_steps", "grid_steps"):
      require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
    require(0 <= self.temperature < math.inf, "temperature", self.temperature, "a finite number >= 0")
    require(
      self.trajectory_every == 0 or (self.trajectory_every > 0 and self.num_steps % self.trajectory_every == 0),
      "trajectory_every",
      self.trajectory_every,
      f"0 or a divisor of sampling.num_steps={self.num_steps}",
    )


@dataclasses.dataclass(frozen=True)
class FlowMatchingEval:
  """The family's keys of the `eval` section: the ODE log-likelihood of `experiments.evaluate`."""

  likelihood_examples: int  # test examples for the likelihood (0 = all)
  likelihood_steps: int
  likelihood_solver: Literal["euler", "heun", "rk4"]
  divergence: Literal["auto", "exact", "hutchinson"]  # auto: Hutchinson for images, exact for vectors
  num_probes: int  # Hutchinson: Rademacher probes per example

  def __post_init__(self):
    require(
      self.likelihood_examples >= 0, "likelihood_examples", self.likelihood_examples, "an integer >= 0 (0 = all)"
    )
    require(self.likelihood_steps >= 1, "likelihood_steps", self.likelihood_steps, "an integer >= 1")
    require(self.num_probes >= 1, "num_probes", self.num_probes, "an integer >= 1")


@register
class FlowMatchingFamily(Family):
  """A continuous normalizing flow trained by flow matching, as pure functions of `(params, batch, key)`."""

  @classmethod
  def conv_widths(cls, model) -> list[int]:
    return [model.ch * k for k in model.ch_mult]

  Model = FlowMatchingModel
  Sampling = FlowMatchingSampling
  EvalOptions = FlowMatchingEval
  best_metric = "cfm_loss"

  def __init__(self, config: Any, info: Any):
    super().__init__(config, info)
    cfg = self.cfg = self.model_config
    self.path = fm.get_path(cfg.path, cfg.sigma_min)
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
        remat=cfg.remat,
        dtype=self.compute_dtype,
        param_dtype=self.param_dtype,
      )
    else:
      self.net = TimeMLP(
        hidden=tuple(cfg.mlp_hidden), temb_dim=cfg.temb_dim, dtype=self.compute_dtype, param_dtype=self.param_dtype
      )
    ec = self.eval_config
    self.divergence = ec.divergence if ec.divergence != "auto" else ("hutchinson" if self.images else "exact")

  # ------------------------------------------------------------------ data

  def to_model(self, batch, key: jax.Array) -> jax.Array:
    """The data the flow models: dequantized images `(x + u) / 256 * 2 - 1` in [-1, 1), `u ~ U[0, 1)`
    from `key`, `float32[B, H, W, C]`; or vectors divided by `model.data_scale`, `float32[B, D]`."""
    self.check_batch(batch)
    if self.images:
      return 2.0 * preprocess.dequantize_uniform(key, batch["image"], NUM_BINS) - 1.0
    return jnp.asarray(batch["x"], jnp.float32) / self.cfg.data_scale

  def to_data(self, x: jax.Array) -> jax.Array:
    """Model space -> data: `uint8[N, H, W, C]` (each value's 8-bit bin, clipped) or vectors times the scale."""
    if self.images:
      return jnp.clip(jnp.floor((x + 1.0) * (NUM_BINS / 2)), 0, NUM_BINS - 1).astype(jnp.uint8)
    return x * self.cfg.data_scale

  def velocity_fn(self, params, train: bool = False, key: jax.Array | None = None) -> fm.VelocityFn:
    """The network as `v_fn(x [B, ...], t float32[B] in [0, 1]) -> float32[B, ...]`; `train`: dropout
    from `key`. The network runs in `model.dtype`; its output is cast to float32 for the loss and the ODEs."""
    rngs = {"dropout": key} if train else None
    return lambda x, t: to_float32(self.net.apply({"params": params}, x, t * TIME_SCALE, train, rngs=rngs))

  # ------------------------------------------------------------------ the contract

  def init(self, key, batch):
    self.check_batch(batch)
    x = jnp.zeros((1,) + self.shape, jnp.float32)
    return self.net.init(key, x, jnp.zeros((1,), jnp.float32))["params"], {}

  def loss(self, params, model_state, batch, key):
    """The CFM loss averaged over the batch: `(loss, ({'cfm_loss': loss}, model_state))`.

    `key` splits three ways: the dequantization noise, the times and base noise of the
    CFM loss, and dropout.
    """
    k_data, k_cfm, k_drop = jax.random.split(key, 3)
    x1 = self.to_model(batch, k_data)
    cfg = self.cfg
    per_example = fm.cfm_loss(
      self.path,
      self.velocity_fn(params, train=True, key=k_drop),
      k_cfm,
      x1,
      cfg.time_distribution,
      cfg.logit_loc,
      cfg.logit_scale,
    )
    loss = jnp.mean(per_example)
    return loss, ({"cfm_loss": loss}, model_state)

  def log_likelihood(self, params, x1: jax.Array, key: jax.Array | None = None) -> fm.Likelihood:
    """`log p(x1)` in nats (`[B]` fields) of model-space data `x1` `[B, ...]`, by the instantaneous
    change of variables with the `eval` section's solver, steps and divergence (`key`: Hutchinson's probes)."""
    ec = self.eval_config
    return fm.log_likelihood(
      self.velocity_fn(params),
      x1,
      num_steps=ec.likelihood_steps,
      solver=ec.likelihood_solver,
      divergence=self.divergence,
      key=key,
      num_probes=ec.num_probes,
    )

  def nll_of_data(self, log_prob: jax.Array) -> dict[str, jax.Array]:
    """Model-space `log p` `[B]` -> `{'nll': [B]}` in nats of the data (images also `'bits_per_dim'`).

    Images: `-log p(y) + D log(256 / 2)`, a bound on the 8-bit data's NLL in expectation over
    the dequantization noise; vectors: `-log p(x / s) + D log s`, the density of the unscaled data.
    """
    d = self.num_dims
    if self.images:
      return {
        "nll": -log_prob + d * math.log(NUM_BINS / 2.0),
        "bits_per_dim": fm.log_prob_to_bits_per_dim(log_prob, d, NUM_BINS, 2.0),
      }
    return {"nll": -log_prob + d * math.log(self.cfg.data_scale)}

  def evaluate(self, params, model_state, batch, key, likelihood: bool = False):
    """Per-example `cfm_loss` `[B]` (one time and noise draw each, uniform times so runs with
    different training times compare); with `likelihood`, also `nll` `[B]` and, for images,
    `bits_per_dim` `[B]` (see `nll_of_data`).

    `key` splits three ways (`jax.random.split(key, 3)`): the dequantization noise, the CFM
    loss's draws, and the Hutchinson probes.
    """
    k_data, k_cfm, k_probe = jax.random.split(key, 3)
    x1 = self.to_model(batch, k_data)
    out = {"cfm_loss": fm.cfm_loss(self.path, self.velocity_fn(params), k_cfm, x1)}
    if likelihood:
      out.update(self.nll_of_data(self.log_likelihood(params, x1, k_probe).log_prob))
    return out

  # ------------------------------------------------------------------ sampling

  def sample_model(
    self,
    params,
    key,
    num: int,
    solver: str | None = None,
    num_steps: int | None = None,
    trajectory_every: int = 0,
  ):
    """`num` samples in model space, `float32[num, *shape]`, from `sampling.temperature * N(0, I)`.

    `solver` and `num_steps` default to `sampling.solver` / `sampling.num_steps`. With
    `trajectory_every=k` (a divisor of the steps) also returns the states after every k
    steps, `[steps / k, num, *shape]` (the last is the sample).
    """
    sc = self.sampling_config
    return fm.sample(
      self.velocity_fn(params),
      key,
      (num,) + self.shape,
      num_steps=num_steps or sc.num_steps,
      solver=solver or sc.solver,
      temperature=sc.temperature,
      trajectory_every=trajectory_every,
    )

  def generate(self, params, model_state, key, num: int, labels=None):
    """`num` samples by `sampling.solver` / `sampling.num_steps`: `uint8[num, H, W, C]` or `float32[num, D]`."""
    if labels is not None:
      raise ValueError("this flow-matching model is unconditional; generate() takes no labels")
    return self.to_data(self.sample_model(params, key, num))

  # ------------------------------------------------------------------ pictures

  def sample_grid(self, params, model_state, key, batch, num: int) -> Figure:
    """`num` samples (vector data: `PICTURE_POINTS`) with `sampling.grid_solver` and `sampling.grid_steps`."""
    sc = self.sampling_config
    n = num if self.images else PICTURE_POINTS
    x = self.to_data(self.sample_model(params, key, n, solver=sc.grid_solver, num_steps=sc.grid_steps))
    return Figure.images(x) if self.images else Figure.points(x)

  def figures(self):
    kinds = dict(super().figures())
    if self.images:
      kinds["trajectory"] = self.figure_trajectory
    if self.shape == (2,):
      kinds["density"] = self.figure_density
    return kinds

  def trajectory_every(self) -> int:
    """Steps between the trajectory figure's states: `sampling.trajectory_every`, or (0) the smallest
    divisor k of `sampling.num_steps` that leaves at most `TRAJECTORY_STATES` states."""
    n = self.sampling_config.num_steps
    every = self.sampling_config.trajectory_every
    return every or next(k for k in range(1, n + 1) if n % k == 0 and n // k <= TRAJECTORY_STATES)

  def figure_trajectory(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """`options.num` ODE solutions (rows): the base noise (left), then the state every
    `trajectory_every()` steps up to the sample (right), values clipped to [-1, 1]."""
    del source
    every = self.trajectory_every()
    sample = jax.jit(self.sample_model, static_argnames=("num", "trajectory_every"))
    _, traj = sample(params, key, num=options.num, trajectory_every=every)  # [S, num, ...]
    x0 = self.sampling_config.temperature * jax.random.normal(
      key, traj.shape[1:], jnp.float32
    )  # fm.sample's noise
    states = jnp.concatenate([x0[None], traj], axis=0)
    images = self.to_data(jnp.clip(states, -1.0, 1.0))
    return Figure.images(jnp.swapaxes(images, 0, 1).reshape((-1,) + self.shape), ncol=states.shape[0])

  def grid_log_prob(self, params, lo: float, hi: float, size: int) -> jax.Array:
    """`log p` `float32[size, size]` of the data at the cell centres of `[lo, hi]^2` (row i: the i-th
    second coordinate, ascending), exact divergence, the `eval` section's solver and steps."""
    if self.shape != (2,):
      raise ValueError(f"a density picture needs 2-D data, got shape {self.shape}")
    centres = lo + (jnp.arange(size, dtype=jnp.float32) + 0.5) * (hi - lo) / size
    gx, gy = jnp.meshgrid(centres, centres, indexing="xy")  # gy varies along rows
    points = jnp.stack([gx.reshape(-1), gy.reshape(-1)], axis=-1)
    ec = self.eval_config
    like = fm.log_likelihood(
      self.velocity_fn(params),
      points / self.cfg.data_scale,
      num_steps=ec.likelihood_steps,
      solver=ec.likelihood_solver,
      divergence="exact",
    )
    return (-self.nll_of_data(like.log_prob)["nll"]).reshape(size, size)

  def figure_density(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """The learned density of a 2-D toy on the square `options.extent` (`DENSITY_GRID` cells a side)."""
    del model_state, key, source
    lo, hi = options.extent
    grid = jax.jit(self.grid_log_prob, static_argnums=(1, 2, 3))
    return Figure.density(grid(params, lo, hi, DENSITY_GRID), (lo, hi))

  # ------------------------------------------------------------------ evaluation

  def final_evaluation(self) -> Evaluation:
    """The ODE log-likelihood on `eval.likelihood_examples` examples (a class-balanced choice; 0 = all)."""
    return Evaluation(options={"likelihood": True}, max_examples=self.eval_config.likelihood_examples)
