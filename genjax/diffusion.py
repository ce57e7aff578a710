"""The DDPM diffusion process as pure functions (Ho et al. 2020; Nichol & Dhariwal 2021).

jax and numpy only: no Flax, no config. Data `x_0` live in [-1, 1] (8-bit images
through `preprocess.to_symmetric`); time indices `t` are 0-based, `t = 0..T-1`, where
index `t` is the paper's step `t + 1`: `x_t` below means the paper's `x_{t+1}` and
`q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)` with `abar_t = prod_{s<=t} alpha_s`.

Axes: the per-step functions take `t` as a scalar (one example, or one index shared by
the batch) or as `int[*batch]` indexing the leading axes of `x` (`int[B]` for `x [B, ...]`),
so they are safe to `jax.vmap` over examples. Functions that reduce over an example take
a required keyword-only `event_ndims` (the trailing axes that form one example, as in
`genjax.losses`), or, for the bounds and samplers, which call the network, use its
batch-first contract: `x_0 [B, ...]`, `t int32[B]`.

The network is any `eps_fn(x_t [B, ...], t int32[B]) -> eps [B, ...]`. Reverse
process: `p(x_{t-1} | x_t) = N(mu(x_t, t), sigma_t^2)`, `mu` from the epsilon
prediction through the posterior `q(x_{t-1} | x_t, x_0 = x0_hat)`, `sigma_t^2` fixed:
`'fixed_small'` (the posterior variance, `beta~_t`) or `'fixed_large'` (`beta_t`, with
`beta~_1` at the first step so that the decoder is well defined, as in Ho et al.).

The variational bound in nats, per example:
  `L = L_T + sum_{t=1}^{T-1} L_{t-1} + L_0`,
  `L_T = KL(q(x_T | x_0) || N(0, I))`,
  `L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` at `x_t ~ q(x_t | x_0)`,
  `L_0 = -log p(x_0 | x_1)` with the discretized Gaussian decoder of the 8-bit values.
`L_0` is an exact discrete likelihood, so the bound in bits/dim needs no
dequantization correction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genjax import checks, interpolation, losses

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
VARIANCES = ("fixed_small", "fixed_large")
SCHEDULES = ("linear", "cosine")


# --------------------------------------------------------------------------- schedules


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """`float64[T]` evenly spaced betas, scaled by `1000 / T` (Nichol & Dhariwal 2021).

  At T = 1000 this is exactly Ho et al.'s schedule (1e-4 to 0.02); the scaling keeps
  `abar_T` near zero for shorter chains (it is capped so that every beta is < 1).
  """
  _check_steps(num_timesteps)
  scale = 1000.0 / num_timesteps
  hi = min(scale * beta_end, 0.999)
  return np.linspace(min(scale * beta_start, hi), hi, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  """`float64[T]` betas with `abar(t) = f(t) / f(0)`, `f(t) = cos^2((t/T + s) / (1 + s) * pi/2)`.

  `beta_t = min(1 - abar(t+1) / abar(t), max_beta)` (Nichol & Dhariwal 2021, eq. 17).
  """
  _check_steps(num_timesteps)
  steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
  f = np.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
  return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def _check_steps(num_timesteps: int) -> None:
  if int(num_timesteps) < 1:
    raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")


class Schedule(NamedTuple):
  """Every per-step constant, `float32[T]` each, computed in float64 and then cast.

  A NamedTuple, so it is a pytree: pass it into jitted functions or close over it.
  """

  betas: jax.Array
  alphas: jax.Array
  alphas_cumprod: jax.Array  # abar_t
  alphas_cumprod_prev: jax.Array  # abar_{t-1}, 1 at t = 0
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  log_one_minus_alphas_cumprod: jax.Array
  sqrt_recip_alphas_cumprod: jax.Array  # 1 / sqrt(abar_t)
  sqrt_recipm1_alphas_cumprod: jax.Array  # sqrt(1 / abar_t - 1)
  posterior_variance: jax.Array  # beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
  posterior_log_variance_clipped: jax.Array  # log beta~_t, with beta~_1 at t = 0 (beta~_0 = 0)
  posterior_mean_coef1: jax.Array  # multiplies x_0
  posterior_mean_coef2: jax.Array  # multiplies x_t

  @property
  def num_timesteps(self) -> int:
    return int(self.betas.shape[0])


def make_schedule(betas: np.ndarray, dtype=jnp.float32) -> Schedule:
  """All constants of the process with these `betas` `[T]` (each in (0, 1))."""
  betas = np.asarray(betas, np.float64)
  if betas.ndim != 1 or betas.size == 0:
    raise ValueError(f"betas must be a non-empty vector, got shape {betas.shape}")
  if not (np.all(betas > 0) and np.all(betas < 1)):
    raise ValueError(f"betas must lie in (0, 1), got min {betas.min()} and max {betas.max()}")
  alphas = 1.0 - betas
  abar = np.cumprod(alphas)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
  post_logvar = np.log(np.append(post_var[1], post_var[1:])) if betas.size > 1 else np.log(betas)
  consts = {
    "betas": betas,
    "alphas": alphas,
    "alphas_cumprod": abar,
    "alphas_cumprod_prev": abar_prev,
    "sqrt_alphas_cumprod": np.sqrt(abar),
    "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
    "log_one_minus_alphas_cumprod": np.log(1.0 - abar),
    "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
    "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
    "posterior_variance": post_var,
    "posterior_log_variance_clipped": post_logvar,
    "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
    "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
  }
  return Schedule(**{k: jnp.asarray(v, dtype) for k, v in consts.items()})


def get_schedule(name: str, num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
  """`make_schedule` of the `'linear'` or `'cosine'` betas."""
  if name == "linear":
    return make_schedule(linear_betas(num_timesteps, beta_start, beta_end))
  if name == "cosine":
    return make_schedule(cosine_betas(num_timesteps))
  raise ValueError(f"unknown noise schedule {name!r}; expected one of {SCHEDULES}")


def _at(values: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
  """`values[t]` for `t` `int[*batch]` indexing the leading axes of `x` `[*batch, ...]` (or a
  scalar `t`), shaped `[*batch, 1, ...]` to broadcast against `x`."""
  t = jnp.asarray(t)
  if t.ndim > x.ndim or tuple(x.shape[: t.ndim]) != tuple(t.shape):
    raise ValueError(
      f"timesteps t {tuple(t.shape)} must be a scalar or index the leading axes of x {tuple(x.shape)}"
    )
  return values[t].reshape(t.shape + (1,) * (x.ndim - t.ndim))


# --------------------------------------------------------------------------- forward process


def q_mean_variance(s: Schedule, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Mean `[B, ...]`, variance and log-variance `[B, 1, ...]` of `q(x_t | x_0)`."""
  return (
    _at(s.sqrt_alphas_cumprod, t, x0) * x0,
    _at(1.0 - s.alphas_cumprod, t, x0),
    _at(s.log_one_minus_alphas_cumprod, t, x0),
  )


