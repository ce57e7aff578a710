"""Tests for the autoencoder family (genjax.models.autoencoder), the PCA baseline
(genjax.models.pca), interpolation (genjax.interpolation) and the family's figures.

Families are built from the `tiny` preset (8x8x1 digits, small nets). `init`, the
loss gradient and the IWAE evaluation are jitted (the biggest compiles, which the
persistent compilation cache keeps between runs); everything else runs eagerly, where
op-by-op dispatch shares its small per-op compiles across families with equal shapes.
Params are built once per network (ae and dae share a net, as do the vae variants).
"""

import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from sklearn.decomposition import PCA

import genjax.data
from genjax import losses
from genjax.configs import vae
from genjax.data import preprocess
from genjax.interpolation import lerp, slerp
from genjax.models import FigureOptions, pca
from genjax.models.autoencoder import CODE_MOMENTUM, AutoencoderFamily, corrupt

B = 16
Z = 4  # latent_dim of the tiny preset
D = 64  # 8 * 8 * 1
LN2 = math.log(2.0)


def _key(seed):
  # 'rbg' keys: XLA's RngBitGenerator compiles in a fraction of the time threefry takes on
  # CPU (flax's truncated-normal initializers alone cost seconds per kernel shape under
  # threefry). The family only splits and consumes keys, so any key type exercises it.
  return jax.random.key(seed, impl="rbg")


@pytest.fixture(scope="module")
def data():
  cfg = vae.get_config("tiny")
  info, splits = genjax.data.load_dataset(cfg.data)
  return info, splits


@pytest.fixture(scope="module")
def batch(data):
  _, splits = data
  # 16 training examples: one of every class, then six more.
  label = splits["train"].arrays["label"]
  first = [int(np.flatnonzero(label == c)[0]) for c in range(10)]
  rest = [i for i in range(len(label)) if i not in first][: B - 10]
  out = splits["train"][np.array(first + rest)]
  assert set(out["label"].tolist()) == set(range(10))
  return out


def make_family(info, **model):
  cfg = vae.get_config("tiny")
  for k, v in model.items():
    setattr(cfg.model, k, v)
  return AutoencoderFamily(cfg, info)


@pytest.fixture(scope="module")
def built(data, batch):
  """`built(**model_overrides) -> (family, params)`; params are initialized once per network."""
  info, _ = data
  params_by_net = {}

  def get(**model):
    family = make_family(info, **model)
    net = (family.variational, family.conditional, family.cfg.arch, family.net.learn_variance)
    if net not in params_by_net:
      params, state = jax.jit(family.init)(_key(0), batch)
      assert state == {} if family.variational else set(state) == {"code_mean", "code_second_moment"}
      params_by_net[net] = params
    return family, params_by_net[net]

  return get


def _state(family):
  """The model_state at initialization: none for VAEs, the running code statistics for autoencoders."""
  if family.variational:
    return {}
  z = family.cfg.latent_dim
  return {"code_mean": jnp.zeros((z,)), "code_second_moment": jnp.eye(z)}


def _np_bernoulli_ll(x, logits):
  x, logits = np.asarray(x, np.float64), np.asarray(logits, np.float64)
  return (x * -np.logaddexp(0.0, -logits) + (1 - x) * -np.logaddexp(0.0, logits)).reshape(len(x), -1).sum(-1)


def _np_kl(mean, logvar):
  mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
  return 0.5 * np.sum(mean**2 + np.exp(logvar) - 1 - logvar, -1)


# --------------------------------------------------------------------------- init + loss


