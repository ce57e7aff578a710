"""Pure array-level losses and log-likelihoods.

Everything here depends on jax only (no Flax, no config) and is safe to `jax.jit`,
`jax.grad` and `jax.vmap`. Conventions:

* "event" dimensions are summed: a log-likelihood of `x` with shape `[B, H, W, C]`
  has shape `[B]` (`event_ndims=3`, the default is all but the first axis).
* Gaussians are parameterized by mean and log-variance.
* Every random function takes an explicit `jax.random` key.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genjax import checks

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: jax.Array, event_ndims: int | None) -> jax.Array:
  """Sums the trailing `event_ndims` axes (default: all but the first)."""
  if event_ndims is None:
    event_ndims = max(x.ndim - 1, 0)
  if event_ndims == 0:
    return x
  return jnp.sum(x, axis=tuple(range(x.ndim - event_ndims, x.ndim)))


# --------------------------------------------------------------------------- Gaussians


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
  """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)); broadcasts its inputs."""
  return 0.5 * (
    logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + jnp.square(mean1 - mean2) * jnp.exp(-logvar2) - 1.0
  )


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Closed-form KL(N(mean, diag e^logvar) || N(0, I)), summed over the last axis.

  Args:
    mean, logvar: `[..., Z]`.
  Returns:
    `[...]`: 0.5 * sum(mean^2 + e^logvar - 1 - logvar).
  """
  checks.check_same_shape(mean=mean, logvar=logvar)
  checks.check_min_rank("mean", mean, 1, "the last axis is the latent")
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def reparameterize(
  key: jax.Array, mean: jax.Array, logvar: jax.Array, num_samples: int | None = None
) -> jax.Array:
  """Reparameterized draw z = mean + exp(logvar / 2) * eps, eps ~ N(0, I).

  Gradients flow to `mean` and `logvar` through the sample.

  Args:
    key: a `jax.random` key.
    mean, logvar: `[..., Z]`.
    num_samples: if given, draws `K = num_samples` samples stacked on a new leading axis.
  Returns:
    `[..., Z]`, or `[K, ..., Z]` with `num_samples`.
  """
  checks.check_same_shape(mean=mean, logvar=logvar)
  shape = mean.shape if num_samples is None else (num_samples,) + mean.shape
  eps = jax.random.normal(key, shape, dtype=mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_log_prob(x, mean, logvar) -> jax.Array:
  """Elementwise log N(x; mean, e^logvar); broadcasts its inputs."""
  return -0.5 * (LOG_2PI + logvar + jnp.square(x - mean) * jnp.exp(-logvar))


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, logvar, event_ndims: int | None = None) -> jax.Array:
  """Diagonal-Gaussian log-likelihood of `x`, summed over the event axes.

  Args:
    x, mean: `[B, ...]` with equal shapes.
    logvar: broadcastable to `x` (a scalar gives a fixed, shared variance).
    event_ndims: trailing axes to sum (default: all but the first).
  Returns:
    `[B]` log-densities in nats.
  """
  checks.check_same_shape(x=x, mean=mean)
  return _sum_event(gaussian_log_prob(x, mean, logvar), event_ndims)


def standard_normal_log_prob(z: jax.Array, event_ndims: int | None = None) -> jax.Array:
  """log N(z; 0, I) summed over the event axes: `[B, ...] -> [B]`."""
  return _sum_event(-0.5 * (LOG_2PI + jnp.square(z)), event_ndims)


def _log_ndtr_diff(hi: jax.Array, lo: jax.Array) -> jax.Array:
  """log(Phi(hi) - Phi(lo)) for hi > lo, computed in the tail where both are small."""
  flip = lo > 0  # both in the upper tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
  a, b = jnp.where(flip, -lo, hi), jnp.where(flip, -hi, lo)
  la, lb = jax.scipy.special.log_ndtr(a), jax.scipy.special.log_ndtr(b)
  return la + jnp.log1p(-jnp.exp(jnp.minimum(lb - la, -1e-12)))


