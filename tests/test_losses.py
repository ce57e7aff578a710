"""Tests for genjax.losses (pure array math) and genjax.checks, against mathematics:
closed forms vs Monte Carlo, pathwise gradients vs finite differences, log-densities
vs scipy / numpy, and the jit / vmap / grad contract."""

import inspect
import math
import re

import chex
import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from genjax import checks, losses


def _key(seed=0):
  # 'rbg' keys: XLA's RngBitGenerator compiles much faster than threefry on CPU, and every
  # random function here takes any typed key.
  return jax.random.key(seed, impl="rbg")


def _np_kl(m1, lv1, m2, lv2):
  """KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2 (float64)."""
  m1, lv1, m2, lv2 = (np.asarray(a, np.float64) for a in (m1, lv1, m2, lv2))
  s1, s2 = np.exp(0.5 * lv1), np.exp(0.5 * lv2)
  return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


# --------------------------------------------------------------------------- Gaussian KL


def test_gaussian_kl_matches_monte_carlo():
  # Three posteriors at once, one of them standard (KL 0), one far from the prior.
  mean = jnp.array([[0.0, 0.0, 0.0], [0.5, -1.2, 2.0], [-0.3, 0.1, 1.0]], jnp.float32)
  logvar = jnp.array([[0.0, 0.0, 0.0], [-1.0, 0.7, 0.0], [-2.5, 1.5, -0.4]], jnp.float32)
  num = 200_000
  z = losses.reparameterize(_key(1), mean, logvar, num_samples=num)  # [K, 3, Z]
  chex.assert_shape(z, (num, 3, 3))
  log_q = losses.gaussian_log_prob(z, jnp.broadcast_to(mean, z.shape), logvar, event_ndims=1)
  log_p = losses.standard_normal_log_prob(z, event_ndims=1)
  chex.assert_shape((log_q, log_p), (num, 3))
  diff = np.asarray(log_q - log_p, np.float64)  # [K, 3]
  mc = diff.mean(0)
  stderr = diff.std(0) / math.sqrt(num)
  kl = np.asarray(losses.gaussian_kl(mean, logvar, event_ndims=1))
  chex.assert_shape(kl, (3,))
  assert kl[0] == 0.0
  assert kl[1] > 1.0 and kl[2] > 1.0  # non-trivial cases
  np.testing.assert_allclose(kl, _np_kl(mean, logvar, 0.0, 0.0).sum(-1), rtol=1e-5)
  # MC estimate within 5 standard errors (the standard case has zero variance).
  assert np.all(np.abs(mc - kl) <= 5 * stderr + 1e-5), (mc, kl, stderr)


def test_gaussian_kl_zero_at_prior_and_nonnegative():
  chex.assert_trees_all_close(
    losses.gaussian_kl(jnp.zeros((4, 6)), jnp.zeros((4, 6)), event_ndims=1), jnp.zeros(4), atol=0.0, rtol=0.0
  )
  rng = np.random.default_rng(2)
  mean = jnp.asarray(2.0 * rng.normal(size=(256, 5)), jnp.float32)
  logvar = jnp.asarray(rng.uniform(-6.0, 4.0, size=(256, 5)), jnp.float32)
  kl = losses.gaussian_kl(mean, logvar, event_ndims=1)
  chex.assert_shape(kl, (256,))
  chex.assert_tree_all_finite(kl)
  assert np.all(np.asarray(kl) >= 0.0)
  # Rank-3 input: sums the last axis only.
  kl3 = losses.gaussian_kl(mean.reshape(4, 64, 5), logvar.reshape(4, 64, 5), event_ndims=1)
  chex.assert_trees_all_close(kl3, kl.reshape(4, 64), rtol=1e-6)


