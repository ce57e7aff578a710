"""The GAN family: the minimax game and its non-saturating, hinge and WGAN-GP variants.

`GANFamily(config, info)` holds a generator G and a discriminator D:

* `arch='dcgan'` (images): `genjax.nn.dcgan.DCGANGenerator` / `DCGANDiscriminator`,
  images scaled to [-1, 1] (`preprocess.to_symmetric`), G's tanh output mapped back
  to uint8 by `from_symmetric`;
* `arch='mlp'` (toy vectors): `MLPGenerator` / `MLPDiscriminator` on the raw `x`.

`conditional=True` feeds the label to both players (fakes take the labels of the real
batch they are paired with). Parameters are `{'generator': ..., 'discriminator': ...}`
and `model_state` holds each player's batch-norm statistics (`{}` for the MLPs).

**Training** overrides the contract's `update` and `make_optimizer`: one update is
`k = model.d_steps` discriminator updates, then one generator update, all inside the
trainer's one compiled step (k is small, so the updates are unrolled: XLA:CPU runs
convolutions inside a `lax.scan` on a slow generic loop, 30x slower for the DCGAN).
The global batch of B examples holds the k discriminator minibatches: minibatch i is
rows i, i + k, i + 2k, ... (B / k rows; the strided split keeps every minibatch evenly
spread over the devices), so each real example is used once per step; B must be a
multiple of k * devices (`batch_multiple`). The generator update draws B fresh latents
(and, for a conditional model, takes the whole batch's labels); with `model.reuse_fakes`
(k = 1 only) it differentiates its loss on the discriminator update's own fakes instead,
through the VJP of the one generator forward pass of the step, as Radford et al.'s and
PyTorch's DCGAN code do (the `size64` and `celeb_a` presets). Keys: the step key is
split into D's key (split again per update) and G's key. The optimizers are a
`TwoPlayerOptimizer`: the `optim` section for G at `optim.learning_rate` and for D at
`optim.disc_learning_rate` (0 = the same), D's schedule counted in its own updates
(k per step); the trainer's EMA covers both players.

`loss` is the pair of objectives each differentiated only with respect to its own
player: `L_D(d, stop_gradient(g)) + L_G(g, stop_gradient(d))`, whose gradient is
`(dL_D/dd, dL_G/dg)`, the simultaneous-gradient update of both players (a finite
scalar like every family's loss; the alternating update above is what trains).

Logged: `loss_d` and `loss_g` (`loss` is `loss_d`), `d_real` and `d_fake` (mean D(x)
and D(G(z)) over the discriminator's updates), `d_fake_g` (D(G(z)) seen by the
generator update), `grad_norm_g` (so saturation of the minimax loss shows) and
`grad_norm_d`.

Evaluation (per example, averaged over a split): `d_real` = D(x) on the test images,
`d_fake` = D(G(z)) on one fresh sample per test example, `disc_accuracy` (D correct
at threshold 1/2, averaged over the real and the fake), and for the Gaussian-mixture
toys `high_quality` (the sample lies within 3 standard deviations of a mode) and
`log_p_data` (the exact data log-density at the sample). The best checkpoint is picked
by `high_quality` (max) on those toys and by `disc_accuracy` (min: the discriminator
can least tell) otherwise: a weak proxy, documented as such; the image score is the
Frechet distance of `experiments.evaluate`. On 1-D toys `sample_statistics` compares D
with the optimal `D* = p_data / (p_data + p_g)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax import losses, optim
from genjax.data import preprocess
from genjax.data.toy import TOYS
from genjax.models.base import Family, register, to_float32
from genjax.nn.dcgan import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from genjax.schema import invalid, require


@dataclasses.dataclass(frozen=True)
class GANModel:
  """The `model` section (see `genjax/configs/gan.py`)."""

  arch: Literal["dcgan", "mlp"]
  loss: Literal["non_saturating", "minimax", "hinge", "wgan_gp"]
  latent_dim: int
  g_features: tuple[int, ...]  # dcgan
  d_features: tuple[int, ...]  # dcgan
  g_hidden: tuple[int, ...]  # mlp
  d_hidden: tuple[int, ...]  # mlp
  d_steps: int  # k discriminator updates per generator update
  gp_weight: float  # wgan_gp
  conditional: bool
  reuse_fakes: bool = False  # G's update reuses D's update's fakes (one G forward per step; d_steps = 1)

  def __post_init__(self):
    require(self.latent_dim > 0, "latent_dim", self.latent_dim, "a positive integer")
    require(self.d_steps >= 1, "d_steps", self.d_steps, "an integer >= 1")
    require(self.gp_weight >= 0, "gp_weight", self.gp_weight, "a number >= 0")
    for name in ("g_features", "d_features", "g_hidden", "d_hidden"):
      widths = getattr(self, name)
      require(len(widths) > 0 and min(widths) > 0, name, widths, "positive widths")
    if self.reuse_fakes and self.d_steps != 1:
      raise invalid("reuse_fakes", self.reuse_fakes, "False with d_steps > 1 (it reuses the one D update's fakes)")
    if self.loss == "wgan_gp" and self.arch == "dcgan":
      raise invalid(
        "loss", self.loss, "not 'wgan_gp' with arch='dcgan' (the penalty needs a critic without batch norm)"
      )


@dataclasses.dataclass(frozen=True)
class GANOptim:
  """The family's key of the `optim` section."""

  disc_learning_rate: float  # D's learning rate; 0 = optim.learning_rate

  def __post_init__(self):
    require(
      0 <= self.disc_learning_rate < math.inf, "disc_learning_rate", self.disc_learning_rate, "a number >= 0"
    )