@pytest.mark.parametrize(
  "kind,arch,likelihood",
  [
    ("ae", "mlp", "bernoulli"),
    ("dae", "conv", "bernoulli"),
    ("vae", "mlp", "gaussian"),
    ("vae", "conv", "bernoulli"),
    ("cvae", "mlp", "bernoulli"),
  ],
)
def test_init_loss_and_grad(built, batch, kind, arch, likelihood):
  family, params = built(variant=kind, arch=arch, likelihood=likelihood)
  variational = kind in ("vae", "cvae")
  cond = jax.nn.one_hot(batch["label"], 10) if kind == "cvae" else None
  x = preprocess.binarize_threshold(batch["image"])
  # Shapes by abstract evaluation (no compile); the values are exercised through the loss.
  mean, logvar = jax.eval_shape(family.encode, params, x, cond)
  chex.assert_shape(mean, (B, Z))
  chex.assert_type(mean, jnp.float32)
  if variational:
    chex.assert_shape(logvar, (B, Z))
  else:
    assert logvar is None
  out = jax.eval_shape(family.decode, params, mean, cond)
  # A Gaussian decoder with learned variance also outputs a log-variance per pixel.
  chex.assert_shape(out, (B, 8, 8, 1 if likelihood == "bernoulli" else 2))
  chex.assert_type(out, jnp.float32)

  (loss, (metrics, state)), grads = jax.jit(jax.value_and_grad(family.loss, has_aux=True))(
    params, _state(family), batch, _key(1)
  )
  chex.assert_shape(loss, ())
  chex.assert_tree_all_finite(loss)
  chex.assert_trees_all_equal_shapes(state, _state(family))
  expected = {"elbo", "kl", "recon_nll", "bits_per_dim"} if variational else {"recon_nll"}
  assert set(metrics) == expected
  for v in metrics.values():
    chex.assert_shape(v, ())
    chex.assert_tree_all_finite(v)
  if variational:
    chex.assert_trees_all_close(loss, -metrics["elbo"], rtol=1e-6)  # beta = 1
    chex.assert_trees_all_close(metrics["elbo"], -metrics["recon_nll"] - metrics["kl"], rtol=1e-6)
    assert metrics["kl"] > 0
    # bits/dim of the (linear) mean ELBO; + log2(256) = 8 for the dequantized Gaussian.
    offset = 8.0 if likelihood == "gaussian" else 0.0
    chex.assert_trees_all_close(metrics["bits_per_dim"], -metrics["elbo"] / (D * LN2) + offset, rtol=1e-5)
  else:
    chex.assert_trees_all_close(loss, metrics["recon_nll"], rtol=1e-6)
  chex.assert_trees_all_equal_structs(grads, params)
  chex.assert_trees_all_equal_shapes(grads, params)
  chex.assert_tree_all_finite(grads)
  # Every parameter (encoder, decoder, learned variance) gets a gradient.
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)


# --------------------------------------------------------------------------- VAE objective


@pytest.mark.parametrize("kind", ["vae", "cvae"])
def test_vae_loss_matches_independent_elbo(built, batch, kind):
  family, params = built(variant=kind)
  key = _key(3)
  loss, (metrics, _) = family.loss(params, _state(family), batch, key)
  # loss: k_data (binarization), k_noise (unused by the VAE), k_z (the posterior draw).
  k_data, _, k_z = jax.random.split(key, 3)
  x = jax.random.bernoulli(k_data, jnp.asarray(batch["image"], jnp.float32) / 255.0).astype(jnp.float32)
  cond = jax.nn.one_hot(batch["label"], 10) if kind == "cvae" else None
  mean, logvar = family.encode(params, x, cond)
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, mean.shape)
  ll = _np_bernoulli_ll(x, family.decode(params, z, cond))
  kl = _np_kl(mean, logvar)
  elbo = ll - kl
  np.testing.assert_allclose(float(loss), -elbo.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["kl"]), kl.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["recon_nll"]), -ll.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["bits_per_dim"]), (-elbo / (D * LN2)).mean(), rtol=1e-5)


def test_beta_vae_loss_is_linear_in_beta(built, batch):
  family1, params = built(variant="vae")
  key = _key(4)
  losses_, kls = {}, {}
  for beta in (0.0, 1.0, 4.0):
    family = make_family(family1.info, variant="vae", beta=beta)  # same architecture, same params
    loss, (metrics, _) = family.loss(params, _state(family), batch, key)
    losses_[beta], kls[beta] = float(loss), float(metrics["kl"])
    # The metrics report the beta = 1 ELBO whatever beta is trained with.
    np.testing.assert_allclose(float(metrics["elbo"]), -metrics["recon_nll"] - metrics["kl"], rtol=1e-6)
  assert kls[0.0] == kls[1.0] == kls[4.0]
  kl = kls[1.0]
  np.testing.assert_allclose(losses_[4.0] - losses_[1.0], 3.0 * kl, rtol=1e-4)
  np.testing.assert_allclose(losses_[1.0] - losses_[0.0], kl, rtol=1e-4)
  # beta = 0 is the reconstruction term alone.
  family0 = make_family(family1.info, variant="vae", beta=0.0)
  _, (m0, _) = family0.loss(params, _state(family0), batch, key)
  np.testing.assert_allclose(losses_[0.0], float(m0["recon_nll"]), rtol=1e-6)


# --------------------------------------------------------------------------- evaluate + IWAE