def test_gaussian_kl_between_two_gaussians_against_numpy():
  m1, lv1, m2, lv2 = jnp.asarray(np.random.default_rng(3).normal(size=(4, 7, 3)), jnp.float32)
  kl = lambda *a, **k: np.asarray(losses.gaussian_kl(*a, **k))
  # Elementwise (event_ndims=0) to a standard normal: the per-dimension terms of the event sum.
  std = kl(m1, lv1, event_ndims=0)
  chex.assert_shape(std, (7, 3))
  np.testing.assert_allclose(std, _np_kl(m1, lv1, 0.0, 0.0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std.sum(-1), kl(m1, lv1, event_ndims=1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std.sum(), kl(m1, lv1, event_ndims=2), rtol=1e-5, atol=1e-5)
  # General case against an independent float64 formula.
  np.testing.assert_allclose(
    kl(m1, lv1, mean2=m2, logvar2=lv2, event_ndims=0), _np_kl(m1, lv1, m2, lv2), rtol=1e-5, atol=1e-6
  )
  # Broadcasting a scalar second distribution.
  np.testing.assert_allclose(
    kl(m1, lv1, mean2=0.3, logvar2=-0.2, event_ndims=0), _np_kl(m1, lv1, 0.3, -0.2), rtol=1e-5, atol=1e-6
  )
  # KL(p || p) = 0 and asymmetry.
  np.testing.assert_allclose(kl(m1, lv1, mean2=m1, logvar2=lv1, event_ndims=1), np.zeros(7), atol=1e-7)
  assert not np.allclose(
    kl(m1, lv1, mean2=m2, logvar2=lv2, event_ndims=0), kl(m2, lv2, mean2=m1, logvar2=lv1, event_ndims=0)
  )
  # Written with expm1: a posterior close to the prior keeps its small KL (~lv^2 / 4 per dimension);
  # exp(lv) - 1 - lv in float32 would be ~25% off here.
  lv = jnp.full((3,), 1e-3, jnp.float32)
  np.testing.assert_allclose(kl(jnp.zeros(3), lv, event_ndims=1), _np_kl(0.0, lv, 0.0, 0.0).sum(), rtol=1e-3)


# --------------------------------------------------------------------------- reparameterization


def test_reparameterize_shapes_dtype_and_moments():
  mean = jnp.array([1.0, -2.0, 0.5], jnp.float32)
  logvar = jnp.array([0.0, math.log(4.0), math.log(0.25)], jnp.float32)
  z = losses.reparameterize(_key(4), mean, logvar)
  chex.assert_shape(z, (3,))
  chex.assert_type(z, jnp.float32)
  num = 200_000  # the shape the second-moment gradient test below also draws
  zs = np.asarray(losses.reparameterize(_key(5), mean, logvar, num_samples=num), np.float64)
  chex.assert_shape(zs, (num, 3))
  std = np.array([1.0, 2.0, 0.5])
  assert np.all(np.abs(zs.mean(0) - np.asarray(mean)) < 5 * std / math.sqrt(num))
  # var of the sample variance of a normal is 2 s^4 / (n - 1).
  assert np.all(np.abs(zs.var(0) - std**2) < 5 * std**2 * math.sqrt(2.0 / num))
  # A fixed key gives a fixed draw; a different key a different one.
  chex.assert_trees_all_close(losses.reparameterize(_key(4), mean, logvar), z, atol=0.0, rtol=0.0)
  assert not np.allclose(losses.reparameterize(_key(6), mean, logvar), z)


def _fixed_key_objective(f, num):
  key = _key(7)

  def objective(mean, logvar):
    z = losses.reparameterize(key, mean, logvar, num_samples=num)
    return jnp.mean(jnp.sum(f(z), axis=-1))

  return objective


def test_reparameterized_gradient_matches_finite_differences_float64():
  f = lambda z: jnp.sin(z) + jnp.square(z)
  with jax.enable_x64(True):
    mean = jnp.array([0.3, -0.7, 1.1], jnp.float64)
    logvar = jnp.array([-0.5, 0.2, 0.8], jnp.float64)
    objective = jax.jit(_fixed_key_objective(f, 64))
    g_mean, g_logvar = jax.jit(jax.grad(objective, argnums=(0, 1)))(mean, logvar)
    chex.assert_type((g_mean, g_logvar), jnp.float64)
    h = 1e-6
    eye = np.eye(3)
    fd_mean = [(objective(mean + h * e, logvar) - objective(mean - h * e, logvar)) / (2 * h) for e in eye]
    fd_logvar = [(objective(mean, logvar + h * e) - objective(mean, logvar - h * e)) / (2 * h) for e in eye]
    np.testing.assert_allclose(np.asarray(g_mean), np.asarray(fd_mean), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(g_logvar), np.asarray(fd_logvar), rtol=1e-6, atol=1e-8)
    # The pathwise derivative written out: z = m + s eps, dz/dm = 1, dz/dlogvar = s eps / 2.
    s = jnp.exp(0.5 * logvar)
    eps = (losses.reparameterize(_key(7), mean, logvar, num_samples=64) - mean) / s
    fprime = jnp.cos(mean + s * eps) + 2 * (mean + s * eps)
    np.testing.assert_allclose(np.asarray(g_mean), np.asarray(fprime.mean(0)), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(g_logvar), np.asarray((fprime * 0.5 * s * eps).mean(0)), rtol=1e-10)


def test_reparameterized_gradient_of_second_moment_matches_analytic():
  # E[z^2] = mean^2 + exp(logvar): d/dmean = 2 mean, d/dlogvar = exp(logvar).
  num = 200_000
  mean = jnp.array([0.5, -1.5, 0.0], jnp.float32)
  logvar = jnp.array([0.0, -1.0, 1.0], jnp.float32)
  objective = _fixed_key_objective(jnp.square, num)
  g_mean, g_logvar = jax.grad(objective, argnums=(0, 1))(mean, logvar)
  chex.assert_tree_all_finite((g_mean, g_logvar))
  m, s = np.asarray(mean, np.float64), np.exp(0.5 * np.asarray(logvar, np.float64))
  # Per-sample gradients: 2 z (sd 2 s) and z s eps (sd sqrt(s^2 m^2 + 2 s^4)).
  tol_mean = 5 * 2 * s / math.sqrt(num)
  tol_logvar = 5 * np.sqrt(s**2 * m**2 + 2 * s**4) / math.sqrt(num)
  assert np.all(np.abs(np.asarray(g_mean) - 2 * m) < tol_mean + 1e-5), (g_mean, 2 * m)
  assert np.all(np.abs(np.asarray(g_logvar) - s**2) < tol_logvar + 1e-5), (g_logvar, s**2)


# --------------------------------------------------------------------------- log-likelihoods


def test_bernoulli_log_prob_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (5, 3, 2)).astype(np.float32)
  x_bin = (rng.random((5, 3, 2)) < 0.5).astype(np.float32)
  x_soft = rng.random((5, 3, 2)).astype(np.float32)
  p = scipy.special.expit(logits.astype(np.float64))
  for x in (x_bin, x_soft):
    ref = x * np.log(p) + (1 - x) * np.log(1 - p)
    out = losses.bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits), event_ndims=2)
    chex.assert_shape(out, (5,))
    chex.assert_type(out, jnp.float32)
    np.testing.assert_allclose(np.asarray(out), ref.sum((1, 2)), rtol=1e-5, atol=1e-5)
    out1 = losses.bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits), event_ndims=1)
    chex.assert_shape(out1, (5, 3))
    np.testing.assert_allclose(np.asarray(out1), ref.sum(-1), rtol=1e-5, atol=1e-5)
    out3 = losses.bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits), event_ndims=3)
    np.testing.assert_allclose(float(out3), ref.sum(), rtol=1e-5)


