"""The autoencoder family: plain and denoising autoencoders, VAE, beta-VAE, conditional VAE.

`AutoencoderFamily(model_config, info)` exposes pure functions of `(params, batch, key)`:

* `loss`: reconstruction NLL for `ae`/`dae`; the negative beta-ELBO for `vae`/`cvae`.
* `evaluate`: per-example ELBO (beta = 1, in nats and bits/dim), KL, reconstruction NLL,
  reconstruction MSE on the [0, 1] scale, and the IWAE bound with K samples.
* `sample`, `reconstruct`, `encode`, `decode`: the pieces the latent tools need.

Data model: images arrive as uint8. With `likelihood='bernoulli'` they are binarized
(dynamically, from the pixel intensity, with an explicit key) and scored by a Bernoulli
decoder, so bits/dim is that of the binarized data. With `likelihood='gaussian'` they
are uniformly dequantized to [0, 1) and scored by a diagonal Gaussian decoder; bits/dim
then includes the dequantization correction (bin width 1/256), a bound on 8-bit data.
With `likelihood='discretized_gaussian'` the 8-bit values themselves are scored by a
Gaussian integrated over each of the 256 bins: an exact discrete likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax import losses
from genjax.data import preprocess
from genjax.nn import MLP, ConvDecoder, ConvEncoder

KINDS = ("ae", "dae", "vae", "cvae")
ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "discretized_gaussian")
BINARIZATIONS = ("dynamic", "threshold")
CORRUPTIONS = ("gaussian", "masking")
#: log((1/256)^2 / 12): the log-variance of U[0, 1/256), the dequantization noise in [0, 1] units.
LOGVAR_FLOOR = math.log(1.0 / (12.0 * 256.0**2))
#: log((0.1/255)^2): a discretized Gaussian this narrow puts all but ~1e-6 of its mass in one bin.
DISCRETE_LOGVAR_FLOOR = 2.0 * math.log(0.1 / 255.0)


def corrupt(key: jax.Array, x: jax.Array, kind: str, level: float) -> jax.Array:
  """Denoising-autoencoder corruption of `x` (`[B, ...]` in [0, 1]), drawn with `key`.

  'gaussian' adds N(0, level^2) noise; 'masking' zeroes each value with probability `level`.
  """
  if kind == "gaussian":
    return x + level * jax.random.normal(key, x.shape, x.dtype)
  if kind == "masking":
    keep = jax.random.bernoulli(key, 1.0 - level, x.shape)
    return jnp.where(keep, x, 0.0).astype(x.dtype)
  raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation between `[..., Z]` vectors for `t` in [0, 1]."""
  an = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  bn = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  omega = jnp.arccos(jnp.clip(jnp.sum(an * bn, -1, keepdims=True), -1.0, 1.0))
  so = jnp.sin(omega)
  safe = so > 1e-6
  wa = jnp.where(safe, jnp.sin((1 - t) * omega) / jnp.where(safe, so, 1.0), 1 - t)
  wb = jnp.where(safe, jnp.sin(t * omega) / jnp.where(safe, so, 1.0), t)
  return wa * a + wb * b


class AutoencoderNet(nn.Module):
  """Encoder and decoder of every autoencoder kind (MLP or convolutional).

  `encode`: `[B, H, W, C]` (+ one-hot `[B, K]`) -> `(mean [B, Z], logvar [B, Z] or None)`.
  `decode`: `[B, Z]` (+ one-hot `[B, K]`) -> `[B, H, W, C]` logits (Bernoulli) or means
  (Gaussian); with `learn_variance`, `[B, H, W, 2C]`: means, then raw log-variances.
  """

  variational: bool
  arch: str
  latent_dim: int
  hidden: Sequence[int]
  features: Sequence[int]
  image_shape: Sequence[int]
  learn_variance: bool = False

  def setup(self):
    enc_out = 2 * self.latent_dim if self.variational else self.latent_dim
    h, w, c = self.image_shape
    self.out_shape = (h, w, 2 * c if self.learn_variance else c)
    if self.arch == "mlp":
      self.encoder = MLP(tuple(self.hidden) + (enc_out,))
      self.decoder = MLP(tuple(reversed(self.hidden)) + (math.prod(self.out_shape),))
    else:
      self.encoder = ConvEncoder(tuple(self.features), enc_out, hidden=self.hidden[0])
      self.decoder = ConvDecoder(tuple(self.features), self.out_shape, hidden=self.hidden[0])

  def encode(self, x, cond=None):
    if self.arch == "mlp":
      h = x.reshape((x.shape[0], -1))
      if cond is not None:
        h = jnp.concatenate([h, cond], axis=-1)
      out = self.encoder(h)
    else:
      out = self.encoder(x, cond)
    if self.variational:
      mean, logvar = jnp.split(out, 2, axis=-1)
      return mean, logvar
    return out, None

  def decode(self, z, cond=None):
    if self.arch == "mlp":
      h = z if cond is None else jnp.concatenate([z, cond], axis=-1)
      return self.decoder(h).reshape((z.shape[0],) + self.out_shape)
    return self.decoder(z, cond)

  def __call__(self, x, cond=None):
    mean, _ = self.encode(x, cond)
    return self.decode(mean, cond)