class TwoPlayerOptimizer(NamedTuple):
  """One optax transformation per player; `init` gives the `{'generator', 'discriminator'}` state."""

  generator: optax.GradientTransformation
  discriminator: optax.GradientTransformation

  def init(self, params: dict) -> dict:
    return {
      "generator": self.generator.init(params["generator"]),
      "discriminator": self.discriminator.init(params["discriminator"]),
    }


def split_minibatches(batch: dict, k: int) -> list[dict]:
  """`{name: [B, ...]}` -> k minibatches `{name: [B // k, ...]}`; minibatch i holds rows i, i + k, ..."""
  n = jax.tree.leaves(batch)[0].shape[0]
  if n % k:
    raise ValueError(f"the batch of {n} examples does not split into model.d_steps = {k} minibatches")
  return [jax.tree.map(lambda a, i=i: a[i::k], batch) for i in range(k)]


@register
class GANFamily(Family):
  """A generator and a discriminator as pure functions of explicit params and keys."""

  @classmethod
  def conv_widths(cls, model) -> list[int]:
    return list(model.g_features) + list(model.d_features) if model.arch == "dcgan" else []

  Model = GANModel
  OptimOptions = GANOptim

  def __init__(self, config: Any, info: Any):
    super().__init__(config, info)
    cfg = self.cfg = self.model_config
    if cfg.conditional and info.num_classes <= 0:
      raise ValueError(f"model.conditional=True needs labels, but dataset {info.name!r} has none")
    if cfg.arch == "dcgan" and not self.images:
      raise invalid("model.arch", cfg.arch, f"'mlp': dataset {info.name!r} holds vectors, not images")
    if cfg.arch == "mlp" and self.images:
      raise invalid("model.arch", cfg.arch, f"'dcgan': dataset {info.name!r} holds images, not vectors")
    self.latent_dim = int(cfg.latent_dim)
    self.d_steps = int(cfg.d_steps)
    self.conditional = bool(cfg.conditional)
    num_classes = info.num_classes if self.conditional else 0
    kw = {"dtype": self.compute_dtype, "param_dtype": self.param_dtype}
    if cfg.arch == "dcgan":
      self.generator = DCGANGenerator(self.shape, tuple(cfg.g_features), num_classes, **kw)
      self.discriminator = DCGANDiscriminator(tuple(cfg.d_features), num_classes, **kw)
    else:
      self.generator = MLPGenerator(self.shape[0], tuple(cfg.g_hidden), num_classes, **kw)
      self.discriminator = MLPDiscriminator(tuple(cfg.d_hidden), num_classes, **kw)
    self.toy = TOYS.get(info.name) if not self.images else None
    self.gaussian_toy = self.toy is not None and self.toy.mode_std is not None
    self.best_metric, self.best_mode = ("high_quality", "max") if self.gaussian_toy else ("disc_accuracy", "min")

  # ------------------------------------------------------------------ networks

  def _apply(self, net, params, stats, *args, train: bool):
    """`net(*args)`; returns `(output, new batch stats)` (unchanged unless training with batch norm).

    The network runs in `model.dtype`; its output is cast to float32 (the losses, the gradient
    penalty and the samples are float32; batch-norm statistics are float32 variables)."""
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    if train and stats:
      out, updated = net.apply(variables, *args, train=True, mutable=["batch_stats"])
      return to_float32(out), updated["batch_stats"]
    return to_float32(net.apply(variables, *args, train=train)), stats

  def to_model(self, batch, key: jax.Array | None = None) -> jax.Array:
    """The data as the discriminator sees it: images in [-1, 1], toy vectors as they are (`key` unused)."""
    del key
    self.check_batch(batch, need_labels=self.conditional)
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

  @staticmethod
  def _d_keys(key):
    """A discriminator update's key -> (its latents' key, its gradient penalty's key)."""
    return jax.random.split(key)

  def discriminator_loss(self, d_params, g_params, model_state, batch, key, fake=None):
    """D's objective on one minibatch; G is held fixed. `(loss, (metrics, new D statistics))`.

    Real and fake halves go through D separately (as in DCGAN), both in training mode. The
    fakes are `G(z)` for `z` drawn with `key`'s latent half (`_d_keys`), or `fake` when given.
    """
    k_z, k_gp = self._d_keys(key)
    real, labels = self.to_model(batch), self._labels(batch)
    if fake is None:
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
    loss, metrics = self.generator_objective(fake, d_params, model_state, labels)
    return loss, (metrics, g_stats)

  def generator_objective(self, fake, d_params, model_state, labels=None):
    """G's loss as a function of its fakes `[N, ...]` (D fixed, in training mode): `(loss, metrics)`."""
    fake_logits, _ = self.logits(d_params, model_state, fake, labels, train=True)
    if self.cfg.loss == "non_saturating":
      loss = losses.gan_generator_non_saturating_loss(fake_logits)
    elif self.cfg.loss == "minimax":
      loss = losses.gan_generator_minimax_loss(fake_logits)
    elif self.cfg.loss == "hinge":
      loss = losses.gan_hinge_generator_loss(fake_logits)
    else:
      loss = losses.wgan_generator_loss(fake_logits)
    return loss, {"d_fake_g": jnp.mean(jax.nn.sigmoid(fake_logits))}

  # ------------------------------------------------------------------ the contract

  def init(self, key, batch):
    self.check_batch(batch, need_labels=self.conditional)
    k_g, k_d = jax.random.split(key)
    n = jax.tree.leaves(batch)[0].shape[0]
    labels = jnp.zeros((n,), jnp.int32) if self.conditional else None
    g_vars = self.generator.init(k_g, jnp.zeros((n, self.latent_dim)), labels, train=False)
    d_vars = self.discriminator.init(k_d, jnp.zeros((n,) + self.shape), labels, train=False)
    params = {"generator": g_vars["params"], "discriminator": d_vars["params"]}
    model_state = {"generator": g_vars.get("batch_stats", {}), "discriminator": d_vars.get("batch_stats", {})}
    return params, model_state

  def loss(self, params, model_state, batch, key):
    """`L_D(d, sg(g)) + L_G(g, sg(d))`: each player's objective, differentiable in its own params only.

    Returns the sum, with both players' metrics and their new batch statistics.
    """
    k_d, k_g = jax.random.split(key)
    g, d = params["generator"], params["discriminator"]
    loss_d, (metrics, d_stats) = self.discriminator_loss(d, jax.lax.stop_gradient(g), model_state, batch, k_d)
    loss_g, (g_metrics, g_stats) = self.generator_loss(g, jax.lax.stop_gradient(d), model_state, batch, k_g)
    new_state = {"generator": g_stats, "discriminator": d_stats}
    return loss_d + loss_g, (dict(metrics, **g_metrics, loss_d=loss_d, loss_g=loss_g), new_state)

  def batch_multiple(self) -> int:
    return self.d_steps

  def make_optimizer(self, num_steps: int) -> TwoPlayerOptimizer:
    """G at `optim.learning_rate`, D at `optim.disc_learning_rate` (0 = the same), each over its own updates."""
    d_lr = self.optim_options.disc_learning_rate or self.optim_config.learning_rate
    d_cfg = dataclasses.replace(
      self.optim_config, learning_rate=d_lr, warmup_steps=self.optim_config.warmup_steps * self.d_steps
    )
    return TwoPlayerOptimizer(
      optim.make_optimizer(self.optim_config, num_steps), optim.make_optimizer(d_cfg, num_steps * self.d_steps)
    )

  def update(self, tx, params, opt_state, model_state, batch, key):
    """k discriminator updates on the batch's k strided minibatches, then one generator update.

    With `model.reuse_fakes` (k = 1), G runs forward once: D's update sees `G(z)` and G's
    update differentiates its loss on the same fakes (against the updated D) through that
    forward pass's VJP, as Radford et al.'s and PyTorch's DCGAN do. Otherwise G's update
    draws fresh latents.
    """
    k_d, k_g = jax.random.split(key)
    g_params, g_state = params["generator"], model_state["generator"]
    d_params, d_opt, d_state = params["discriminator"], opt_state["discriminator"], model_state["discriminator"]
    d_metrics = []
    d_keys = jax.random.split(k_d, self.d_steps)
    fake = None
    if self.cfg.reuse_fakes:
      labels = self._labels(batch)
      z = self.noise(self._d_keys(d_keys[0])[0], jax.tree.leaves(batch)[0].shape[0])  # D's own latents
      g_forward = lambda g: self.fake(g, {"generator": g_state}, z, labels, train=True)  # noqa: E731
      fake, g_vjp, g_stats = jax.vjp(g_forward, g_params, has_aux=True)
    for minibatch, k in zip(split_minibatches(batch, self.d_steps), d_keys, strict=True):
      ms = {"generator": g_state, "discriminator": d_state}
      (loss, (metrics, d_state)), grads = jax.value_and_grad(self.discriminator_loss, has_aux=True)(
        d_params, g_params, ms, minibatch, k, fake
      )
      updates, d_opt = tx.discriminator.update(grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, updates)
      d_metrics.append(dict(metrics, loss_d=loss, grad_norm_d=optax.tree.norm(grads)))
    d_metrics = jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *d_metrics)

    ms = {"generator": g_state, "discriminator": d_state}
    if self.cfg.reuse_fakes:
      (loss_g, g_metrics), d_fake = jax.value_and_grad(self.generator_objective, has_aux=True)(
        fake, d_params, ms, labels
      )
      (g_grads,), g_state = g_vjp(d_fake), g_stats
    else:
      (loss_g, (g_metrics, g_state)), g_grads = jax.value_and_grad(self.generator_loss, has_aux=True)(
        g_params, d_params, ms, batch, k_g
      )
    updates, g_opt = tx.generator.update(g_grads, opt_state["generator"], g_params)
    g_params = optax.apply_updates(g_params, updates)
    metrics = dict(
      d_metrics, **g_metrics, loss_g=loss_g, loss=d_metrics["loss_d"], grad_norm_g=optax.tree.norm(g_grads)
    )
    return (
      {"generator": g_params, "discriminator": d_params},
      {"generator": g_opt, "discriminator": d_opt},
      {"generator": g_state, "discriminator": d_state},
      metrics,
    )

  def evaluate(self, params, model_state, batch, key):
    real, labels = self.to_model(batch), self._labels(batch)
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
    if labels is not None and not self.conditional:
      raise ValueError("this GAN is unconditional; generate() takes no labels")
    labels = self.default_labels(num, labels) if self.conditional else None
    fake, _ = self.fake(params["generator"], model_state, self.noise(key, num), labels)
    return preprocess.from_symmetric(fake) if self.images else fake

  # ------------------------------------------------------------------ statistics

  def sample_statistics(self, params, model_state, samples: np.ndarray) -> dict[str, float]:
    """On a 1-D toy with an exact density: the gap between D and `D* = p_data / (p_data + p_g)`."""
    if self.toy is None or self.shape != (1,) or self.toy.log_prob is None:
      return {}
    extent = float(np.max(np.abs(self.toy.modes))) + 1.5 if self.toy.modes is not None else 4.0
    d_fn = jax.jit(lambda g: jax.nn.sigmoid(self.logits(params["discriminator"], model_state, g)[0]))
    return optimal_discriminator_gap(lambda g: np.asarray(d_fn(g)), self.toy.log_prob, samples, -extent, extent)