def test_bernoulli_log_prob_stable_for_extreme_logits():
  x = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  logits = jnp.array([[100.0, 100.0, -100.0, -100.0]])
  per = losses.bernoulli_log_prob(x, logits, event_ndims=0)
  chex.assert_tree_all_finite(per)
  # log sigmoid(100) = -log1p(e^-100) ~ -3.7e-44; log(1 - sigmoid(100)) = -100 - log1p(e^-100).
  np.testing.assert_allclose(np.asarray(per), [[0.0, -100.0, -100.0, 0.0]], atol=1e-6)
  total = losses.bernoulli_log_prob(x, logits, event_ndims=1)
  np.testing.assert_allclose(np.asarray(total), [-200.0], rtol=1e-7)
  g = jax.grad(lambda lg: losses.bernoulli_log_prob(x, lg, event_ndims=1).sum())(logits)
  chex.assert_tree_all_finite(g)
  # d/dl [x l - softplus(l)] = x - sigmoid(l).
  np.testing.assert_allclose(np.asarray(g), np.asarray(x - jax.nn.sigmoid(logits)), atol=1e-7)


def test_gaussian_log_prob_matches_scipy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, 3, 2)).astype(np.float32)
  mean = rng.normal(size=(4, 3, 2)).astype(np.float32)
  logvar = rng.normal(size=(4, 3, 2)).astype(np.float32)
  ref = scipy.stats.norm.logpdf(x, mean, np.exp(0.5 * logvar.astype(np.float64)))
  out = losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(logvar), event_ndims=2)
  chex.assert_shape(out, (4,))
  np.testing.assert_allclose(np.asarray(out), ref.sum((1, 2)), rtol=1e-5, atol=1e-5)
  out1 = losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(logvar), event_ndims=1)
  chex.assert_shape(out1, (4, 3))
  np.testing.assert_allclose(np.asarray(out1), ref.sum(-1), rtol=1e-5, atol=1e-5)
  # A scalar log-variance is shared by every dimension; [B, 1, 1] per example.
  ref_scalar = scipy.stats.norm.logpdf(x, mean, math.exp(0.5 * -1.3)).sum((1, 2))
  np.testing.assert_allclose(
    np.asarray(losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), -1.3, event_ndims=2)),
    ref_scalar,
    rtol=1e-5,
    atol=1e-5,
  )
  per_example = jnp.full((4, 1, 1), -1.3)
  np.testing.assert_allclose(
    np.asarray(losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), per_example, event_ndims=2)),
    ref_scalar,
    rtol=1e-5,
    atol=1e-5,
  )
  # Elementwise values.
  np.testing.assert_allclose(
    np.asarray(losses.gaussian_log_prob(x, mean, logvar, event_ndims=0)), ref, rtol=1e-5, atol=1e-5
  )
  # A log-variance that would grow the shape of x is refused (it would change what is summed).
  with pytest.raises(ValueError, match=r"broadcast to x \(4, 3, 2\).*logvar \(5, 4, 3, 2\)"):
    losses.gaussian_log_prob(x, mean, np.zeros((5, 4, 3, 2)), event_ndims=2)