def test_evaluate_bernoulli_vae_and_iwae(built, batch):
  family, params = built(variant="vae")
  key = _key(5)
  k = 8
  out = jax.jit(family.evaluate, static_argnames="iwae_samples")(
    params, _state(family), batch, key, iwae_samples=k
  )
  assert set(out) == {"mse", "elbo", "kl", "recon_nll", "bits_per_dim", "iwae", "iwae_bits_per_dim"}
  for v in out.values():
    chex.assert_shape(v, (B,))
    chex.assert_tree_all_finite(v)
  chex.assert_trees_all_close(out["elbo"], -out["recon_nll"] - out["kl"], rtol=1e-6)
  # Bernoulli (discrete) likelihood: bits/dim = -elbo / (D ln 2), no bin-width term.
  chex.assert_trees_all_close(out["bits_per_dim"], -out["elbo"] / (D * LN2), rtol=1e-6)
  chex.assert_trees_all_close(out["iwae_bits_per_dim"], -out["iwae"] / (D * LN2), rtol=1e-6)
  assert np.all((np.asarray(out["mse"]) >= 0) & (np.asarray(out["mse"]) <= 1))

  # Rebuild the K log weights log p(x|z_k) + log p(z_k) - log q(z_k|x) independently.
  k_data, k_z, k_iwae = jax.random.split(key, 3)
  x = jax.random.bernoulli(k_data, jnp.asarray(batch["image"], jnp.float32) / 255.0).astype(jnp.float32)
  mean, logvar = family.encode(params, x)
  kl = _np_kl(mean, logvar)
  np.testing.assert_allclose(np.asarray(out["kl"]), kl, rtol=1e-5)
  std = np.exp(0.5 * np.asarray(logvar, np.float64))
  eps = jnp.stack([jax.random.normal(kk, mean.shape) for kk in jax.random.split(k_iwae, k)])  # [K, B, Z]
  z = np.asarray(mean, np.float64) + std * np.asarray(eps, np.float64)
  logits = family.decode(params, jnp.asarray(z.reshape(k * B, Z), jnp.float32))
  ll = _np_bernoulli_ll(np.tile(np.asarray(x), (k, 1, 1, 1)), logits).reshape(k, B)
  log_pz = scipy.stats.norm.logpdf(z).sum(-1)
  log_qz = scipy.stats.norm.logpdf(z, np.asarray(mean, np.float64), std).sum(-1)
  log_w = ll + log_pz - log_qz  # [K, B]
  np.testing.assert_allclose(
    np.asarray(out["iwae"]), scipy.special.logsumexp(log_w, 0) - math.log(k), rtol=1e-5, atol=1e-4
  )
  # Jensen on the same samples: the IWAE bound is at least their average ELBO estimate.
  assert np.all(np.asarray(out["iwae"]) >= log_w.mean(0) - 1e-4)
  # ... and on average over the batch it is above the single-sample ELBO of evaluate.
  assert float(np.mean(out["iwae"])) >= float(np.mean(out["elbo"])) - 0.5

  # K = 1: the bound is the single log weight of the first split key.
  iw1 = family.iwae(params, x, None, mean, logvar, k_iwae, 1)
  chex.assert_shape(iw1, (B,))
  z1 = np.asarray(mean, np.float64) + std * np.asarray(
    jax.random.normal(jax.random.split(k_iwae, 1)[0], mean.shape), np.float64
  )
  ll1 = _np_bernoulli_ll(x, family.decode(params, jnp.asarray(z1, jnp.float32)))
  lw1 = ll1 + scipy.stats.norm.logpdf(z1).sum(-1) - scipy.stats.norm.logpdf(z1, np.asarray(mean), std).sum(-1)
  np.testing.assert_allclose(np.asarray(iw1), lw1, rtol=1e-5, atol=1e-4)