def discretized_gaussian_log_likelihood(
  x: jax.Array, mean: jax.Array, logvar: jax.Array, num_bins: int = 256, event_ndims: int | None = None
) -> jax.Array:
  """Exact log-probability of discrete data under a Gaussian integrated over each bin.

  `x` holds bin centres `k / (num_bins - 1)` in [0, 1] (8-bit data divided by 255).
  Bin k covers `x +- 1 / (2 (num_bins - 1))`, the first and last bins extend to -inf
  and +inf, so the probabilities of all `num_bins` values sum to exactly 1, and the
  result is a discrete log-likelihood (bits/dim need no dequantization correction).
  This is the decoder of Ho et al. (2020), L_0, rescaled from [-1, 1] to [0, 1].

  Args:
    x: `[B, ...]` bin centres in [0, 1]; mean, logvar: broadcastable to `x`.
  Returns:
    `[B]` log-probabilities in nats.
  """
  checks.check_same_shape(x=x, mean=mean)
  checks.check_range("discretized targets x", x, 0.0, 1.0)
  half = 0.5 / (num_bins - 1)
  inv_std = jnp.exp(-0.5 * logvar)
  hi = (x + half - mean) * inv_std
  lo = (x - half - mean) * inv_std
  first, last = x < half, x > 1.0 - half
  log_p = jnp.where(
    first,
    jax.scipy.special.log_ndtr(hi),
    jnp.where(last, jax.scipy.special.log_ndtr(-lo), _log_ndtr_diff(hi, jnp.where(first | last, hi - 1.0, lo))),
  )
  return _sum_event(log_p, event_ndims)


# --------------------------------------------------------------------------- Bernoulli


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array, event_ndims: int | None = None) -> jax.Array:
  """Bernoulli log-likelihood of targets `x` in [0, 1] under `logits`, summed over events.

  Written on logits, x * l - softplus(l), so it is exact and stable for any logit.
  Targets in (0, 1) give the cross-entropy (not a normalized density).

  Args:
    x: `[B, ...]` targets in [0, 1] (binary for a true likelihood).
    logits: `[B, ...]`, same shape.
  Returns:
    `[B]` in nats.
  """
  checks.check_same_shape(x=x, logits=logits)
  checks.check_range("bernoulli targets x", x, 0.0, 1.0)
  return _sum_event(x * logits - jax.nn.softplus(logits), event_ndims)


# --------------------------------------------------------------------------- categorical


def categorical_log_likelihood(targets: jax.Array, logits: jax.Array, event_ndims: int | None = None) -> jax.Array:
  """Log-probability of integer `targets` under per-value `logits`, summed over events.

  The 256-way softmax of PixelCNN for 8-bit data: `targets` `int[B, ...]` in
  [0, K), `logits` `[B, ..., K]`. Returns `[B]` in nats; exact for discrete data, so
  bits/dim need no dequantization correction.
  """
  if logits.shape[:-1] != targets.shape:
    raise ValueError(
      f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} plus a trailing axis of K values"
    )
  checks.check_range("categorical targets", targets, 0, logits.shape[-1] - 1)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return _sum_event(picked, event_ndims)


# --------------------------------------------------------------------------- bounds


def elbo(log_likelihood: jax.Array, kl: jax.Array, beta: float = 1.0) -> jax.Array:
  """The (beta-weighted) evidence lower bound E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)).

  beta = 1 gives the ELBO, a lower bound on log p(x); beta != 1 gives the beta-VAE
  objective, which is not a bound. Both inputs have the same shape (typically `[B]`).
  """
  checks.check_same_shape(log_likelihood=log_likelihood, kl=kl)
  return log_likelihood - beta * kl