def test_standard_normal_log_prob_matches_scipy():
  z = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32) * 2
  out = losses.standard_normal_log_prob(jnp.asarray(z), event_ndims=1)
  chex.assert_shape(out, (6,))
  np.testing.assert_allclose(np.asarray(out), scipy.stats.norm.logpdf(z).sum(-1), rtol=1e-6, atol=1e-5)
  out0 = losses.standard_normal_log_prob(jnp.asarray(z), event_ndims=0)
  chex.assert_shape(out0, (6, 5))
  np.testing.assert_allclose(np.asarray(out0), scipy.stats.norm.logpdf(z), rtol=1e-6, atol=1e-5)
  # Equals the general Gaussian at mean 0, logvar 0.
  chex.assert_trees_all_close(
    out, losses.gaussian_log_prob(jnp.asarray(z), jnp.zeros_like(z), 0.0, event_ndims=1), rtol=1e-6
  )


def test_squared_error():
  x = jnp.arange(12.0).reshape(2, 3, 2)
  x_hat = x + jnp.array([1.0, 2.0])[:, None, None]
  out = losses.squared_error(x, x_hat, event_ndims=2)
  chex.assert_shape(out, (2,))
  chex.assert_trees_all_close(out, jnp.array([6.0, 24.0]))
  chex.assert_trees_all_close(losses.squared_error(x, x_hat, event_ndims=1), jnp.array([[2.0] * 3, [8.0] * 3]))
  chex.assert_trees_all_close(losses.squared_error(x, x_hat, event_ndims=0), jnp.square(x - x_hat))


def test_flow_nll_and_logit_transform_sum_their_event_axes():
  z = jnp.asarray(np.random.default_rng(5).normal(size=(3, 4)), jnp.float32)
  log_det = jnp.array([0.5, -1.0, 2.0])
  nll = losses.flow_nll(z, log_det, event_ndims=1)
  expect = -(scipy.stats.norm.logpdf(np.asarray(z, np.float64)).sum(-1) + np.asarray(log_det))
  np.testing.assert_allclose(np.asarray(nll), expect, rtol=1e-5)
  # A log-det per element with event_ndims=0; a scalar log-det broadcasts.
  chex.assert_shape(losses.flow_nll(z, jnp.zeros((3, 4)), event_ndims=0), (3, 4))
  chex.assert_shape(losses.flow_nll(z, 0.0, event_ndims=2), ())
  with pytest.raises(ValueError, match=r"log_det \(3, 4\)"):
    losses.flow_nll(z, jnp.zeros((3, 4)), event_ndims=1)
  x = jnp.full((2, 3, 5), 0.5)
  y, ld = losses.logit_transform(x, 0.05, event_ndims=2)
  chex.assert_shape((y, ld), ((2, 3, 5), (2,)))
  np.testing.assert_allclose(np.asarray(ld), 15 * math.log(3.6), rtol=1e-6)  # dy/dx = 0.9 / 0.25 per value
  np.testing.assert_allclose(
    np.asarray(losses.logit_transform(x, 0.05, event_ndims=0)[1]), math.log(3.6), rtol=1e-6
  )


# --------------------------------------------------------------------------- bounds