def test_evaluate_gaussian_vae_bits_include_dequantization(built, batch):
  family, params = built(variant="vae", likelihood="gaussian")
  key = _key(6)
  out_eval = family.evaluate(params, _state(family), batch, key)
  assert "iwae" not in out_eval
  # Continuous density on [0, 1): the discrete NLL bound adds D * log(256) nats = 8 bits/dim.
  chex.assert_trees_all_close(out_eval["bits_per_dim"], -out_eval["elbo"] / (D * LN2) + 8.0, rtol=1e-6)
  # The reconstruction term: dequantized data under N(decoder mean, e^logvar), the
  # log-variance output softly floored at log((1/256)^2 / 12).
  k_data, k_z, _ = jax.random.split(key, 3)
  image = np.asarray(batch["image"], np.float64)
  x = (image + np.asarray(jax.random.uniform(k_data, image.shape), np.float64)) / 256.0
  assert np.all((x >= 0) & (x < 1)) and np.all(np.floor(x * 256) == image)
  mean, logvar = family.encode(params, jnp.asarray(x, jnp.float32))
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, mean.shape)
  out = np.asarray(family.decode(params, z), np.float64)
  floor = math.log(1.0 / (12 * 256**2))
  lv = floor + np.logaddexp(0.0, out[..., 1:] - floor)
  ll = scipy.stats.norm.logpdf(x, out[..., :1], np.exp(0.5 * lv)).reshape(B, -1).sum(-1)
  np.testing.assert_allclose(np.asarray(out_eval["recon_nll"]), -ll, rtol=1e-4, atol=1e-3)
  assert np.all(lv >= floor)
  # Fixed variance: model.learn_variance=False uses model.gaussian_logvar and a C-channel decoder.
  fixed, fixed_params = built(variant="vae", likelihood="gaussian", learn_variance=False, gaussian_logvar=-2.0)
  out_fixed = fixed.evaluate(fixed_params, _state(fixed), batch, key)
  mean_f, logvar_f = fixed.encode(fixed_params, jnp.asarray(x, jnp.float32))
  z_f = mean_f + jnp.exp(0.5 * logvar_f) * jax.random.normal(k_z, mean_f.shape)
  loc_f = np.asarray(fixed.decode(fixed_params, z_f), np.float64)
  ll_fixed = scipy.stats.norm.logpdf(x, loc_f, math.exp(-1.0)).reshape(B, -1).sum(-1)
  np.testing.assert_allclose(np.asarray(out_fixed["recon_nll"]), -ll_fixed, rtol=1e-4, atol=1e-3)


def test_evaluate_discretized_gaussian_vae_is_an_exact_discrete_likelihood(built, batch):
  family, params = built(variant="vae", likelihood="discretized_gaussian")
  key = _key(9)
  out_eval = family.evaluate(params, _state(family), batch, key)
  # Discrete likelihood: no dequantization term in bits/dim.
  chex.assert_trees_all_close(out_eval["bits_per_dim"], -out_eval["elbo"] / (D * LN2), rtol=1e-6)
  _, k_z, _ = jax.random.split(key, 3)
  x = np.asarray(batch["image"], np.float64) / 255.0
  mean, logvar = family.encode(params, jnp.asarray(x, jnp.float32))
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, mean.shape)
  out = np.asarray(family.decode(params, z), np.float64)
  floor = 2 * math.log(0.1 / 255)
  sd = np.exp(0.5 * (floor + np.logaddexp(0.0, out[..., 1:] - floor)))
  lo = np.where(batch["image"] == 0, -np.inf, x - 0.5 / 255)
  hi = np.where(batch["image"] == 255, np.inf, x + 0.5 / 255)
  p = scipy.stats.norm.cdf(hi, out[..., :1], sd) - scipy.stats.norm.cdf(lo, out[..., :1], sd)
  np.testing.assert_allclose(np.asarray(out_eval["recon_nll"]), -np.log(p).reshape(B, -1).sum(-1), rtol=1e-3)


def test_evaluate_autoencoder(built, batch):
  family, params = built(variant="ae", binarization="threshold")
  out = family.evaluate(params, _state(family), batch, _key(7))
  assert set(out) == {"mse", "recon_nll"}
  x = preprocess.binarize_threshold(batch["image"])
  code, _ = family.encode(params, x)
  logits = family.decode(params, code)
  np.testing.assert_allclose(np.asarray(out["recon_nll"]), -_np_bernoulli_ll(x, logits), rtol=1e-5)
  mse = np.mean((scipy.special.expit(np.asarray(logits, np.float64)) - batch["image"] / 255.0) ** 2, (1, 2, 3))
  np.testing.assert_allclose(np.asarray(out["mse"]), mse, rtol=1e-4)
  assert family.best_metric == "recon_nll" and family.best_mode == "min"


# --------------------------------------------------------------------------- DAE


def test_corrupt_masking_and_gaussian_statistics():
  x = jnp.ones((100, 100), jnp.float32) * 0.5
  k1, k2 = _key(10), _key(11)
  n = x.size
  for level in (0.25, 0.6):
    m1 = np.asarray(corrupt(k1, x, "masking", level))
    m2 = np.asarray(corrupt(k2, x, "masking", level))
    chex.assert_type(m1, np.float32)
    assert set(np.unique(m1)) <= {0.0, 0.5}  # kept values unchanged
    frac = float(np.mean(m1 == 0))
    assert abs(frac - level) < 5 * math.sqrt(level * (1 - level) / n), (frac, level)
    assert not np.array_equal(m1, m2)  # the key decides the mask
  for level in (0.1, 0.3):
    noise = np.asarray(corrupt(k1, x, "gaussian", level), np.float64) - 0.5
    assert abs(noise.mean()) < 5 * level / math.sqrt(n)
    assert abs(noise.std() - level) < 5 * level / math.sqrt(2 * n)
    assert not np.array_equal(noise, np.asarray(corrupt(k2, x, "gaussian", level)) - 0.5)
  np.testing.assert_array_equal(np.asarray(corrupt(k1, x, "masking", 0.0)), np.asarray(x))
  with pytest.raises(ValueError, match="salt"):
    corrupt(k1, x, "salt", 0.1)


