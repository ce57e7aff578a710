"""The GAN family: the minimax game and its non-saturating, hinge and WGAN-GP variants.

`GANFamily(model_config, info)` holds a generator G and a discriminator D:

* `arch='dcgan'` (images): `genjax.nn.dcgan.DCGANGenerator` / `DCGANDiscriminator`,
  images scaled to [-1, 1] (`preprocess.to_symmetric`), G's tanh output mapped back
  to uint8 by `from_symmetric`;
* `arch='mlp'` (toy vectors): `MLPGenerator` / `MLPDiscriminator` on the raw `x`.

`conditional=True` feeds the label to both players (fakes take the labels of the real
batch they are paired with). Parameters are `{'generator': ..., 'discriminator': ...}`
and `model_state` holds each player's batch-norm statistics (`{}` for the MLPs).

Training is the two-player step of `genjax.train.two_player`, built from
`discriminator_loss` and `generator_loss` below; `d_steps` (k) discriminator updates
precede each generator update. `loss` (the protocol's single objective) returns both
players' losses at the current parameters without updating anything.

Evaluation (per example, averaged over a split): `d_real` = D(x) on the test images,
`d_fake` = D(G(z)) on one fresh sample per test example, `disc_accuracy` (D correct
at threshold 1/2, averaged over the real and the fake), and for the Gaussian-mixture
toys `high_quality` (the sample lies within 3 standard deviations of a mode) and
`log_p_data` (the exact data log-density at the sample). The checkpoint manager picks
the best checkpoint by `high_quality` (max) on those toys and by `disc_accuracy`
(min: the discriminator can least tell) otherwise: a weak proxy, documented as such;
the image score is the Frechet distance of `experiments.evaluate`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genjax import losses
from genjax.data import preprocess
from genjax.data.toy import TOYS
from genjax.eval.plots import histogram_image, scatter_image
from genjax.nn.dcgan import (
  DCGANDiscriminator,
  DCGANGenerator,
  MLPDiscriminator,
  MLPGenerator,
)

ARCHS = ("dcgan", "mlp")
GAN_LOSSES = ("non_saturating", "minimax", "hinge", "wgan_gp")
#: Samples drawn for a toy family's picture (`sample_grid`).
TOY_PICTURE_SAMPLES = 2000


def _choice(name: str, value: Any, choices) -> None:
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not valid; expected one of {tuple(choices)}")


class GANFamily:
  """A generator and a discriminator as pure functions of explicit params and keys."""

  two_player = True  # trained by genjax.train.two_player, not the single-objective step

  def __init__(self, cfg: Any, info: Any):
    _choice("model.arch", cfg.arch, ARCHS)
    _choice("model.loss", cfg.loss, GAN_LOSSES)
    if cfg.latent_dim <= 0:
      raise ValueError(f"model.latent_dim must be positive, got {cfg.latent_dim}")
    if int(cfg.d_steps) < 1:
      raise ValueError(f"model.d_steps must be at least 1, got {cfg.d_steps}")
    if cfg.conditional and info.num_classes <= 0:
      raise ValueError(f"model.conditional=True needs labels, but dataset {info.name!r} has none")
    if cfg.arch == "dcgan" and info.kind != "image":
      raise ValueError(
        f"model.arch='dcgan' models images, but dataset {info.name!r} is {info.kind!r} data; use model.arch='mlp'"
      )
    if cfg.arch == "mlp" and info.kind != "vector":
      raise ValueError(
        f"model.arch='mlp' models toy vectors, but dataset {info.name!r} is {info.kind!r} data; "
        f"use model.arch='dcgan'"
      )
    if cfg.loss == "wgan_gp" and cfg.arch == "dcgan":
      raise ValueError(
        "model.loss='wgan_gp' needs a critic without batch norm (the penalty is per example); "
        "use it with model.arch='mlp'"
      )
    self.cfg, self.info = cfg, info
    self.images = info.kind == "image"
    self.shape = tuple(info.shape)
    self.latent_dim = int(cfg.latent_dim)
    self.d_steps = int(cfg.d_steps)
    self.conditional = bool(cfg.conditional)
    self.num_classes = info.num_classes if self.conditional else 0
    if cfg.arch == "dcgan":
      self.generator = DCGANGenerator(self.shape, tuple(cfg.g_features), self.num_classes)
      self.discriminator = DCGANDiscriminator(tuple(cfg.d_features), self.num_classes)
    else:
      self.generator = MLPGenerator(self.shape[0], tuple(cfg.g_hidden), self.num_classes)
      self.discriminator = MLPDiscriminator(tuple(cfg.d_hidden), self.num_classes)
    self.toy = TOYS.get(info.name) if not self.images else None
    self.gaussian_toy = self.toy is not None and self.toy.mode_std is not None
    self.best_metric, self.best_mode = ("high_quality", "max") if self.gaussian_toy else ("disc_accuracy", "min")

  # ------------------------------------------------------------------ networks

  def _apply(self, net, params, stats, *args, train: bool):
    """`net(*args)`; returns `(output, new batch stats)` (unchanged unless training with batch norm)."""
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    if train and stats:
      out, updated = net.apply(variables, *args, train=True, mutable=["batch_stats"])
      return out, updated["batch_stats"]
    return net.apply(variables, *args, train=train), stats

  def real(self, batch) -> jax.Array:
    """The data as the discriminator sees it: images in [-1, 1], toy vectors as they are."""
    return preprocess.to_symmetric(batch["image"]) if self.images else batch["x"].astype(jnp.float32)

  def _labels(self, batch):
    return batch["label"] if self.conditional else None

  def noise(self, key, num: int) -> jax.Array:
    """`z ~ N(0, I)`, `[num, latent_dim]`."""
    return jax.random.normal(key, (num, self.latent_dim))

  def fake(self, params, model_state, z, labels=None, train: bool = False):
    """`G(z)` (`[N, ...]` on the data's scale) and G's new batch statistics."""
    return self._apply(self.generator, params, model_state["generator"], z, labels, train=train)

  def logits(self, params, model_state, x, labels=None, train: bool = False):
    """`logit D(x)` `[N]` and D's new batch statistics."""
    return self._apply(self.discriminator, params, model_state["discriminator"], x, labels, train=train)

  # ------------------------------------------------------------------ the two players' objectives

  def discriminator_loss(self, d_params, g_params, model_state, batch, key):
    """D's objective on one minibatch; G is held fixed. `(loss, (metrics, new D statistics))`.

    Real and fake halves go through D separately (as in DCGAN), both in training mode.
    """
    k_z, k_gp = jax.random.split(key)
    real, labels = self.real(batch), self._labels(batch)
    fake, _ = self.fake(g_params, model_state, self.noise(k_z, real.shape[0]), labels, train=True)
    fake = jax.lax.stop_gradient(fake)
    ms = dict(model_state)
    real_logits, ms["discriminator"] = self.logits(d_params, ms, real, labels, train=True)
    fake_logits, d_stats = self.logits(d_params, ms, fake, labels, train=True)
    if self.cfg.loss in ("non_saturating", "minimax"):
      loss = losses.gan_discriminator_loss(real_logits, fake_logits)
    elif self.cfg.loss == "hinge":
      loss = losses.gan_hinge_discriminator_loss(real_logits, fake_logits)
    else:
      critic = lambda x: self.logits(d_params, model_state, x, labels)[0]
      loss = losses.wgan_critic_loss(real_logits, fake_logits) + self.cfg.gp_weight * losses.gradient_penalty(
        critic, real, fake, k_gp
      )
    metrics = {"d_real": jnp.mean(jax.nn.sigmoid(real_logits)), "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits))}
    return loss, (metrics, d_stats)

  def generator_loss(self, g_params, d_params, model_state, batch, key):
    """G's objective for `len(batch)` fresh samples (labels from `batch` if conditional).

    D is held fixed and applied in training mode (batch statistics of the fakes, as in
    the discriminator's update); its running statistics are not updated here.
    Returns `(loss, (metrics, new G statistics))`.
    """
    labels = self._labels(batch)
    num = jax.tree.leaves(batch)[0].shape[0]
    fake, g_stats = self.fake(g_params, model_state, self.noise(key, num), labels, train=True)
    fake_logits, _ = self.logits(d_params, model_state, fake, labels, train=True)
    if self.cfg.loss == "non_saturating":
      loss = losses.gan_generator_non_saturating_loss(fake_logits)
    elif self.cfg.loss == "minimax":
      loss = losses.gan_generator_minimax_loss(fake_logits)
    elif self.cfg.loss == "hinge":
      loss = losses.gan_hinge_generator_loss(fake_logits)
    else:
      loss = losses.wgan_generator_loss(fake_logits)
    return loss, ({"d_fake_g": jnp.mean(jax.nn.sigmoid(fake_logits))}, g_stats)

  # ------------------------------------------------------------------ protocol

  def init(self, key, batch):
    k_g, k_d = jax.random.split(key)
    n = jax.tree.leaves(batch)[0].shape[0]
    labels = jnp.zeros((n,), jnp.int32) if self.conditional else None
    g_vars = self.generator.init(k_g, jnp.zeros((n, self.latent_dim)), labels, train=False)
    d_vars = self.discriminator.init(k_d, jnp.zeros((n,) + self.shape), labels, train=False)
    params = {"generator": g_vars["params"], "discriminator": d_vars["params"]}
    model_state = {"generator": g_vars.get("batch_stats", {}), "discriminator": d_vars.get("batch_stats", {})}
    return params, model_state

  def loss(self, params, model_state, batch, key):
    """Both players' losses at `params` (no update); the loss returned is D's."""
    k_d, k_g = jax.random.split(key)
    loss_d, (metrics, _) = self.discriminator_loss(
      params["discriminator"], params["generator"], model_state, batch, k_d
    )
    loss_g, (g_metrics, _) = self.generator_loss(
      params["generator"], params["discriminator"], model_state, batch, k_g
    )
    return loss_d, (dict(metrics, **g_metrics, loss_d=loss_d, loss_g=loss_g), model_state)

  def evaluate(self, params, model_state, batch, key):
    real, labels = self.real(batch), self._labels(batch)
    fake, _ = self.fake(params["generator"], model_state, self.noise(key, real.shape[0]), labels)
    d_real = jax.nn.sigmoid(self.logits(params["discriminator"], model_state, real, labels)[0])
    d_fake = jax.nn.sigmoid(self.logits(params["discriminator"], model_state, fake, labels)[0])
    out = {
      "d_real": d_real,
      "d_fake": d_fake,
      "disc_accuracy": 0.5 * ((d_real > 0.5).astype(jnp.float32) + (d_fake < 0.5).astype(jnp.float32)),
    }
    if self.gaussian_toy:
      modes, std = jnp.asarray(self.toy.modes, jnp.float32), float(self.toy.mode_std)
      sq = jnp.sum(jnp.square(fake[:, None, :] - modes[None]), axis=-1)  # [B, K]
      out["high_quality"] = (jnp.sqrt(jnp.min(sq, axis=1)) <= 3.0 * std).astype(jnp.float32)
      d = modes.shape[1]
      log_comp = -0.5 * sq / std**2 - d * (math.log(std) + 0.5 * math.log(2 * math.pi))
      out["log_p_data"] = jax.nn.logsumexp(log_comp, axis=1) - math.log(modes.shape[0])
    return out

  def generate(self, params, model_state, key, num: int, labels=None) -> jax.Array:
    """`num` samples from G (running batch-norm statistics): `uint8[num, H, W, C]` images or
    `float32[num, D]` vectors. A conditional model cycles through the classes unless given `labels`."""
    if self.conditional:
      labels = jnp.arange(num) % self.num_classes if labels is None else jnp.asarray(labels, jnp.int32)
    else:
      labels = None
    fake, _ = self.fake(params["generator"], model_state, self.noise(key, num), labels)
    return preprocess.from_symmetric(fake) if self.images else fake

  def picture_range(self) -> tuple[float, float]:
    """The square (or interval) the toy pictures cover: the modes' extent plus a margin."""
    if self.toy is not None and self.toy.modes is not None:
      extent = float(np.max(np.abs(self.toy.modes)))
      return -(extent + 1.5), extent + 1.5
    return -4.0, 4.0

  def sample_grid(self, params, model_state, key, batch, num: int) -> jax.Array:
    """Images: `uint8[num, H, W, C]` samples. Toys: one `uint8[1, 128, 128, 1]` picture of
    `TOY_PICTURE_SAMPLES` samples (a 2-D scatter or a 1-D histogram)."""
    if self.images:
      return self.generate(params, model_state, key, num)
    x = self.generate(params, model_state, key, TOY_PICTURE_SAMPLES)
    lo, hi = self.picture_range()
    picture = scatter_image(x, lo, hi) if self.shape[0] == 2 else histogram_image(x[:, 0], lo, hi)
    return picture[None]