class AutoencoderFamily:
  """Plain/denoising autoencoders and (beta-, conditional) VAEs as pure functions."""

  def __init__(self, cfg: Any, info: Any):
    if info.kind != "image":
      raise ValueError(f"the autoencoder family models images, but dataset {info.name!r} is {info.kind!r} data")
    _choice("model.kind", cfg.kind, KINDS)
    _choice("model.arch", cfg.arch, ARCHS)
    _choice("model.likelihood", cfg.likelihood, LIKELIHOODS)
    _choice("model.binarization", cfg.binarization, BINARIZATIONS)
    _choice("model.corruption", cfg.corruption, CORRUPTIONS)
    if cfg.latent_dim <= 0:
      raise ValueError(f"model.latent_dim must be positive, got {cfg.latent_dim}")
    if cfg.beta < 0:
      raise ValueError(f"model.beta must be >= 0, got {cfg.beta}")
    if cfg.kind == "dae" and not (
      cfg.corruption_level >= 0 and (cfg.corruption == "gaussian" or cfg.corruption_level <= 1)
    ):
      raise ValueError(
        f"model.corruption_level={cfg.corruption_level} is not valid for {cfg.corruption!r} "
        f"corruption; expected >= 0 (and <= 1 for masking)"
      )
    if cfg.kind == "cvae" and info.num_classes <= 0:
      raise ValueError(f"model.kind='cvae' needs labels, but dataset {info.name!r} has none")
    self.cfg = cfg
    self.info = info
    self.kind = cfg.kind
    self.variational = cfg.kind in ("vae", "cvae")
    self.conditional = cfg.kind == "cvae"
    self.num_classes = info.num_classes
    self.image_shape = tuple(info.shape)
    self.num_dims = math.prod(self.image_shape)
    self.net = AutoencoderNet(
      variational=self.variational,
      arch=cfg.arch,
      latent_dim=cfg.latent_dim,
      hidden=tuple(cfg.hidden),
      features=tuple(cfg.features),
      image_shape=self.image_shape,
      learn_variance=cfg.likelihood != "bernoulli" and cfg.learn_variance,
    )
    self.best_metric = "bits_per_dim" if self.variational else "recon_nll"
    self.best_mode = "min"

  # ------------------------------------------------------------------ data model

  def targets(self, image: jax.Array, key: jax.Array) -> jax.Array:
    """What the decoder scores: binarized or dequantized `[B, H, W, C]` floats in [0, 1]."""
    if self.cfg.likelihood == "bernoulli":
      if self.cfg.binarization == "dynamic":
        return preprocess.binarize_dynamic(key, image)
      return preprocess.binarize_threshold(image)
    if self.cfg.likelihood == "discretized_gaussian":
      return preprocess.to_unit(image)  # bin centres k / 255
    return preprocess.dequantize_uniform(key, image)

  def _cond(self, batch) -> jax.Array | None:
    if not self.conditional:
      return None
    return jax.nn.one_hot(batch["label"], self.num_classes)

  def gaussian_output(self, out: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gaussian decoder output -> `(mean [B, H, W, C], log-variance)`.

    A learned log-variance is softly floored, `floor + softplus(raw - floor)`: for the
    continuous Gaussian at `LOGVAR_FLOOR`, the log-variance of the uniform
    dequantization noise (no 8-bit image needs a narrower density, and the floor keeps
    the likelihood bounded); for the discretized one at `DISCRETE_LOGVAR_FLOOR`.
    Otherwise the fixed `model.gaussian_logvar`.
    """
    if not self.net.learn_variance:
      return out, jnp.asarray(self.cfg.gaussian_logvar, out.dtype)
    c = self.image_shape[-1]
    floor = LOGVAR_FLOOR if self.cfg.likelihood == "gaussian" else DISCRETE_LOGVAR_FLOOR
    return out[..., :c], floor + jax.nn.softplus(out[..., c:] - floor)

  def _log_likelihood(self, x, out) -> jax.Array:
    if self.cfg.likelihood == "bernoulli":
      return losses.bernoulli_log_prob(x, out, event_ndims=len(self.image_shape))
    mean, logvar = self.gaussian_output(out)
    logvar = jnp.broadcast_to(logvar, mean.shape)
    if self.cfg.likelihood == "discretized_gaussian":
      return losses.discretized_gaussian_log_prob(x, mean, logvar, event_ndims=len(self.image_shape))
    return losses.gaussian_log_prob(x, mean, logvar, event_ndims=len(self.image_shape))

  def mean_image(self, out: jax.Array) -> jax.Array:
    """Decoder output -> expected image in [0, 1]."""
    if self.cfg.likelihood == "bernoulli":
      return jax.nn.sigmoid(out)
    return jnp.clip(self.gaussian_output(out)[0], 0.0, 1.0)

  def _bits(self, nll: jax.Array) -> jax.Array:
    width = 1.0 / 256.0 if self.cfg.likelihood == "gaussian" else None  # the others are discrete
    return losses.bits_per_dim(nll, self.num_dims, bin_width=width)

  # ------------------------------------------------------------------ protocol

  def init(self, key, batch):
    b = batch["image"].shape[0]
    x = jnp.zeros((b,) + self.image_shape, jnp.float32)
    variables = self.net.init(key, x, self._cond(batch))
    return variables["params"], {}

  def encode(self, params, x, cond=None):
    return self.net.apply({"params": params}, x, cond, method=AutoencoderNet.encode)

  def decode(self, params, z, cond=None):
    return self.net.apply({"params": params}, z, cond, method=AutoencoderNet.decode)

  def loss(self, params, model_state, batch, key):
    k_data, k_noise, k_z = jax.random.split(key, 3)
    x = self.targets(batch["image"], k_data)
    cond = self._cond(batch)
    x_in = corrupt(k_noise, x, self.cfg.corruption, self.cfg.corruption_level) if self.kind == "dae" else x
    mean, logvar = self.encode(params, x_in, cond)
    if self.variational:
      z = losses.reparameterize(k_z, mean, logvar)
      ll = self._log_likelihood(x, self.decode(params, z, cond))
      kl = losses.gaussian_kl(mean, logvar, event_ndims=1)
      loss = -jnp.mean(losses.elbo(ll, kl, self.cfg.beta))
      elbo = ll - kl
      metrics = {
        "elbo": jnp.mean(elbo),
        "kl": jnp.mean(kl),
        "recon_nll": -jnp.mean(ll),
        "bits_per_dim": jnp.mean(self._bits(-elbo)),
      }
    else:
      nll = -self._log_likelihood(x, self.decode(params, mean, cond))
      loss = jnp.mean(nll)
      metrics = {"recon_nll": loss}
    return loss, (metrics, model_state)

  def evaluate(self, params, model_state, batch, key, iwae_samples: int = 0):
    """Per-example metrics (`[B]` each); the ELBO always uses beta = 1."""
    k_data, k_z, k_iwae = jax.random.split(key, 3)
    image = batch["image"]
    x = self.targets(image, k_data)
    cond = self._cond(batch)
    mean, logvar = self.encode(params, x, cond)
    decoded = self.decode(params, mean, cond)
    x01 = preprocess.to_unit(image)
    out = {"mse": jnp.mean(jnp.square(self.mean_image(decoded) - x01).reshape(x.shape[0], -1), axis=-1)}
    if not self.variational:
      out["recon_nll"] = -self._log_likelihood(x, decoded)
      return out
    z = losses.reparameterize(k_z, mean, logvar)
    ll = self._log_likelihood(x, self.decode(params, z, cond))
    kl = losses.gaussian_kl(mean, logvar, event_ndims=1)
    elbo = ll - kl
    out.update(elbo=elbo, kl=kl, recon_nll=-ll, bits_per_dim=self._bits(-elbo))
    if iwae_samples:
      iwae = self.iwae(params, x, cond, mean, logvar, k_iwae, iwae_samples)
      out.update(iwae=iwae, iwae_bits_per_dim=self._bits(-iwae))
    return out

  def iwae(self, params, x, cond, mean, logvar, key, num_samples: int) -> jax.Array:
    """IWAE bound `[B]` with K = `num_samples`, one decoder pass per sample (bounded memory)."""

    def log_weight(k):
      z = losses.reparameterize(k, mean, logvar)
      ll = self._log_likelihood(x, self.decode(params, z, cond))
      log_pz = losses.standard_normal_log_prob(z, event_ndims=1)
      log_qz = losses.gaussian_log_prob(z, mean, logvar, event_ndims=1)
      return ll + log_pz - log_qz

    log_w = jax.lax.map(log_weight, jax.random.split(key, num_samples))  # [K, B]
    return losses.iwae_bound(log_w, axis=0)

  def sample(self, params, key, num: int, labels: jax.Array | None = None, temperature: float = 1.0) -> jax.Array:
    """Decoder means for `z ~ N(0, temperature^2 I)`: `uint8[num, H, W, C]`.

    The conditional VAE takes `labels` (`int[num]`); by default they cycle through the classes.
    """
    if not self.variational:
      raise ValueError(f"model.kind={self.kind!r} has no prior to sample from; use reconstruct()")
    z = temperature * jax.random.normal(key, (num, self.cfg.latent_dim))
    cond = None
    if self.conditional:
      labels = jnp.arange(num) % self.num_classes if labels is None else labels
      cond = jax.nn.one_hot(labels, self.num_classes)
    return preprocess.from_unit(self.mean_image(self.decode(params, z, cond)))

  def generate(self, params, model_state, key, num: int, labels: jax.Array | None = None) -> jax.Array:
    """`num` fresh samples, `uint8[num, H, W, C]` (the protocol's `generate`; VAEs only)."""
    return self.sample(params, key, num, labels=labels)

  def reconstruct(self, params, batch, key) -> jax.Array:
    """Decoder means at the posterior mean (after corruption for `dae`): `uint8[B, H, W, C]`."""
    k_data, k_noise = jax.random.split(key)
    x = self.targets(batch["image"], k_data)
    cond = self._cond(batch)
    if self.kind == "dae":
      x = corrupt(k_noise, x, self.cfg.corruption, self.cfg.corruption_level)
    mean, _ = self.encode(params, x, cond)
    return preprocess.from_unit(self.mean_image(self.decode(params, mean, cond)))

  def reconstruction_grid(self, params, key, batch, num: int) -> jax.Array:
    """`uint8[num, H, W, C]`: `num // 2` (input, reconstruction) pairs side by side
    (inputs as stored; a blank image pads an odd `num`)."""
    n = num // 2
    if batch["image"].shape[0] < n:
      raise ValueError(f"{num} grid images need {n} inputs, got a batch of {batch['image'].shape[0]}")
    sub = jax.tree.map(lambda a: a[:n], batch)
    recon = self.reconstruct(params, sub, key)
    pairs = jnp.stack([sub["image"], recon], axis=1).reshape((2 * n,) + self.image_shape)
    if num % 2:
      pairs = jnp.concatenate([pairs, jnp.zeros((1,) + self.image_shape, jnp.uint8)])
    return pairs

  def sample_grid(self, params, model_state, key, batch, num: int) -> jax.Array:
    """`uint8[num, H, W, C]`: prior samples for VAEs, `reconstruction_grid` for autoencoders."""
    if self.variational:
      return self.sample(params, key, num)
    return self.reconstruction_grid(params, key, batch, num)


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not valid; expected one of {tuple(choices)}")