def test_dae_corruption_depends_on_key_and_ae_does_not(built, batch):
  # Threshold binarization: the data are deterministic, so only the corruption uses the key.
  ae, ae_params = built(variant="ae", binarization="threshold")
  dae, _ = built(variant="dae", binarization="threshold", corruption="masking")
  ka, kb = _key(20), _key(21)
  np.testing.assert_array_equal(
    np.asarray(ae.loss(ae_params, _state(ae), batch, ka)[0]),
    np.asarray(ae.loss(ae_params, _state(ae), batch, kb)[0]),
  )
  r_ae = ae.reconstruct(ae_params, batch, ka)
  chex.assert_shape(r_ae, (B, 8, 8, 1))
  chex.assert_type(r_ae, jnp.uint8)
  np.testing.assert_array_equal(np.asarray(r_ae), np.asarray(ae.reconstruct(ae_params, batch, kb)))
  # Same params (the dae and ae nets are identical): the dae sees corrupted inputs.
  la, lb = (
    float(dae.loss(ae_params, _state(dae), batch, ka)[0]),
    float(dae.loss(ae_params, _state(dae), batch, kb)[0]),
  )
  assert la != lb
  assert float(dae.loss(ae_params, _state(dae), batch, ka)[0]) == la  # same key, same corruption
  assert not np.array_equal(
    np.asarray(dae.reconstruct(ae_params, batch, ka)), np.asarray(dae.reconstruct(ae_params, batch, kb))
  )
  # The dae reconstruction target is the clean input: its loss equals the ae loss on the
  # corrupted input scored against the clean one.
  _, k_noise, _ = jax.random.split(ka, 3)
  x = preprocess.binarize_threshold(batch["image"])
  x_in = corrupt(k_noise, x, "masking", 0.3)
  code, _ = dae.encode(ae_params, x_in)
  np.testing.assert_allclose(la, -_np_bernoulli_ll(x, dae.decode(ae_params, code)).mean(), rtol=1e-5)


# --------------------------------------------------------------------------- CVAE + sampling


def test_cvae_label_changes_outputs(built, batch):
  # Batch size B throughout, so the eager ops reuse the shapes compiled by other tests.
  family, params = built(variant="cvae")
  z = jnp.asarray(np.random.default_rng(0).normal(size=(B, Z)), jnp.float32)
  out0 = family.decode(params, z, jax.nn.one_hot(jnp.zeros(B, jnp.int32), 10))
  out3 = family.decode(params, z, jax.nn.one_hot(jnp.full(B, 3, jnp.int32), 10))
  chex.assert_shape((out0, out3), (B, 8, 8, 1))
  assert float(jnp.max(jnp.abs(out0 - out3))) > 1e-3
  key = _key(30)
  s0 = family.sample(params, {}, key, B, labels=jnp.zeros(B, jnp.int32))
  s7 = family.sample(params, {}, key, B, labels=jnp.full(B, 7, jnp.int32))
  chex.assert_shape((s0, s7), (B, 8, 8, 1))
  chex.assert_type((s0, s7), jnp.uint8)
  assert not np.array_equal(np.asarray(s0), np.asarray(s7))
  # Default labels cycle through the classes.
  np.testing.assert_array_equal(
    np.asarray(family.generate(params, {}, key, B)),
    np.asarray(family.sample(params, {}, key, B, labels=jnp.arange(B) % 10)),
  )
  with pytest.raises(ValueError, match=r"labels.*\[0, 9\]"):
    family.generate(params, {}, key, 2, labels=jnp.array([0, 10]))
  # The encoder is conditional too.
  x = preprocess.binarize_threshold(batch["image"])
  m0, _ = family.encode(params, x, jax.nn.one_hot(jnp.zeros(B, jnp.int32), 10))
  m1, _ = family.encode(params, x, jax.nn.one_hot(jnp.ones(B, jnp.int32), 10))
  assert float(jnp.max(jnp.abs(m0 - m1))) > 1e-4