def test_elbo_with_beta():
  ll = jnp.array([-10.0, -20.0, -5.0])
  kl = jnp.array([1.0, 3.0, 0.5])
  chex.assert_trees_all_close(losses.elbo(ll, kl), jnp.array([-11.0, -23.0, -5.5]))
  chex.assert_trees_all_close(losses.elbo(ll, kl, beta=4.0), jnp.array([-14.0, -32.0, -7.0]))
  chex.assert_trees_all_close(losses.elbo(ll, kl, beta=0.0), ll)
  # Linear in beta.
  chex.assert_trees_all_close(losses.elbo(ll, kl, 2.5) - losses.elbo(ll, kl, 1.0), -1.5 * kl)


def test_iwae_bound_properties():
  rng = np.random.default_rng(3)
  lw = rng.normal(-50.0, 4.0, size=(16, 5)).astype(np.float32)
  out = losses.iwae_bound(jnp.asarray(lw))
  chex.assert_shape(out, (5,))
  np.testing.assert_allclose(
    np.asarray(out), scipy.special.logsumexp(lw.astype(np.float64), 0) - math.log(16), rtol=1e-6
  )
  # Jensen: log mean exp >= mean log, strictly for non-constant weights.
  assert np.all(np.asarray(out) > lw.mean(0))
  # K = 1 is the single log weight.
  chex.assert_trees_all_close(losses.iwae_bound(jnp.asarray(lw[:1])), jnp.asarray(lw[0]), rtol=1e-7)
  # Equal weights give that weight (also far from 0: no overflow/underflow).
  c = np.array([-3.0, -1000.0, 800.0, 0.0, 12.5], np.float32)
  np.testing.assert_allclose(
    np.asarray(losses.iwae_bound(jnp.asarray(np.tile(c, (16, 1))))), c, rtol=1e-6, atol=1e-6
  )
  # K on another axis.
  chex.assert_trees_all_close(losses.iwae_bound(jnp.asarray(lw.T), axis=1), out, rtol=1e-6)
  # Monotone in K in expectation; for nested prefixes at least it never exceeds the max weight.
  assert np.all(np.asarray(out) <= lw.max(0))


