"""The autoencoder family: plain and denoising autoencoders, VAE, beta-VAE, conditional VAE.

`AutoencoderFamily(config, info)` implements the family contract as pure functions:

* `loss`: reconstruction NLL for `ae`/`dae`; the negative beta-ELBO for `vae`/`cvae`.
* `evaluate`: per-example ELBO (beta = 1, in nats and bits/dim), KL, reconstruction NLL,
  reconstruction MSE on the [0, 1] scale, and the IWAE bound with K samples.
* `generate`: decoder means of latent draws: from the prior N(0, T^2 I) for VAEs; for
  plain and denoising autoencoders, which have no prior, from a Gaussian fitted to the
  training codes (ex-post density estimation, Ghosh et al. 2020): running averages of
  the codes' mean and second moment kept in `model_state` (momentum
  `CODE_MOMENTUM`, updated by the loss like batch-norm statistics), so `N(mean, cov)`
  describes where the decoder has learned to decode.
* figures: `samples`, `reconstructions` (inputs above their reconstructions),
  `interpolation` (rows from one test image's code to another's, linear or spherical),
  `attribute` (rows adding growing multiples of the attribute vector of `--label`: the
  mean code of that class minus the mean of the rest), `latent_map` (the test codes of a
  2-D latent, coloured by class).
* `reference_metrics`: the PCA baseline (the best linear autoencoder at the same latent
  size, fitted by SVD on the training images) with `eval.pca`.

Data model: images arrive as uint8. With `likelihood='bernoulli'` they are binarized
(dynamically, from the pixel intensity, with an explicit key) and scored by a Bernoulli
decoder, so bits/dim is that of the binarized data. With `likelihood='gaussian'` they
are uniformly dequantized to [0, 1) and scored by a diagonal Gaussian decoder; bits/dim
then includes the dequantization correction (bin width 1/256), a bound on 8-bit data.
With `likelihood='discretized_gaussian'` the 8-bit values themselves are scored by a
Gaussian integrated over each of the 256 bins: an exact discrete likelihood.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax import losses
from genjax.data import preprocess
from genjax.data.select import balanced_examples, subset
from genjax.interpolation import lerp, slerp
from genjax.models import pca
from genjax.models.base import Evaluation, Family, Figure, FigureOptions, register, to_float32
from genjax.nn import MLP, ConvDecoder, ConvEncoder
from genjax.schema import require

#: log((1/256)^2 / 12): the log-variance of U[0, 1/256), the dequantization noise in [0, 1] units.
LOGVAR_FLOOR = math.log(1.0 / (12.0 * 256.0**2))
#: log((0.1/255)^2): a discretized Gaussian this narrow puts all but ~1e-6 of its mass in one bin.
DISCRETE_LOGVAR_FLOOR = 2.0 * math.log(0.1 / 255.0)
#: Momentum of the running code statistics of plain and denoising autoencoders.
CODE_MOMENTUM = 0.99
INTERPOLATION_STEPS = 8
ATTRIBUTE_SCALES = np.linspace(0.0, 2.0, 8)


@dataclasses.dataclass(frozen=True)
class AutoencoderModel:
  """The `model` section (see `genjax/configs/vae.py` for what each key does)."""

  variant: Literal["ae", "dae", "vae", "cvae"]
  arch: Literal["mlp", "conv"]
  latent_dim: int
  hidden: tuple[int, ...]
  features: tuple[int, ...]
  likelihood: Literal["bernoulli", "gaussian", "discretized_gaussian"]
  binarization: Literal["dynamic", "threshold"]
  learn_variance: bool
  gaussian_logvar: float
  beta: float
  corruption: Literal["gaussian", "masking"]
  corruption_level: float

  def __post_init__(self):
    require(self.latent_dim > 0, "latent_dim", self.latent_dim, "a positive integer")
    require(len(self.hidden) > 0 and min(self.hidden) > 0, "hidden", self.hidden, "positive widths")
    require(len(self.features) > 0 and min(self.features) > 0, "features", self.features, "positive widths")
    require(self.beta >= 0, "beta", self.beta, "a number >= 0")
    require(math.isfinite(self.gaussian_logvar), "gaussian_logvar", self.gaussian_logvar, "a finite number")
    high = 1.0 if self.corruption == "masking" else math.inf
    require(
      0 <= self.corruption_level <= high,
      "corruption_level",
      self.corruption_level,
      "a number in [0, 1] for masking" if high == 1.0 else "a finite number >= 0",
    )


@dataclasses.dataclass(frozen=True)
class AutoencoderSampling:
  """The `sampling` section."""

  temperature: float  # latent draws z ~ N(0, T^2 I) (VAE) or N(mean, T^2 cov) (AE)

  def __post_init__(self):
    require(0 <= self.temperature < math.inf, "temperature", self.temperature, "a finite number >= 0")


@dataclasses.dataclass(frozen=True)
class AutoencoderEval:
  """The family's keys of the `eval` section (experiments.evaluate)."""

  iwae_samples: int  # K of the IWAE bound (VAEs; 0 = off)
  pca: bool  # report the PCA baseline at the same latent size

  def __post_init__(self):
    require(self.iwae_samples >= 0, "iwae_samples", self.iwae_samples, "an integer >= 0 (0 = off)")