def test_vae_sample_is_decoder_mean_of_prior_draw(built, batch):
  family, params = built(variant="vae")
  key = _key(31)
  s = family.sample(params, {}, key, B, temperature=0.5)
  chex.assert_shape(s, (B, 8, 8, 1))
  chex.assert_type(s, jnp.uint8)
  z = 0.5 * jax.random.normal(key, (B, Z))
  expected = np.round(scipy.special.expit(np.asarray(family.decode(params, z), np.float64)) * 255)
  assert np.max(np.abs(np.asarray(s, np.int64) - expected)) <= 1
  assert not np.array_equal(np.asarray(s), np.asarray(family.sample(params, {}, key, B, temperature=1.0)))
  # generate() is sample() at sampling.temperature (1.0); the periodic picture of a VAE is samples.
  np.testing.assert_array_equal(
    np.asarray(family.generate(params, {}, key, B)), np.asarray(family.sample(params, {}, key, B, temperature=1.0))
  )
  figure = family.sample_grid(params, {}, key, batch, B)
  assert figure.kind == "images"
  np.testing.assert_array_equal(np.asarray(figure.data), np.asarray(family.generate(params, {}, key, B)))


def test_autoencoder_codes_have_running_gaussian_statistics(built, batch):
  """A plain autoencoder samples N(mean, cov) of its codes: the loss keeps running moments (momentum 0.99)."""
  family, params = built(variant="ae", binarization="threshold")
  state = _state(family)
  codes, _ = family.encode(params, preprocess.binarize_threshold(batch["image"]))
  codes = np.asarray(codes, np.float64)
  _, (_, new) = family.loss(params, state, batch, _key(33))
  m = CODE_MOMENTUM
  np.testing.assert_allclose(new["code_mean"], (1 - m) * codes.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
    new["code_second_moment"], m * np.eye(Z) + (1 - m) * codes.T @ codes / len(codes), rtol=1e-5, atol=1e-7
  )
  # Codes drawn from known statistics have that mean and covariance (Monte Carlo).
  mean = np.array([1.0, -2.0, 0.5, 0.0])
  cov = np.array([[2.0, 0.5, 0, 0], [0.5, 1.0, 0, 0], [0, 0, 0.25, 0], [0, 0, 0, 4.0]])
  stats = {"code_mean": jnp.asarray(mean), "code_second_moment": jnp.asarray(cov + np.outer(mean, mean))}
  z = np.asarray(family.sample_codes(stats, _key(34), 20000, 1.0), np.float64)
  np.testing.assert_allclose(z.mean(0), mean, atol=0.05)
  np.testing.assert_allclose(np.cov(z.T), cov, atol=0.1)
  images = family.generate(params, stats, _key(35), 4)
  chex.assert_shape(images, (4, 8, 8, 1))
  chex.assert_type(images, jnp.uint8)


def test_sample_grid_autoencoder_pairs_inputs_with_reconstructions(built, batch):
  family, params = built(variant="ae", binarization="threshold")
  key = _key(32)
  figure = family.sample_grid(params, _state(family), key, batch, 16)
  assert figure.kind == "pairs"
  pairs = np.asarray(figure.data)
  chex.assert_shape(pairs, (8, 2, 8, 8, 1))
  sub = {k: v[:8] for k, v in batch.items()}
  np.testing.assert_array_equal(pairs[:, 0], batch["image"][:8])
  np.testing.assert_array_equal(pairs[:, 1], np.asarray(family.reconstruct(params, sub, key)))


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
  "field,value",
  [
    ("variant", "gan"),
    ("arch", "resnet"),
    ("likelihood", "poisson"),
    ("binarization", "otsu"),
    ("corruption", "salt"),
  ],
)
def test_unknown_config_choice_raises(data, field, value):
  info, _ = data
  with pytest.raises(ValueError, match=re.escape(f"model.{field}={value!r}")):
    make_family(info, **{field: value})


@pytest.mark.parametrize("field,value", [("latent_dim", 0), ("beta", -1.0)])
def test_bad_numbers_raise(data, field, value):
  info, _ = data
  with pytest.raises(ValueError, match=re.escape(f"model.{field}")):
    make_family(info, **{field: value})


def test_cvae_needs_labels_and_images():
  unlabelled = genjax.data.DatasetInfo("fake", "image", (8, 8, 1), 0, 10, 10)
  with pytest.raises(ValueError, match="cvae.*fake"):
    make_family(unlabelled, variant="cvae")
  make_family(unlabelled, variant="vae")  # fine without labels
  vectors = genjax.data.DatasetInfo("points", "vector", (2,), 0, 10, 10)
  with pytest.raises(ValueError, match="points"):
    make_family(vectors, variant="vae")