def test_bits_per_dim_hand_computed():
  d = 64
  np.testing.assert_allclose(np.asarray(losses.bits_per_dim(jnp.array(d * math.log(2.0)), d)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(
    np.asarray(losses.bits_per_dim(jnp.array([0.0, d * math.log(2.0)]), d)), [0.0, 1.0], atol=1e-6
  )
  # The uniform density on [0, 1]^D has nll 0; with 8-bit bins it is exactly 8 bits/dim.
  np.testing.assert_allclose(
    np.asarray(losses.bits_per_dim(jnp.zeros(3), d, bin_width=1 / 256)), [8.0] * 3, rtol=1e-6
  )
  # ... on [-1, 1]^D the uniform density is 2^-D: nll = D ln 2, and bins are 2/256 wide.
  np.testing.assert_allclose(
    np.asarray(losses.bits_per_dim(jnp.array(d * math.log(2.0)), d, bin_width=2 / 256)), 8.0, rtol=1e-6
  )
  # Linear in nll: nll / (D ln 2) + log2(1/w).
  nll = jnp.array([12.5, 300.0])
  np.testing.assert_allclose(
    np.asarray(losses.bits_per_dim(nll, 10, bin_width=0.25)),
    np.asarray(nll) / (10 * math.log(2.0)) + 2.0,
    rtol=1e-6,
  )


@pytest.mark.parametrize("num_dims", [0, -3])
def test_bits_per_dim_bad_num_dims(num_dims):
  with pytest.raises(ValueError, match=f"num_dims.*{num_dims}"):
    losses.bits_per_dim(jnp.zeros(2), num_dims)


@pytest.mark.parametrize("bin_width", [0.0, -0.5])
def test_bits_per_dim_bad_bin_width(bin_width):
  with pytest.raises(ValueError, match=re.escape(str(bin_width))):
    losses.bits_per_dim(jnp.zeros(2), 4, bin_width=bin_width)


# jit / vmap / grad for every public function: tests/test_vmap.py.


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
  "name,call",
  [
    ("gaussian_kl", lambda a, b: losses.gaussian_kl(a, b, event_ndims=1)),
    ("gaussian_kl_second", lambda a, b: losses.gaussian_kl(a, a, mean2=b, event_ndims=1)),
    ("bernoulli_log_prob", lambda a, b: losses.bernoulli_log_prob(jnp.zeros_like(a), b, event_ndims=1)),
    ("gaussian_log_prob", lambda a, b: losses.gaussian_log_prob(a, b, 0.0, event_ndims=1)),
    ("discretized_gaussian_log_prob", lambda a, b: losses.discretized_gaussian_log_prob(a, b, 0.0, event_ndims=1)),
    ("elbo", lambda a, b: losses.elbo(a, b)),
    ("squared_error", lambda a, b: losses.squared_error(a, b, event_ndims=1)),
    ("reparameterize", lambda a, b: losses.reparameterize(_key(0), a, b)),
  ],
)
def test_mismatched_shapes_name_both_shapes(name, call):
  a, b = jnp.zeros((3, 4)), jnp.zeros((3, 5))
  with pytest.raises(ValueError) as e:
    call(a, b)
  msg = str(e.value)
  assert "(3, 4)" in msg and "(3, 5)" in msg, msg
  # Also inside jit (shape checks are static).
  with pytest.raises(ValueError, match=re.escape("(3, 5)")):
    jax.jit(call)(a, b)


def test_event_ndims_is_required_and_checked():
  """Every public function with `event_ndims` takes it keyword-only with no default, and a
  negative value or one above the input's rank is a one-line ValueError naming both."""
  names = [n for n, f in vars(losses).items() if callable(f) and not n.startswith("_") and _has_event_ndims(f)]
  assert {"gaussian_kl", "gaussian_log_prob", "discretized_gaussian_log_prob", "flow_nll"} <= set(names), names
  for name in names:
    param = inspect.signature(getattr(losses, name)).parameters["event_ndims"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is inspect.Parameter.empty, name
  with pytest.raises(TypeError, match="event_ndims"):
    losses.bernoulli_log_prob(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  for bad in (-1, 3):
    with pytest.raises(ValueError, match=rf"^event_ndims={bad} must lie in \[0, 2\], the rank of x \(2, 3\)$"):
      losses.bernoulli_log_prob(jnp.zeros((2, 3)), jnp.zeros((2, 3)), event_ndims=bad)
  with pytest.raises(ValueError, match=r"event_ndims=1 must lie in \[0, 0\], the rank of mean \(\)"):
    losses.gaussian_kl(jnp.float32(0.0), jnp.float32(0.0), event_ndims=1)
  with pytest.raises(ValueError, match="must be an int"):
    losses.standard_normal_log_prob(jnp.zeros(3), event_ndims=None)
  with pytest.raises(ValueError, match="must be an int"):
    losses.squared_error(jnp.zeros(3), jnp.zeros(3), event_ndims=True)


def _has_event_ndims(f) -> bool:
  try:
    return "event_ndims" in inspect.signature(f).parameters
  except (TypeError, ValueError):
    return False


@pytest.mark.parametrize("bad", [1.5, -0.25])
def test_bernoulli_targets_out_of_range_raise(bad):
  x = np.full((2, 3), 0.5, np.float32)
  x[1, 2] = bad
  with pytest.raises(ValueError, match="bernoulli targets") as e:
    losses.bernoulli_log_prob(jnp.asarray(x), jnp.zeros((2, 3)), event_ndims=1)
  assert f"{bad:.6g}" in str(e.value)
  # The bounds themselves are fine.
  losses.bernoulli_log_prob(jnp.array([[0.0, 1.0]]), jnp.zeros((1, 2)), event_ndims=1)


def test_check_finite():
  a = np.zeros((3, 4), np.float32)
  checks.check_finite("a", a)  # no error
  checks.check_finite("ints", np.arange(3))  # not floating: nothing to check
  a[1, 2] = np.nan
  a[2, 0] = np.inf
  with pytest.raises(ValueError) as e:
    checks.check_finite("activations", a)
  msg = str(e.value)
  assert "activations" in msg and "2 non-finite" in msg and "(1, 2)" in msg, msg
  with pytest.raises(ValueError, match=re.escape("1 non-finite value(s) (NaN or inf), first at index (0,)")):
    checks.check_finite("x", jnp.array([np.nan, 1.0]))
  # Skipped under tracing (the train loop checks the loss instead).
  out = jax.jit(lambda x: (checks.check_finite("x", x), x * 2)[1])(jnp.array([np.nan]))
  assert np.isnan(np.asarray(out)).all()


def test_check_same_shape_and_min_rank():
  checks.check_same_shape(a=np.zeros(3), b=np.ones(3), c=jnp.zeros(3))
  with pytest.raises(ValueError, match=r"a \(3,\), b \(1, 3\)"):
    checks.check_same_shape(a=np.zeros(3), b=np.ones((1, 3)))
  checks.check_min_rank("m", np.zeros((2, 2)), 2)
  with pytest.raises(ValueError, match=r"m must have at least 3 dimension\(s\) \(why\), got shape \(2, 2\)"):
    checks.check_min_rank("m", np.zeros((2, 2)), 3, "why")


# --------------------------------------------------------------------------- discretized Gaussian


def test_discretized_gaussian_sums_to_one_and_matches_bin_integrals():
  bins = np.arange(256) / 255.0
  rng = np.random.default_rng(0)
  params = np.array([(0.3, -4.0), (-0.5, 0.0), (1.4, -9.0), (0.5, -16.0), (0.0, 3.0), (0.5, 40.0)], np.float32)
  x = jnp.broadcast_to(jnp.asarray(bins, jnp.float32), (len(params), 256))
  mean, logvar = (jnp.broadcast_to(jnp.asarray(params[:, i : i + 1]), x.shape) for i in (0, 1))
  lp = jax.jit(lambda m, v: losses.discretized_gaussian_log_prob(x, m, v, event_ndims=0))(mean, logvar)
  lp = np.asarray(lp, np.float64)
  assert np.all(np.isfinite(lp))
  np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=2e-6)
  edges = np.concatenate([[-np.inf], (bins[:-1] + bins[1:]) / 2, [np.inf]])
  for row, (m, v) in zip(lp, params, strict=True):
    expected = np.diff(scipy.stats.norm.cdf(edges, m, math.exp(0.5 * v)))
    keep = expected > 1e-30
    np.testing.assert_allclose(row[keep], np.log(expected[keep]), rtol=1e-3, atol=1e-4)
  # Batched shape contract, a per-example log-variance, gradients.
  x = jnp.asarray(rng.integers(0, 256, (4, 3, 3, 1)) / 255.0, jnp.float32)
  mean = jnp.asarray(rng.uniform(0, 1, x.shape), jnp.float32)
  lv = jnp.asarray(rng.uniform(-8, 0, x.shape), jnp.float32)
  f = lambda m, v: losses.discretized_gaussian_log_prob(x, m, v, event_ndims=3)
  per_example = jax.jit(f)(mean, lv[:, :1, :1])
  chex.assert_shape(per_example, (4,))
  g = jax.jit(jax.grad(lambda m, v: f(m, v).sum(), argnums=(0, 1)))(mean, lv)
  chex.assert_tree_all_finite(g)
  # Targets must be bin centres (concrete values are checked), in [0, 1].
  with pytest.raises(ValueError, match=r"bin centres k / 255, got 0.5 at index \(1,\)"):
    losses.discretized_gaussian_log_prob(jnp.array([0.0, 0.5]), jnp.zeros(2), 0.0, event_ndims=1)
  with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\]"):
    losses.discretized_gaussian_log_prob(jnp.array([0.0, 1.2]), jnp.zeros(2), 0.0, event_ndims=1)


def _mp_discretized_log_prob(k, mean, logvar, num_bins=256):
  """log P(bin k) and its derivatives in mean and logvar, with 60 digits (mpmath).

  Exact bin edges (k +- 1/2) / (num_bins - 1), the edge bins open to -inf / +inf, and
  the float32 inputs taken at their exact values.
  """
  mp.mp.dps = 60
  w = mp.mpf(1) / (num_bins - 1)
  s = mp.exp(mp.mpf(float(logvar)) / 2)
  m = mp.mpf(float(mean))
  a = -mp.inf if k == 0 else ((k - mp.mpf(0.5)) * w - m) / s
  b = mp.inf if k == num_bins - 1 else ((k + mp.mpf(0.5)) * w - m) / s
  # Phi(b) - Phi(a), taken on the side of the mode so that nothing cancels.
  p = mp.ncdf(-a) - mp.ncdf(-b) if a + b > 0 else mp.ncdf(b) - mp.ncdf(a)
  pdf = lambda z: mp.mpf(0) if mp.isinf(z) else mp.npdf(z)
  zpdf = lambda z: mp.mpf(0) if mp.isinf(z) else z * mp.npdf(z)
  d_mean = (pdf(a) - pdf(b)) / (p * s)
  d_logvar = -(zpdf(b) - zpdf(a)) / (2 * p)
  return float(mp.log(p)), float(d_mean), float(d_logvar)


def _extreme_cases():
  """(k, mean, logvar) float32: log-variances -30..60; interior and edge bins; means on and
  near the bin edges (in units of sigma), at the centre, inside, and far outside [0, 1]."""
  rng = np.random.default_rng(7)
  rows = []
  for logvar in np.linspace(-30.0, 60.0, 19):
    sd = math.exp(logvar / 2)
    for k in (0, 1, 127, 254, 255):
      lo, hi = (k - 0.5) / 255, (k + 0.5) / 255
      means = [k / 255, k / 255 + 0.3 * sd, -0.3, 1.4, -40.0, *rng.uniform(-0.2, 1.2, 2)]
      means += [e + d * sd for e in (lo, hi) for d in (-4.0, -0.5, 0.0, 0.1, 2.0)]
      rows += [(k, m, logvar) for m in means]
  # Across the switch between the narrow-bin series and the tail formula (h, h |c| = 1/4).
  for logvar in (-10.0, -9.6, -7.0, -5.7):
    sd = math.exp(logvar / 2)
    rows += [(128, 128 / 255 + z * sd, logvar) for z in (-8.0, -3.0, -1.0, 0.2, 2.5, 8.0)]
  k, m, lv = (np.array(c) for c in zip(*rows, strict=True))
  return k, m.astype(np.float32), lv.astype(np.float32)


def test_discretized_gaussian_is_accurate_against_mpmath_for_any_variance():
  """1e-6 relative against 60-digit mpmath for log-variances -30..60 (sigma from 3e-7 to 1e13
  times the [0, 1] range), interior and edge bins, means on edges, inside and far outside.

  Log-probabilities near 0 (a bin holding all but a sliver of the mass) get 1e-8 nats
  absolute instead: the sliver is a Gaussian tail whose relative value moves by more than
  1e-6 when the float32 inputs move by one rounding. The previous implementation (a 1e-12
  floor on 1 - Phi(lo) / Phi(hi)) fails 873 of these 1639 cases: off by up to 21% at
  logvar -30, -inf from logvar 20. Gradients (mean, logvar) to 3e-5 of their scale and finite everywhere.
  """
  k, mean, logvar = _extreme_cases()
  x = (k / 255).astype(np.float32)
  f = lambda m, v: losses.discretized_gaussian_log_prob(x, m, v, event_ndims=0)
  got = np.asarray(jax.jit(f)(mean, logvar), np.float64)
  g_mean, g_logvar = (
    np.asarray(g, np.float64) for g in jax.jit(jax.grad(lambda m, v: f(m, v).sum(), (0, 1)))(mean, logvar)
  )
  ref = np.array([_mp_discretized_log_prob(*row) for row in zip(k.tolist(), mean, logvar, strict=True)])
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(g_mean)) and np.all(np.isfinite(g_logvar))
  assert ref[:, 0].min() < -1e12 and ref[:, 0].max() > -1e-30  # both extremes are exercised
  np.testing.assert_allclose(got, ref[:, 0], rtol=1e-6, atol=1e-8)
  inv_std = np.exp(-0.5 * logvar.astype(np.float64))
  np.testing.assert_array_less(np.abs(g_mean - ref[:, 1]), 3e-5 * (np.abs(ref[:, 1]) + inv_std))
  np.testing.assert_array_less(np.abs(g_logvar - ref[:, 2]), 3e-5 * (np.abs(ref[:, 2]) + 1.0))