def iwae_bound(log_weights: jax.Array, axis: int = 0) -> jax.Array:
  """Importance-weighted bound log (1/K) sum_k w_k from `log w_k = log p(x, z_k) - log q(z_k|x)`.

  Args:
    log_weights: `[K, B]` (or K on `axis`).
  Returns:
    `[B]`; K = 1 gives the ELBO, and the bound tightens as K grows.
  """
  k = log_weights.shape[axis]
  if k < 1:
    raise ValueError(f"iwae_bound needs at least one sample on axis {axis}, got shape {log_weights.shape}")
  return jax.nn.logsumexp(log_weights, axis=axis) - jnp.log(float(k))


def bits_per_dim(nll_nats: jax.Array, num_dims: int, bin_width: float | None = None) -> jax.Array:
  """Converts a negative log-likelihood in nats to bits per dimension.

  For a *continuous* density fitted to dequantized discrete data, pass the width of
  one quantization bin in the space the density lives in (1/256 for 8-bit data
  scaled to [0, 1], 2/256 for [-1, 1]): the discrete NLL is then bounded by
  `nll - num_dims * log(bin_width)`, which is what is converted. Leave it `None` for
  a discrete likelihood (Bernoulli, 256-way softmax).

  Args:
    nll_nats: `[...]` negative log-likelihoods (per example) in nats.
    num_dims: the number of dimensions each example has (H * W * C).
  Returns:
    `[...]` bits per dimension.
  """
  if num_dims <= 0:
    raise ValueError(f"num_dims must be positive, got {num_dims}")
  nll = nll_nats
  if bin_width is not None:
    if not 0.0 < bin_width:
      raise ValueError(f"bin_width must be positive, got {bin_width}")
    nll = nll - num_dims * math.log(bin_width)
  return nll / (num_dims * math.log(2.0))


def squared_error(x: jax.Array, x_hat: jax.Array, event_ndims: int | None = None) -> jax.Array:
  """Sum of squared errors over the event axes: `[B, ...] -> [B]`."""
  checks.check_same_shape(x=x, x_hat=x_hat)
  return _sum_event(jnp.square(x - x_hat), event_ndims)


# --------------------------------------------------------------------------- flows


def flow_nll(z: jax.Array, log_det: jax.Array, event_ndims: int | None = None) -> jax.Array:
  """Negative log-likelihood of a flow with a standard normal base, in nats.

  `-log p(x) = -log N(z; 0, I) - log|det dz/dx|` for `z = f(x)`.

  Args:
    z: `[B, ...]` the flow's output; its event axes (default: all but the first) are summed.
    log_det: `[B]` log |det dz/dx| of each example.
  Returns:
    `[B]` nats.
  """
  return -(standard_normal_log_prob(z, event_ndims) + log_det)


def logit_transform(x: jax.Array, alpha: float, event_ndims: int | None = None) -> tuple[jax.Array, jax.Array]:
  """RealNVP's preprocessing of `x` in [0, 1]: `y = logit(alpha + (1 - 2 alpha) x)`.

  Returns `(y [B, ...], log_det [B])` with `log_det = sum log|dy/dx|`, where
  `dy/dx = (1 - 2 alpha) / (p (1 - p))`, `p = alpha + (1 - 2 alpha) x`. `alpha` in
  [0, 1/2) keeps `y` finite on the closed interval (the paper uses 0.05).
  """
  if not 0.0 <= alpha < 0.5:
    raise ValueError(f"logit_transform needs 0 <= alpha < 0.5, got {alpha}")
  p = alpha + (1.0 - 2.0 * alpha) * x
  y = jnp.log(p) - jnp.log1p(-p)
  # -log p - log(1 - p) = softplus(-y) + softplus(y), stable for any y.
  per_dim = math.log1p(-2.0 * alpha) + jax.nn.softplus(-y) + jax.nn.softplus(y)
  return y, _sum_event(per_dim, event_ndims)


def logit_transform_inverse(y: jax.Array, alpha: float) -> jax.Array:
  """The inverse of `logit_transform`: `x = (sigmoid(y) - alpha) / (1 - 2 alpha)`."""
  return (jax.nn.sigmoid(y) - alpha) / (1.0 - 2.0 * alpha)