# --------------------------------------------------------------------------- PCA


def _low_rank_data(rng, n, d=8, rank=3, noise=0.05):
  basis = rng.normal(size=(rank, d))
  return rng.normal(size=(n, rank)) @ basis + noise * rng.normal(size=(n, d)) + rng.normal(size=d)


def test_fit_pca_orthonormal_and_full_rank_exact():
  rng = np.random.default_rng(0)
  x = _low_rank_data(rng, 60)
  mean, comps = pca.fit_pca(x, 5)
  chex.assert_shape((mean, comps), ((8,), (5, 8)))
  np.testing.assert_allclose(comps @ comps.T, np.eye(5), atol=1e-10)
  np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
  _, full = pca.fit_pca(x, 8)
  np.testing.assert_allclose(full @ full.T, np.eye(8), atol=1e-10)
  np.testing.assert_allclose(pca.pca_reconstruct(x, mean, full), x, atol=1e-10)
  assert pca.pca_reconstruction_mse(x, x, 8) < 1e-20
  # Components are ordered by explained variance.
  var = np.var((x - mean) @ full.T, axis=0)
  assert np.all(np.diff(var) <= 1e-12)


def test_pca_matches_sklearn_and_error_decreases_with_k():
  x = _low_rank_data(np.random.default_rng(1), 110)
  train, test = x[:80], x[80:]
  errors = []
  for k in range(1, 9):
    mean, comps = pca.fit_pca(train, k)
    ref = PCA(n_components=k, svd_solver="full").fit(train)
    ref_recon = ref.inverse_transform(ref.transform(test))
    np.testing.assert_allclose(pca.pca_reconstruct(test, mean, comps), ref_recon, atol=1e-9)
    err = pca.pca_reconstruction_mse(train, test, k)
    np.testing.assert_allclose(err, np.mean((ref_recon - test) ** 2), rtol=1e-6, atol=1e-20)
    errors.append(err)
  # Nested subspaces: the held-out error never increases with K.
  assert all(a >= b - 1e-12 for a, b in zip(errors, errors[1:], strict=False)), errors
  # Rank-3 data plus small noise: 3 components explain almost everything.
  assert errors[2] < 0.01 * errors[0], errors
  assert errors[7] < 1e-20  # K = D reconstructs any point


@pytest.mark.parametrize("k", [0, -1, 9])
def test_fit_pca_bad_num_components(k):
  with pytest.raises(ValueError, match=f"got {k}"):
    pca.fit_pca(np.zeros((20, 8)), k)


def test_fit_pca_needs_2d():
  with pytest.raises(ValueError, match=re.escape("(20,)")):
    pca.fit_pca(np.zeros(20), 1)


# --------------------------------------------------------------------------- latent tools


def test_lerp():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
  t = jnp.linspace(0.0, 1.0, 5)[None, :, None]
  path = np.asarray(lerp(a[:, None], b[:, None], t))
  chex.assert_shape(path, (3, 5, 5))
  np.testing.assert_allclose(path[:, 0], a, atol=1e-6)
  np.testing.assert_allclose(path[:, -1], b, atol=1e-6)
  np.testing.assert_allclose(path[:, 2], (a + b) / 2, atol=1e-6)
  np.testing.assert_allclose(path[:, 1], 0.75 * a + 0.25 * b, atol=1e-6)