def q_sample_from_noise(s: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """`x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`, `[B, ...]`."""
  return _at(s.sqrt_alphas_cumprod, t, x0) * x0 + _at(s.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_sample(s: Schedule, key: jax.Array, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Draws `x_t ~ q(x_t | x_0)` `[B, ...]`; returns `(x_t, noise)`."""
  noise = jax.random.normal(key, x0.shape, x0.dtype)
  return q_sample_from_noise(s, x0, t, noise), noise


def q_posterior_mean_variance(
  s: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Mean `[B, ...]`, variance and clipped log-variance `[B, 1, ...]` of `q(x_{t-1} | x_t, x_0)`."""
  mean = _at(s.posterior_mean_coef1, t, xt) * x0 + _at(s.posterior_mean_coef2, t, xt) * xt
  return mean, _at(s.posterior_variance, t, xt), _at(s.posterior_log_variance_clipped, t, xt)


def predict_x0_from_eps(s: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  """`x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`."""
  return _at(s.sqrt_recip_alphas_cumprod, t, xt) * xt - _at(s.sqrt_recipm1_alphas_cumprod, t, xt) * eps


def predict_eps_from_x0(s: Schedule, xt: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
  """The inverse of `predict_x0_from_eps`."""
  return (_at(s.sqrt_recip_alphas_cumprod, t, xt) * xt - x0) / _at(s.sqrt_recipm1_alphas_cumprod, t, xt)


# --------------------------------------------------------------------------- reverse process


def reverse_log_variance(s: Schedule, t: jax.Array, x: jax.Array, variance: str) -> jax.Array:
  """`log sigma_t^2` `[B, 1, ...]` of the reverse step for a fixed variance choice."""
  if variance == "fixed_small":
    return _at(s.posterior_log_variance_clipped, t, x)
  if variance == "fixed_large":
    large = jnp.concatenate([s.posterior_variance[1:2], s.betas[1:]])
    return _at(jnp.log(large), t, x)
  raise ValueError(f"unknown reverse variance {variance!r}; expected one of {VARIANCES}")


def p_mean_variance(
  s: Schedule,
  xt: jax.Array,
  t: jax.Array,
  eps: jax.Array,
  variance: str = "fixed_small",
  *,
  clip_denoised: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Mean `[B, ...]`, log-variance `[B, 1, ...]` and `x0_hat` `[B, ...]` of `p(x_{t-1} | x_t)`.

  The mean is the posterior mean at `x0_hat` from the epsilon prediction `eps`;
  `clip_denoised` (required: images in [-1, 1] want True, unbounded data False) clips
  `x0_hat` to [-1, 1] first, as Ho et al. do.
  """
  x0_hat = predict_x0_from_eps(s, xt, t, eps)
  if clip_denoised:
    x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
  mean, _, _ = q_posterior_mean_variance(s, x0_hat, xt, t)
  return mean, reverse_log_variance(s, t, xt, variance), x0_hat


# --------------------------------------------------------------------------- losses and the bound


def simple_loss(noise: jax.Array, eps: jax.Array, *, event_ndims: int) -> jax.Array:
  """`L_simple` per example: the mean of `(noise - eps)^2` over the last `event_ndims` axes.

  `noise`, `eps`: `[..., *event]`; returns `noise.shape[:noise.ndim - event_ndims]`.
  """
  sq = losses.squared_error(noise, eps, event_ndims=event_ndims)
  return sq / math.prod(noise.shape[noise.ndim - event_ndims :])


def prior_kl(s: Schedule, x0: jax.Array, *, event_ndims: int) -> jax.Array:
  """`L_T = KL(q(x_T | x_0) || N(0, I))` in nats, summed over the last `event_ndims` axes of `x0`."""
  mean, _, logvar = q_mean_variance(s, x0, jnp.asarray(s.num_timesteps - 1, jnp.int32))
  return losses.gaussian_kl(mean, logvar, event_ndims=event_ndims)


def discretized_decoder_nll(x0: jax.Array, mean: jax.Array, logvar: jax.Array, *, event_ndims: int) -> jax.Array:
  """`-log p(x_0 | x_1)` in nats: a Gaussian on [-1, 1] integrated over the 256 bins.

  `x0` `[..., *event]` holds 8-bit values scaled to [-1, 1], `mean` the same shape and
  `logvar` broadcastable to it; rescaled to the [0, 1] bin centres of
  `losses.discretized_gaussian_log_prob` (mean halved, variance quartered). Returns
  `x0.shape[:x0.ndim - event_ndims]`.
  """
  logvar = logvar - 2.0 * math.log(2.0)
  return -losses.discretized_gaussian_log_prob(
    (x0 + 1.0) / 2.0, (mean + 1.0) / 2.0, logvar, event_ndims=event_ndims
  )


def vlb_term(
  s: Schedule,
  x0: jax.Array,
  xt: jax.Array,
  t: jax.Array,
  eps: jax.Array,
  variance: str = "fixed_small",
  *,
  clip_denoised: bool,
  event_ndims: int,
  decoder_nll: Callable | None = None,
) -> jax.Array:
  """The bound's term at index `t` in nats: `L_0` (decoder NLL) where `t == 0`, else `L_{t-1}`.

  `x0`, `xt`, `eps`: `[*batch, *event]` with `event_ndims` event axes; `t`: `int[*batch]`
  (a scalar for one example). Returns `[*batch]`.
  `L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` summed over the event.
  `decoder_nll(x0, mean, logvar) -> [*batch]` defaults to the discretized Gaussian of
  8-bit data (`discretized_decoder_nll`); continuous data pass a Gaussian density instead.
  """
  batch = tuple(x0.shape[: x0.ndim - checks.check_event_ndims("x0", x0, event_ndims)])
  if tuple(jnp.shape(t)) != batch:
    raise ValueError(
      f"timesteps t {tuple(jnp.shape(t))} must have the batch shape {batch} of x0 {tuple(x0.shape)}"
    )
  if decoder_nll is None:
    decoder_nll = functools.partial(discretized_decoder_nll, event_ndims=event_ndims)
  true_mean, _, true_logvar = q_posterior_mean_variance(s, x0, xt, t)
  mean, logvar, _ = p_mean_variance(s, xt, t, eps, variance, clip_denoised=clip_denoised)
  kl = losses.gaussian_kl(true_mean, true_logvar, mean2=mean, logvar2=logvar, event_ndims=event_ndims)
  return jnp.where(t == 0, decoder_nll(x0, mean, logvar), kl)


def single_t_bound(
  s: Schedule,
  eps_fn: EpsFn,
  key: jax.Array,
  x0: jax.Array,
  variance: str = "fixed_small",
  *,
  clip_denoised: bool,
  decoder_nll: Callable | None = None,
) -> jax.Array:
  """An unbiased one-network-call estimate of the bound, `[B]` nats: `L_T + T * L_t`, `t ~ U{0..T-1}`.

  `x0 [B, ...]`: the batch axis first (the network's contract), every other axis summed.
  """
  k_t, k_x = jax.random.split(key)
  t = jax.random.randint(k_t, (x0.shape[0],), 0, s.num_timesteps)
  xt, _ = q_sample(s, k_x, x0, t)
  e = x0.ndim - 1
  term = vlb_term(
    s, x0, xt, t, eps_fn(xt, t), variance, clip_denoised=clip_denoised, event_ndims=e, decoder_nll=decoder_nll
  )
  return prior_kl(s, x0, event_ndims=e) + s.num_timesteps * term


def full_bound(
  s: Schedule,
  eps_fn: EpsFn,
  key: jax.Array,
  x0: jax.Array,
  variance: str = "fixed_small",
  *,
  clip_denoised: bool,
  decoder_nll: Callable | None = None,
) -> dict[str, jax.Array]:
  """The bound with every term, `T` network calls per example (one `lax.scan`).

  `x0 [B, ...]`: the batch axis first (the network's contract), every other axis summed.
  Returns nats per example, `[B]` each: `prior` (L_T), `decoder` (L_0), `kl` (the sum of
  L_1..L_{T-1}), `total`; and `terms` `[B, T]` (index t holds L_t, L_0 at t = 0). Each
  term draws its own `x_t ~ q(x_t | x_0)` with key `fold_in(key, t)`.
  """
  b, e = x0.shape[0], x0.ndim - 1

  def body(_, t):
    tt = jnp.full((b,), t, jnp.int32)
    xt, _ = q_sample(s, jax.random.fold_in(key, t), x0, tt)
    eps = eps_fn(xt, tt)
    return None, vlb_term(
      s, x0, xt, tt, eps, variance, clip_denoised=clip_denoised, event_ndims=e, decoder_nll=decoder_nll
    )

  _, terms = jax.lax.scan(body, None, jnp.arange(s.num_timesteps))
  terms = terms.T  # [B, T]
  prior = prior_kl(s, x0, event_ndims=e)
  decoder, kl = terms[:, 0], jnp.sum(terms[:, 1:], axis=1)
  return {"prior": prior, "decoder": decoder, "kl": kl, "total": prior + decoder + kl, "terms": terms}


# --------------------------------------------------------------------------- sampling


def guided_eps_fn(
  cond_eps_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
  cond: jax.Array,
  null_cond: jax.Array,
  guidance: float | jax.Array,
) -> EpsFn:
  """Classifier-free guidance (Ho & Salimans 2022) as an `eps_fn(x_t, t)` for the samplers.

  `eps~(x_t, t) = (1 + w) eps(x_t, t, c) - w eps(x_t, t, null)`, where
  `cond_eps_fn(x [N, ...], t int32[N], c [N, ...]) -> eps [N, ...]` is one network that
  takes a condition (a label) and `cond`, `null_cond` `[B, ...]` are the conditions and the
  "no condition" values for a batch of `B`. Both predictions come from ONE call of
  `cond_eps_fn` on the doubled batch `[x; x]`, `[t; t]`, `[c; null]`. `w = guidance >= 0`
  may be traced; a Python `0` returns the plain conditional `eps(x_t, t, c)`, one call on
  the batch (the same values the formula gives at `w = 0`, at half the cost).
  """
  if isinstance(guidance, (int, float)):
    if not 0 <= guidance < math.inf:
      raise ValueError(f"the guidance scale w must be a finite number >= 0, got {guidance}")
    if guidance == 0:
      return lambda x, t: cond_eps_fn(x, t, cond)
  both = jnp.concatenate([cond, null_cond], axis=0)

  def eps_fn(x: jax.Array, t: jax.Array) -> jax.Array:
    b = x.shape[0]
    eps = cond_eps_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), both)
    w = jnp.asarray(guidance, eps.dtype)
    return (1.0 + w) * eps[:b] - w * eps[b:]

  return eps_fn


def ancestral_step(
  s: Schedule,
  eps_fn: EpsFn,
  key: jax.Array,
  x: jax.Array,
  t: jax.Array,
  variance: str = "fixed_small",
  *,
  clip_denoised: bool,
) -> jax.Array:
  """One reverse step `x_t -> x_{t-1}` of the batch `x [B, ...]` at the scalar index `t` (no noise at t = 0)."""
  tt = jnp.full((x.shape[0],), t, jnp.int32)
  mean, logvar, _ = p_mean_variance(s, x, tt, eps_fn(x, tt), variance, clip_denoised=clip_denoised)
  noise = jax.random.normal(key, x.shape, x.dtype)
  return mean + jnp.where(t > 0, jnp.exp(0.5 * logvar), 0.0) * noise


def ancestral_sample(
  s: Schedule,
  eps_fn: EpsFn,
  key: jax.Array,
  shape: tuple[int, ...],
  variance: str = "fixed_small",
  *,
  clip_denoised: bool,
  trajectory_every: int = 0,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Samples `x_0` `float32[shape]` by running all T reverse steps in one compiled loop.

  `x_T ~ N(0, I)` from `fold_in(key, T)`; step `t` uses `fold_in(key, t)`. With
  `trajectory_every = k > 0` (T divisible by k) also returns `[T / k, *shape]`: the
  state after every k steps (the last is `x_0`).
  """
  num = s.num_timesteps
  x = jax.random.normal(jax.random.fold_in(key, num), shape, jnp.float32)

  def step(i, x):
    t = num - 1 - i
    return ancestral_step(s, eps_fn, jax.random.fold_in(key, t), x, t, variance, clip_denoised=clip_denoised)

  if not trajectory_every:
    return jax.lax.fori_loop(0, num, step, x)
  k = int(trajectory_every)
  if k < 0 or num % k:
    raise ValueError(f"trajectory_every={k} must be a positive divisor of num_timesteps={num}")

  def chunk(x, c):
    x = jax.lax.fori_loop(c * k, (c + 1) * k, step, x)
    return x, x

  x, trajectory = jax.lax.scan(chunk, x, jnp.arange(num // k))
  return x, trajectory


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
  """The `num_steps` indices DDIM visits, increasing, evenly spaced from 0 to `T - 1`."""
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f"DDIM num_steps must be in [1, {num_timesteps}], got {num_steps}")
  return np.round(np.linspace(0, num_timesteps - 1, num_steps)).astype(np.int32)


def ddim_sample(
  s: Schedule,
  eps_fn: EpsFn,
  key: jax.Array,
  shape: tuple[int, ...],
  num_steps: int = 50,
  eta: float = 0.0,
  *,
  clip_denoised: bool,
) -> jax.Array:
  """DDIM (Song et al. 2021) over `num_steps` of the T indices, one compiled `lax.scan`.

  From `x_t` to `x_s` (s the previous visited index; `abar = 1` after the last):
  `x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z`,
  `sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)`.
  `eta = 0` is deterministic given `x_T`; `eta = 1` with all T steps is the ancestral
  sampler with the fixed-small variance. Step `t` uses `fold_in(key, t)`.
  """
  if eta < 0:
    raise ValueError(f"DDIM eta must be >= 0, got {eta}")
  seq = ddim_timesteps(s.num_timesteps, num_steps)
  prev = np.append(-1, seq[:-1])
  x = jax.random.normal(jax.random.fold_in(key, s.num_timesteps), shape, jnp.float32)

  def body(x, ts):
    t, t_prev = ts
    tt = jnp.full((shape[0],), t, jnp.int32)
    abar = s.alphas_cumprod[t]
    abar_prev = jnp.where(t_prev >= 0, s.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    eps = eps_fn(x, tt)
    x0 = predict_x0_from_eps(s, x, tt, eps)
    if clip_denoised:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = predict_eps_from_x0(s, x, tt, x0)
    sigma = eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
    noise = jax.random.normal(jax.random.fold_in(key, t), shape, jnp.float32)
    x = jnp.sqrt(abar_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps + sigma * noise
    return x, None

  x, _ = jax.lax.scan(body, x, (jnp.asarray(seq[::-1]), jnp.asarray(prev[::-1])))
  return x


def slerp(z0: jax.Array, z1: jax.Array, lam: jax.Array) -> jax.Array:
  """Spherical interpolation between whole arrays `z0` and `z1` `[...]` at `lam` in [0, 1]
  (`genjax.interpolation.slerp` of the flattened arrays)."""
  return interpolation.slerp(z0.reshape(-1), z1.reshape(-1), lam).reshape(z0.shape)


def interpolate(
  s: Schedule,
  eps_fn: EpsFn,
  key: jax.Array,
  x0_a: jax.Array,
  x0_b: jax.Array,
  t: int,
  lambdas: jax.Array,
  variance: str = "fixed_small",
  *,
  clip_denoised: bool,
) -> jax.Array:
  """Interpolation through `x_t` (Ho et al. 2020, Sec. 4.3): `[L, ...]` decoded images.

  Both images `[...]` are diffused to index `t` with one shared noise draw for the
  mean part: `x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`, with `eps` slerped
  between two independent noises, and the means linearly interpolated; each of the
  `L = len(lambdas)` points is then denoised by the reverse process from `t` to 0.
  """
  k_a, k_b, k_rev = jax.random.split(key, 3)
  eps_a = jax.random.normal(k_a, x0_a.shape, jnp.float32)
  eps_b = jax.random.normal(k_b, x0_b.shape, jnp.float32)
  lambdas = jnp.asarray(lambdas, jnp.float32)
  noise = jax.vmap(lambda lam: slerp(eps_a, eps_b, lam))(lambdas)
  x0 = (1.0 - lambdas.reshape((-1,) + (1,) * x0_a.ndim)) * x0_a + lambdas.reshape((-1,) + (1,) * x0_a.ndim) * x0_b
  tt = jnp.full((lambdas.shape[0],), t, jnp.int32)
  x = q_sample_from_noise(s, x0, tt, noise)

  def step(i, x):
    tau = t - i
    return ancestral_step(s, eps_fn, jax.random.fold_in(k_rev, tau), x, tau, variance, clip_denoised=clip_denoised)

  return jax.lax.fori_loop(0, t + 1, step, x)