def optimal_discriminator_gap(
  d_prob, data_log_prob, samples: np.ndarray, lo: float, hi: float, num_points: int = 400
):
  """A 1-D discriminator `d_prob(x float32[M, 1]) -> D(x) [M]` against `D* = p_data / (p_data + p_g)`.

  Compared on a grid of `[lo, hi]`.

  For a fixed generator, the discriminator that maximizes the GAN value function is
  `D*` (Goodfellow et al. 2014, Prop. 1). `p_data` is exact (`data_log_prob`), `p_g` a
  Gaussian kernel density estimate of the generator's `samples` `[N, 1]` (Scott's
  bandwidth). Returns `d_gap_mean` (E |D - D*| under the mixture `(p_data + p_g) / 2`,
  where the discriminator is trained), `d_gap_max` (max |D - D*| where the mixture
  density exceeds 1% of its peak), and `d_star_mean` / `d_mean` (mixture means).
  """
  from scipy.stats import gaussian_kde

  samples = np.asarray(samples, np.float64).reshape(-1)
  if samples.size < 2:
    raise ValueError(f"need at least 2 generated samples, got {samples.size}")
  grid = np.linspace(lo, hi, num_points)
  p_data = np.exp(data_log_prob(grid[:, None]))
  p_g = gaussian_kde(samples)(grid) if np.std(samples) > 0 else np.zeros_like(grid)
  d_star = p_data / np.maximum(p_data + p_g, 1e-300)
  d = np.asarray(d_prob(grid[:, None].astype(np.float32)), np.float64).reshape(-1)
  mix = 0.5 * (p_data + p_g)
  w = mix / mix.sum()
  region = mix > 0.01 * mix.max()
  gap = np.abs(d - d_star)
  return {
    "d_gap_mean": float(np.sum(w * gap)),
    "d_gap_max": float(gap[region].max()),
    "d_star_mean": float(np.sum(w * d_star)),
    "d_mean": float(np.sum(w * d)),
  }