def test_slerp():
  # One call (one set of shapes to compile), four kinds of endpoint pairs per row:
  # orthogonal unit vectors, two random pairs with equal norms, and a parallel pair.
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  b = b / np.linalg.norm(b, axis=1, keepdims=True) * np.linalg.norm(a, axis=1, keepdims=True)
  a[0], b[0] = np.eye(6)[0], np.eye(6)[1]
  b[3] = 2 * a[3]
  a, b = a.astype(np.float32), b.astype(np.float32)
  steps = 7
  path = np.asarray(slerp(a[:, None], b[:, None], jnp.linspace(0.0, 1.0, steps)[None, :, None]))
  chex.assert_shape(path, (4, steps, 6))
  assert np.all(np.isfinite(path))
  np.testing.assert_allclose(path[:, 0], a, atol=1e-5)
  np.testing.assert_allclose(path[:, -1], b, atol=1e-5)
  # Equal-norm endpoints: the norm stays constant and the angle to a grows linearly in t.
  eq = path[:3]
  norms = np.linalg.norm(eq, axis=-1)
  np.testing.assert_allclose(norms, np.repeat(np.linalg.norm(a[:3], axis=-1)[:, None], steps, 1), rtol=1e-5)
  cos = np.sum(eq * a[:3, None], -1) / (norms * norms[:, :1])
  angles = np.arccos(np.clip(cos, -1, 1))
  np.testing.assert_allclose(angles, angles[:, -1:] * np.linspace(0, 1, steps)[None], atol=2e-3)
  # Orthogonal unit vectors: the midpoint is (a + b) / sqrt(2).
  np.testing.assert_allclose(path[0, steps // 2], (a[0] + b[0]) / math.sqrt(2), atol=1e-6)
  # Parallel endpoints fall back to the linear path (no 0/0).
  np.testing.assert_allclose(path[3], a[3] * np.linspace(1, 2, steps)[:, None], rtol=1e-4, atol=1e-5)


def test_encode_split_and_decode_images(built, data):
  family, params = built(variant="vae", binarization="threshold")
  _, splits = data
  source = genjax.data.ArraySource({k: v[:37] for k, v in splits["test"].arrays.items()})
  z, labels = family.encode_split(params, source, _key(40), batch_size=16)
  chex.assert_shape(z, (37, Z))
  np.testing.assert_array_equal(labels, source.arrays["label"])
  mean, _ = family.encode(params, preprocess.binarize_threshold(source.arrays["image"]))
  np.testing.assert_allclose(z, np.asarray(mean), rtol=1e-5, atol=1e-5)
  images = np.asarray(family.decode_images(params, jnp.asarray(z[:5])))
  chex.assert_shape(images, (5, 8, 8, 1))
  chex.assert_type(images, np.uint8)
  expected = np.round(scipy.special.expit(np.asarray(family.decode(params, jnp.asarray(z[:5])), np.float64)) * 255)
  assert np.max(np.abs(images.astype(np.int64) - expected)) <= 1


def test_argument_errors_name_the_bad_value():
  from genjax import checks

  with pytest.raises(ValueError, match=r"holds 1 NaN value\(s\), first at index \(0, 0\)"):
    checks.check_range("x", np.array([[np.nan, 0.5]]), 0.0, 1.0)
  with pytest.raises(ValueError, match="at least one sample"):
    losses.iwae_bound(np.zeros((0, 3)))
  cfg = vae.get_config("tiny")
  cfg.model.variant = "dae"
  cfg.model.corruption = "masking"
  cfg.model.corruption_level = 1.5
  info, _ = genjax.data.load_dataset(cfg.data)
  with pytest.raises(ValueError, match=re.escape("model.corruption_level=1.5 is not valid")):
    AutoencoderFamily(cfg, info)
  cfg.model.variant = "cvae"
  cfg.model.corruption_level = 0.5
  cvae = AutoencoderFamily(cfg, info)
  with pytest.raises(ValueError, match="pass labels"):
    cvae.decode_images(None, np.zeros((2, cfg.model.latent_dim)))


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_figures_every_kind(built, data, kind):
  family, params = built(variant=kind)
  state = _state(family)
  test = data[1]["test"]
  key = _key(5)
  figures = family.figures()
  assert set(figures) == {"samples", "reconstructions", "interpolation", "attribute"}  # latent_map: 2-D latents
  samples = figures["samples"](params, state, key, test, FigureOptions(num=12))
  chex.assert_shape(samples.data, (12, 8, 8, 1))
  recon = figures["reconstructions"](params, state, key, test, FigureOptions(num=12))
  assert recon.kind == "pairs"
  chex.assert_shape(recon.data, (6, 2, 8, 8, 1))
  # The inputs are a class-balanced choice: six different digits (the split is ordered by label).
  labels = {
    int(test[np.flatnonzero((test[np.arange(len(test))]["image"] == im).all((1, 2, 3)))[:1]]["label"][0])
    for im in np.asarray(recon.data[:, 0])
  }
  assert len(labels) == 6, labels
  interp = figures["interpolation"](params, state, key, test, FigureOptions(num=16, spherical=True))
  chex.assert_shape(interp.data, (16, 8, 8, 1))
  assert interp.ncol == 8
  attr = figures["attribute"](params, state, key, test, FigureOptions(num=16, label=3))
  chex.assert_shape(attr.data, (16, 8, 8, 1))
  # Scale 0 decodes the unchanged code; larger scales move away from it.
  assert not np.array_equal(np.asarray(attr.data[0]), np.asarray(attr.data[attr.ncol - 1]))
  with pytest.raises(ValueError, match="needs a 2-D latent"):
    family.figure_latent_map(params, state, key, test, FigureOptions(num=4))