def corrupt(key: jax.Array, x: jax.Array, kind: str, level: float) -> jax.Array:
  """Denoising-autoencoder corruption of `x` (`[B, ...]` in [0, 1]), drawn with `key`.

  'gaussian' adds N(0, level^2) noise; 'masking' zeroes each value with probability `level`.
  """
  if kind == "gaussian":
    return x + level * jax.random.normal(key, x.shape, x.dtype)
  if kind == "masking":
    keep = jax.random.bernoulli(key, 1.0 - level, x.shape)
    return jnp.where(keep, x, 0.0).astype(x.dtype)
  raise ValueError(f"unknown corruption {kind!r}; expected 'gaussian' or 'masking'")


class AutoencoderNet(nn.Module):
  """Encoder and decoder of every autoencoder variant (MLP or convolutional).

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
  dtype: Any = None  # the compute dtype; parameters are `param_dtype`
  param_dtype: Any = jnp.float32

  def setup(self):
    kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    enc_out = 2 * self.latent_dim if self.variational else self.latent_dim
    h, w, c = self.image_shape
    self.out_shape = (h, w, 2 * c if self.learn_variance else c)
    if self.arch == "mlp":
      self.encoder = MLP(tuple(self.hidden) + (enc_out,), **kw)
      self.decoder = MLP(tuple(reversed(self.hidden)) + (math.prod(self.out_shape),), **kw)
    else:
      self.encoder = ConvEncoder(tuple(self.features), enc_out, hidden=self.hidden[0], **kw)
      self.decoder = ConvDecoder(tuple(self.features), self.out_shape, hidden=self.hidden[0], **kw)

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


@register
class AutoencoderFamily(Family):
  """Plain/denoising autoencoders and (beta-, conditional) VAEs as pure functions."""

  @classmethod
  def conv_widths(cls, model) -> list[int]:
    return list(model.features) if model.arch == "conv" else []

  Model = AutoencoderModel
  Sampling = AutoencoderSampling
  EvalOptions = AutoencoderEval

  def __init__(self, config: Any, info: Any):
    super().__init__(config, info)
    cfg = self.cfg = self.model_config
    if not self.images:
      raise ValueError(f"the autoencoder family models images, but dataset {info.name!r} is vector data")
    if cfg.variant == "cvae" and info.num_classes <= 0:
      raise ValueError(f"model.variant='cvae' needs labels, but dataset {info.name!r} has none")
    self.variant = cfg.variant
    self.variational = cfg.variant in ("vae", "cvae")
    self.conditional = cfg.variant == "cvae"
    self.image_shape = self.shape
    self.num_dims = math.prod(self.image_shape)
    self.net = AutoencoderNet(
      variational=self.variational,
      arch=cfg.arch,
      latent_dim=cfg.latent_dim,
      hidden=tuple(cfg.hidden),
      features=tuple(cfg.features),
      image_shape=self.image_shape,
      learn_variance=cfg.likelihood != "bernoulli" and cfg.learn_variance,
      dtype=self.compute_dtype,
      param_dtype=self.param_dtype,
    )
    self.best_metric = "bits_per_dim" if self.variational else "recon_nll"

  # ------------------------------------------------------------------ data model

  def to_model(self, image: jax.Array, key: jax.Array) -> jax.Array:
    """What the decoder scores: binarized or dequantized `[B, H, W, C]` floats in [0, 1]."""
    if self.cfg.likelihood == "bernoulli":
      if self.cfg.binarization == "dynamic":
        return preprocess.binarize_dynamic(key, image)
      return preprocess.binarize_threshold(image)
    if self.cfg.likelihood == "discretized_gaussian":
      return preprocess.to_unit(image)  # bin centres k / 255
    return preprocess.dequantize_uniform(key, image)

  def _cond(self, labels: jax.Array | None) -> jax.Array | None:
    if not self.conditional:
      return None
    return jax.nn.one_hot(labels, self.num_classes)

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

  # ------------------------------------------------------------------ the networks

  def encode(self, params, x, cond=None):
    """`x [B, H, W, C]` in [0, 1] -> `(mean [B, Z], logvar [B, Z] or None)`, float32."""
    return to_float32(self.net.apply({"params": params}, x, cond, method=AutoencoderNet.encode))

  def decode(self, params, z, cond=None):
    """`z [B, Z]` -> decoder output `[B, H, W, C]` (or `2C` with a learned variance), float32."""
    return to_float32(self.net.apply({"params": params}, z, cond, method=AutoencoderNet.decode))

  def decode_images(self, params, z, labels=None) -> jax.Array:
    """Decoder means of codes `z [N, Z]` (with labels `int[N]` for a conditional VAE): `uint8[N, H, W, C]`."""
    if self.conditional and labels is None:
      raise ValueError("a conditional VAE decodes codes together with their labels; pass labels int[N]")
    return preprocess.from_unit(self.mean_image(self.decode(params, z, self._cond(labels))))

  # ------------------------------------------------------------------ the contract

  def init(self, key, batch):
    self.check_batch(batch, need_labels=self.conditional)
    b = batch["image"].shape[0]
    x = jnp.zeros((b,) + self.image_shape, jnp.float32)
    labels = jnp.zeros((b,), jnp.int32) if self.conditional else None
    params = self.net.init(key, x, self._cond(labels))["params"]
    if self.variational:
      return params, {}
    z = self.cfg.latent_dim
    return params, {"code_mean": jnp.zeros((z,)), "code_second_moment": jnp.eye(z)}

  def loss(self, params, model_state, batch, key):
    self.check_batch(batch, need_labels=self.conditional)
    k_data, k_noise, k_z = jax.random.split(key, 3)
    x = self.to_model(batch["image"], k_data)
    cond = self._cond(batch.get("label"))
    x_in = corrupt(k_noise, x, self.cfg.corruption, self.cfg.corruption_level) if self.variant == "dae" else x
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
      return loss, (metrics, model_state)
    nll = -self._log_likelihood(x, self.decode(params, mean, cond))
    loss = jnp.mean(nll)
    return loss, ({"recon_nll": loss}, self._update_code_statistics(model_state, mean))

  def _update_code_statistics(self, model_state, codes):
    """Running averages of the codes' mean and second moment (no gradient flows into them)."""
    codes = jax.lax.stop_gradient(codes)
    m = CODE_MOMENTUM
    return {
      "code_mean": m * model_state["code_mean"] + (1 - m) * jnp.mean(codes, axis=0),
      "code_second_moment": m * model_state["code_second_moment"] + (1 - m) * codes.T @ codes / codes.shape[0],
    }

  def evaluate(self, params, model_state, batch, key, iwae_samples: int = 0):
    """Per-example metrics (`[B]` each); the ELBO always uses beta = 1."""
    self.check_batch(batch, need_labels=self.conditional)
    k_data, k_z, k_iwae = jax.random.split(key, 3)
    image = batch["image"]
    x = self.to_model(image, k_data)
    cond = self._cond(batch.get("label"))
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

  def sample_codes(self, model_state, key, num: int, temperature: float) -> jax.Array:
    """`z [num, Z]`: N(0, T^2 I) for VAEs; N(mean, T^2 cov) of the running code statistics otherwise."""
    eps = jax.random.normal(key, (num, self.cfg.latent_dim))
    if self.variational:
      return temperature * eps
    mean = model_state["code_mean"]
    cov = model_state["code_second_moment"] - jnp.outer(mean, mean)
    cov = 0.5 * (cov + cov.T) + 1e-6 * jnp.eye(mean.shape[0])
    return mean + temperature * eps @ jnp.linalg.cholesky(cov).T

  def sample(self, params, model_state, key, num: int, labels=None, temperature: float | None = None) -> jax.Array:
    """Decoder means of `num` latent draws (`sample_codes`): `uint8[num, H, W, C]`.

    A conditional VAE decodes with `labels` `int[num]` (default: the classes in turn).
    """
    t = self.sampling_config.temperature if temperature is None else temperature
    z = self.sample_codes(model_state, key, num, t)
    labels = self.default_labels(num, labels) if self.conditional else None
    return self.decode_images(params, z, labels)

  def generate(self, params, model_state, key, num: int, labels=None) -> jax.Array:
    """`num` fresh samples at `sampling.temperature`: `uint8[num, H, W, C]`."""
    return self.sample(params, model_state, key, num, labels)

  def reconstruct(self, params, batch, key) -> jax.Array:
    """Decoder means at the posterior mean (after corruption for `dae`): `uint8[B, H, W, C]`."""
    k_data, k_noise = jax.random.split(key)
    x = self.to_model(batch["image"], k_data)
    cond = self._cond(batch.get("label"))
    if self.variant == "dae":
      x = corrupt(k_noise, x, self.cfg.corruption, self.cfg.corruption_level)
    mean, _ = self.encode(params, x, cond)
    return preprocess.from_unit(self.mean_image(self.decode(params, mean, cond)))

  # ------------------------------------------------------------------ pictures

  def sample_grid(self, params, model_state, key, batch, num: int) -> Figure:
    """VAEs: `num` samples. Autoencoders: `num // 2` test inputs above their reconstructions."""
    if self.variational:
      return Figure.images(self.generate(params, model_state, key, num))
    sub = jax.tree.map(lambda a: a[: max(num // 2, 1)], batch)
    return Figure.pairs(sub["image"], self.reconstruct(params, sub, key))

  def figures(self):
    kinds = dict(super().figures())
    kinds.update(reconstructions=self.figure_reconstructions, interpolation=self.figure_interpolation)
    if self.num_classes > 0:
      kinds["attribute"] = self.figure_attribute
    if self.cfg.latent_dim == 2:
      kinds["latent_map"] = self.figure_latent_map
    return kinds

  def figure_reconstructions(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """`options.num // 2` test images (a class-balanced choice) above their reconstructions."""
    batch = balanced_examples(source, max(options.num // 2, 1), options.seed)
    recon = jax.jit(self.reconstruct)(params, batch, key)
    return Figure.pairs(batch["image"], recon)

  def encode_split(self, params, source, key, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray | None]:
    """Posterior means (VAE) or codes (AE) of every example: `(z [N, Z], labels [N] or None)`."""

    @jax.jit
    def encode(params, image, label, key):
      return self.encode(params, self.to_model(image, key), self._cond(label))[0]

    zs, labels = [], []
    for i, start in enumerate(range(0, len(source), batch_size)):
      batch = source[np.arange(start, min(start + batch_size, len(source)))]
      label = batch.get("label", np.zeros(len(batch["image"]), np.int32))
      zs.append(np.asarray(encode(params, batch["image"], label, jax.random.fold_in(key, i))))
      labels.append(batch.get("label"))
    return np.concatenate(zs), (np.concatenate(labels) if labels[0] is not None else None)

  def figure_interpolation(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """Rows of `INTERPOLATION_STEPS` decodings from one test image's code to another's."""
    pairs = max(options.num // INTERPOLATION_STEPS, 1)
    rng = np.random.default_rng(options.seed)
    idx = rng.choice(len(source), size=2 * pairs, replace=False)
    z, labels = self.encode_split(params, subset(source, idx), key)
    t = jnp.linspace(0.0, 1.0, INTERPOLATION_STEPS)[None, :, None]
    a, b = jnp.asarray(z[:pairs])[:, None], jnp.asarray(z[pairs:])[:, None]
    path = (slerp if options.spherical else lerp)(a, b, t).reshape(-1, z.shape[-1])
    lab = np.repeat(labels[:pairs], INTERPOLATION_STEPS) if self.conditional else None
    return Figure.images(self.decode_images(params, path, lab), ncol=INTERPOLATION_STEPS)

  def figure_attribute(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """Rows adding 0..2x the attribute vector of class `options.label` (default 1) to codes of other classes."""
    label = 1 if options.label is None else options.label
    z, labels = self.encode_split(params, source, key)
    if labels is None:
      raise ValueError("attribute arithmetic needs a labelled dataset")
    has = labels == label
    if has.all() or not has.any():
      raise ValueError(f"attribute vectors need examples with and without label {label}")
    vector = z[has].mean(axis=0) - z[~has].mean(axis=0)
    rows = max(options.num // len(ATTRIBUTE_SCALES), 1)
    pick = np.random.default_rng(options.seed).choice(np.flatnonzero(~has), size=rows, replace=False)
    path = z[pick][:, None, :] + ATTRIBUTE_SCALES[None, :, None] * vector[None, None, :]
    lab = np.repeat(labels[pick], len(ATTRIBUTE_SCALES)) if self.conditional else None
    return Figure.images(
      self.decode_images(params, path.reshape(-1, z.shape[-1]), lab), ncol=len(ATTRIBUTE_SCALES)
    )

  def figure_latent_map(self, params, model_state, key, source, options: FigureOptions) -> Figure:
    """The codes of the whole split (a 2-D latent), coloured by class."""
    if self.cfg.latent_dim != 2:
      raise ValueError(f"a latent map needs a 2-D latent (model.latent_dim=2), got {self.cfg.latent_dim}")
    z, labels = self.encode_split(params, source, key)
    return Figure.points(z, labels)

  # ------------------------------------------------------------------ evaluation

  def final_evaluation(self) -> Evaluation:
    """The ELBO terms, and the IWAE bound with `eval.iwae_samples` samples (VAEs)."""
    k = self.eval_config.iwae_samples if self.variational else 0
    return Evaluation(options={"iwae_samples": k} if k else {})

  def reference_metrics(self, train, test) -> dict[str, float]:
    """`pca_mse`: reconstruction MSE of rank-`latent_dim` PCA fitted on `train`, on `test` (with `eval.pca`)."""
    if not self.eval_config.pca:
      return {}

    def flat(source):
      return source[np.arange(len(source))]["image"].reshape(len(source), -1) / 255.0

    k = self.cfg.latent_dim
    return {"pca_mse": pca.pca_reconstruction_mse(flat(train), flat(test), k), "pca_components": k}