def test_discretized_decoder_edge_bins_on_the_symmetric_scale():
  """The DDPM decoder's L_0 on [-1, 1] (bins 2/255 wide; x = -1 and x = 1 open to -inf / +inf)."""
  from genjax import diffusion

  x0 = jnp.array([-1.0, -1.0, 1.0, 1.0, 3 / 255, 3 / 255], jnp.float32)
  mean = jnp.array([-1.0, -3.0, 1.0, 1.0 + 1e-6, 3 / 255, 0.5], jnp.float32)
  logvars = np.array([-25.0, -9.0, 0.0, 50.0], np.float32)
  nll = jax.jit(jax.vmap(lambda v: diffusion.discretized_decoder_nll(x0, mean, v, event_ndims=0)))(logvars)
  # The same bins on [0, 1] (k from the [-1, 1] value): halve the mean, quarter the variance.
  ks = np.rint((np.asarray(x0, np.float64) + 1) * 127.5).astype(int)
  m01 = (np.asarray(mean) + np.float32(1)) / np.float32(2)
  for row, v in zip(np.asarray(nll, np.float64), logvars, strict=True):
    v01 = v - np.float32(2 * math.log(2))
    ref = [-_mp_discretized_log_prob(kk, mm, v01)[0] for kk, mm in zip(ks, m01, strict=True)]
    np.testing.assert_allclose(row, ref, rtol=1e-6, atol=1e-8)