def dequantized_bits_per_dim(nll_nats: jax.Array, num_dims: int, num_bins: int = 256) -> jax.Array:
  """Bits/dim of discrete data from the NLL of a density on uniformly dequantized data.

  `nll_nats` is `-log p(y)` of `y = (x + u) / num_bins` in [0, 1] (`u ~ U[0, 1)`, see
  `genjax.data.preprocess.dequantize_uniform`), including every Jacobian between `y` and
  the flow's base (the logit transform's too). The [0, 1] scaling costs
  `log(num_bins)` nats per dimension, so `-log P(x) <= nll + D log(num_bins)` in
  expectation over `u` (Theis et al. 2016), and this returns
  `(nll + D log num_bins) / (D log 2)`: 8 bits/dim for the uniform density on [0, 1]^D
  with 256 bins.
  """
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  return bits_per_dim(nll_nats, num_dims, bin_width=1.0 / num_bins)


# --------------------------------------------------------------------------- GAN
#
# Everything below works on the discriminator's *logits* `l = logit D(x)`, so that
# `log D = -softplus(-l)` and `log(1 - D) = -softplus(l)` never take the log of a
# rounded-to-zero probability. Inputs are `[B]` (or any shape); outputs are scalars
# (means over every element), each `jax.grad`-able on its own.


def gan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Binary cross-entropy of the discriminator, real labelled 1 and fake 0.

  `-E[log D(x)] - E[log(1 - D(G(z)))] = E[softplus(-l_real)] + E[softplus(l_fake)]`.
  At the optimum of the minimax game (p_g = p_data, D = 1/2) it equals 2 log 2.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def gan_generator_minimax_loss(fake_logits: jax.Array) -> jax.Array:
  """The generator's side of the minimax game: `E[log(1 - D(G(z)))] = -E[softplus(l_fake)]`.

  Minimized by the generator. Its gradient with respect to the logit is `-sigmoid(l)`,
  which vanishes when the discriminator confidently rejects the fakes (l -> -inf):
  the saturation that motivates the non-saturating loss.
  """
  return -jnp.mean(jax.nn.softplus(fake_logits))


def gan_generator_non_saturating_loss(fake_logits: jax.Array) -> jax.Array:
  """The non-saturating generator loss `-E[log D(G(z))] = E[softplus(-l_fake)]`.

  Same fixed points as the minimax loss, but its logit gradient `sigmoid(l) - 1`
  tends to -1 (not 0) when the fakes are rejected (Goodfellow et al. 2014).
  """
  return jnp.mean(jax.nn.softplus(-fake_logits))


def gan_hinge_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Hinge loss of the discriminator: `E[relu(1 - l_real)] + E[relu(1 + l_fake)]`."""
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def gan_hinge_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Hinge-GAN generator loss: `-E[l_fake]`."""
  return -jnp.mean(fake_logits)


def wgan_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """Wasserstein critic loss (to minimize): `E[f(G(z))] - E[f(x)]` (add `gradient_penalty`)."""
  return jnp.mean(fake_scores) - jnp.mean(real_scores)


def wgan_generator_loss(fake_scores: jax.Array) -> jax.Array:
  """Wasserstein generator loss: `-E[f(G(z))]`."""
  return -jnp.mean(fake_scores)


def gradient_penalty(critic, real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
  """WGAN-GP penalty `E[(||grad_x f(x_hat)||_2 - 1)^2]` (Gulrajani et al. 2017).

  `x_hat = eps * real + (1 - eps) * fake` with `eps ~ U[0, 1]` per example (drawn with
  `key`); `critic` maps `[B, ...] -> [B]` and must treat examples independently
  (no batch statistics). Multiply by the penalty weight (10 in the paper).
  """
  checks.check_same_shape(real=real, fake=fake)
  eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=-1) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))
