"""The diffusion process against closed forms, Bayes' rule, brute force and Monte Carlo."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from genjax import diffusion


def _np(schedule):
  return {k: np.asarray(v, np.float64) for k, v in schedule._asdict().items()}


def test_linear_schedule_is_ho_et_al_and_constants_match_closed_forms():
  s = diffusion.get_schedule("linear", 1000)
  c = _np(s)
  assert s.betas.dtype == jnp.float32 and s.num_timesteps == 1000
  np.testing.assert_allclose(c["betas"][[0, -1]], [1e-4, 0.02], rtol=1e-6)
  np.testing.assert_allclose(np.diff(c["betas"]), (0.02 - 1e-4) / 999, rtol=1e-3)
  betas = np.linspace(1e-4, 0.02, 1000)
  abar = np.array([np.prod(1 - betas[: t + 1]) for t in range(1000)])  # brute-force products
  np.testing.assert_allclose(c["alphas_cumprod"], abar, rtol=1e-5)
  np.testing.assert_allclose(c["alphas_cumprod_prev"], np.append(1.0, abar[:-1]), rtol=1e-5)
  np.testing.assert_allclose(c["sqrt_recip_alphas_cumprod"] ** 2 * abar, 1.0, rtol=1e-5)
  np.testing.assert_allclose(c["sqrt_recipm1_alphas_cumprod"] ** 2, 1 / abar - 1, rtol=1e-4)
  post = betas[1:] * (1 - abar[:-1]) / (1 - abar[1:])
  np.testing.assert_allclose(c["posterior_variance"][1:], post, rtol=1e-5)
  assert c["posterior_variance"][0] == 0.0
  np.testing.assert_allclose(c["posterior_log_variance_clipped"], np.log(np.append(post[0], post)), rtol=1e-5)
  # abar_T is tiny: the prior term of the bound is negligible for T = 1000.
  assert abar[-1] < 5e-5
  # Shorter chains are rescaled (Nichol & Dhariwal) so that abar_T stays small.
  short = np.asarray(diffusion.get_schedule("linear", 100).betas)
  np.testing.assert_allclose(short[[0, -1]], [1e-3, 0.2], rtol=1e-6)


def test_cosine_schedule_matches_its_alpha_bar():
  t_max, s_off = 50, 0.008
  c = _np(diffusion.get_schedule("cosine", t_max))
  f = np.cos((np.arange(t_max + 1) / t_max + s_off) / (1 + s_off) * np.pi / 2) ** 2
  target = f[1:] / f[0]
  unclipped = c["betas"] < 0.999
  np.testing.assert_allclose(c["alphas_cumprod"][unclipped], target[unclipped], rtol=1e-5)
  assert np.all(np.diff(c["betas"]) > 0) and c["betas"][-1] == pytest.approx(0.999)


def test_bad_schedules_are_rejected():
  with pytest.raises(ValueError, match="num_timesteps"):
    diffusion.linear_betas(0)
  with pytest.raises(ValueError, match=r"\(0, 1\)"):
    diffusion.make_schedule(np.array([0.1, 1.0]))
  with pytest.raises(ValueError, match="unknown noise schedule"):
    diffusion.get_schedule("quadratic", 10)


def test_q_sample_matches_iterating_the_forward_steps():
  """q(x_t | x_0) against running q(x_s | x_{s-1}) t+1 times, over 40,000 draws."""
  s = diffusion.get_schedule("linear", 50)
  betas = np.asarray(s.betas, np.float64)
  x0 = np.array([0.8, -0.5, 0.0])
  n, t = 40000, 29
  rng = np.random.default_rng(0)
  x = np.broadcast_to(x0, (n, 3)).copy()
  for step in range(t + 1):
    x = np.sqrt(1 - betas[step]) * x + np.sqrt(betas[step]) * rng.standard_normal(x.shape)
  xt, noise = diffusion.q_sample(
    s, jax.random.key(0), jnp.broadcast_to(jnp.asarray(x0, jnp.float32), (n, 3)), jnp.full((n,), t)
  )
  xt = np.asarray(xt)
  abar = float(s.alphas_cumprod[t])
  se_mean = math.sqrt((1 - abar) / n)
  for sample in (x, xt):
    np.testing.assert_allclose(sample.mean(0), math.sqrt(abar) * x0, atol=5 * se_mean)
    np.testing.assert_allclose(sample.var(0), 1 - abar, rtol=0.03)
  mean, var, logvar = diffusion.q_mean_variance(s, jnp.asarray(x0)[None], jnp.array([t]))
  np.testing.assert_allclose(np.asarray(mean)[0], math.sqrt(abar) * x0, rtol=1e-5)
  np.testing.assert_allclose(float(var.squeeze()), 1 - abar, rtol=1e-5)
  np.testing.assert_allclose(float(logvar.squeeze()), math.log(1 - abar), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(xt), np.sqrt(abar) * x0 + np.sqrt(1 - abar) * np.asarray(noise), atol=1e-5)


@pytest.mark.parametrize("t", [1, 7, 19])
def test_posterior_is_bayes_rule(t):
  """q(x_{t-1} | x_t, x_0) from the prior q(x_{t-1} | x_0) and the likelihood q(x_t | x_{t-1})."""
  s = diffusion.get_schedule("linear", 20)
  c = _np(s)
  x0, xt = np.array([[0.3, -0.9]]), np.array([[1.2, 0.1]])
  prior_mean, prior_var = np.sqrt(c["alphas_cumprod"][t - 1]) * x0, 1 - c["alphas_cumprod"][t - 1]
  lik_scale, lik_var = np.sqrt(c["alphas"][t]), c["betas"][t]
  var = 1.0 / (1.0 / prior_var + lik_scale**2 / lik_var)
  mean = var * (prior_mean / prior_var + lik_scale * xt / lik_var)
  m, v, logv = diffusion.q_posterior_mean_variance(
    s, jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32), jnp.array([t])
  )
  np.testing.assert_allclose(np.asarray(m), mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(v.squeeze()), var, rtol=1e-4)
  np.testing.assert_allclose(float(logv.squeeze()), math.log(var), rtol=1e-4)
  # The posterior at t = 0 is the point mass at x_0: the mean is x_0 exactly.
  m0, _, _ = diffusion.q_posterior_mean_variance(
    s, jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32), jnp.array([0])
  )
  np.testing.assert_allclose(np.asarray(m0), x0, rtol=1e-6)


def test_eps_and_x0_predictions_invert_each_other():
  s = diffusion.get_schedule("linear", 100)
  x0 = jax.random.uniform(jax.random.key(0), (4, 5), minval=-1, maxval=1)
  t = jnp.array([0, 10, 50, 99])
  xt, noise = diffusion.q_sample(s, jax.random.key(1), x0, t)
  np.testing.assert_allclose(diffusion.predict_x0_from_eps(s, xt, t, noise), x0, atol=2e-4)
  np.testing.assert_allclose(diffusion.predict_eps_from_x0(s, xt, t, x0), noise, atol=2e-3)


def _point_mass_eps(s, c):
  """The exact epsilon of data that is always `c`: (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t)."""

  def eps_fn(x, t):
    return (x - s.sqrt_alphas_cumprod[t][:, None] * c) / s.sqrt_one_minus_alphas_cumprod[t][:, None]

  return eps_fn


def test_bound_terms_for_a_point_mass_match_independent_computation():
  """Exact epsilon of a point mass: KL terms vanish (fixed small) or have closed forms (fixed large)."""
  s = diffusion.get_schedule("linear", 40)
  c = _np(s)
  values = np.array([0, 37, 128, 255])
  x0_np = values / 127.5 - 1.0
  x0 = jnp.asarray(x0_np, jnp.float32)[None]  # [1, 4]
  eps_fn = _point_mass_eps(s, x0)
  # L_T: KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)), summed over the 4 dims.
  ab = c["alphas_cumprod"][-1]
  prior = np.sum(0.5 * (-np.log(1 - ab) + (1 - ab) + ab * x0_np**2 - 1))
  # L_0: the posterior mean at t = 0 is x0 itself; the decoder's variance is beta~_1.
  std = math.sqrt(c["posterior_variance"][1])
  lo = np.where(values == 0, -np.inf, (x0_np - 1 / 255 - x0_np) / std)
  hi = np.where(values == 255, np.inf, (x0_np + 1 / 255 - x0_np) / std)
  decoder = -np.sum(np.log(norm.cdf(hi) - norm.cdf(lo)))
  small = diffusion.full_bound(s, eps_fn, jax.random.key(0), x0, "fixed_small", clip_denoised=False)
  np.testing.assert_allclose(float(small["prior"][0]), prior, atol=1e-6)  # ~5e-6 nats: float32 cancellation
  np.testing.assert_allclose(float(small["decoder"][0]), decoder, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(small["terms"])[0, 1:], 0.0, atol=2e-4)
  np.testing.assert_allclose(float(small["total"][0]), prior + decoder + float(small["kl"][0]), rtol=1e-5)
  # Fixed large: the means still match, so L_{t-1} = 4 * KL(N(0, beta~_t) || N(0, beta_t)).
  large = diffusion.full_bound(s, eps_fn, jax.random.key(0), x0, "fixed_large", clip_denoised=False)
  q, p = c["posterior_variance"][1:], c["betas"][1:]
  kl = 4 * 0.5 * (np.log(p / q) + q / p - 1)
  np.testing.assert_allclose(np.asarray(large["terms"])[0, 1:], kl, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(float(large["decoder"][0]), decoder, rtol=1e-4)  # beta~_1 at t = 0 too
  np.testing.assert_allclose(float(large["total"][0]), prior + decoder + kl.sum(), rtol=1e-4)


def test_kl_term_matches_numpy_for_an_arbitrary_epsilon():
  s = diffusion.get_schedule("linear", 30)
  c = _np(s)
  rng = np.random.default_rng(0)
  x0 = rng.integers(0, 256, (3, 2, 2, 1)) / 127.5 - 1.0
  xt = rng.standard_normal(x0.shape)
  eps = rng.standard_normal(x0.shape)
  t = np.array([3, 17, 29])
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  for variance in ("fixed_small", "fixed_large"):
    got = diffusion.vlb_term(
      s, f32(x0), f32(xt), jnp.asarray(t), f32(eps), variance, clip_denoised=False, event_ndims=3
    )
    for i, ti in enumerate(t):
      ab, ab_prev = c["alphas_cumprod"][ti], c["alphas_cumprod_prev"][ti]
      x0_hat = (xt[i] - np.sqrt(1 - ab) * eps[i]) / np.sqrt(ab)
      coef1 = c["betas"][ti] * np.sqrt(ab_prev) / (1 - ab)
      coef2 = (1 - ab_prev) * np.sqrt(c["alphas"][ti]) / (1 - ab)
      q_mean, q_var = coef1 * x0[i] + coef2 * xt[i], c["posterior_variance"][ti]
      p_mean = coef1 * x0_hat + coef2 * xt[i]
      p_var = q_var if variance == "fixed_small" else c["betas"][ti]
      kl = 0.5 * (np.log(p_var / q_var) + q_var / p_var + (q_mean - p_mean) ** 2 / p_var - 1)
      np.testing.assert_allclose(float(got[i]), kl.sum(), rtol=2e-4)


def test_single_t_estimate_is_unbiased():
  s = diffusion.get_schedule("linear", 40)
  x0 = jnp.asarray([[-1.0, 0.2, 1.0]])
  eps_fn = _point_mass_eps(s, x0)
  full = diffusion.full_bound(s, eps_fn, jax.random.key(0), x0, "fixed_large", clip_denoised=False)
  keys = jax.random.split(jax.random.key(1), 20000)
  est = jax.vmap(lambda k: diffusion.single_t_bound(s, eps_fn, k, x0, "fixed_large", clip_denoised=False)[0])(keys)
  est = np.asarray(est)
  se = est.std() / math.sqrt(len(est))
  assert abs(est.mean() - float(full["total"][0])) < 4 * se, (est.mean(), float(full["total"][0]), se)


# --------------------------------------------------------------------------- samplers


def _gaussian_eps(s, m, sd):
  """The exact epsilon (posterior mean of the noise) of data N(m, sd^2) per dimension."""

  def eps_fn(x, t):
    ab = s.alphas_cumprod[t][:, None]
    return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * m) / (ab * sd**2 + 1 - ab)

  return eps_fn


def test_samplers_are_deterministic_per_key():
  s = diffusion.get_schedule("linear", 20)
  eps_fn = _gaussian_eps(s, 0.3, 0.2)
  anc = jax.jit(lambda k: diffusion.ancestral_sample(s, eps_fn, k, (5, 2), clip_denoised=True))
  ddim = jax.jit(lambda k: diffusion.ddim_sample(s, eps_fn, k, (5, 2), num_steps=7, eta=0.5, clip_denoised=True))
  for sampler in (anc, ddim):
    a, b, c = sampler(jax.random.key(0)), sampler(jax.random.key(0)), sampler(jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
  final, traj = diffusion.ancestral_sample(
    s, eps_fn, jax.random.key(0), (5, 2), clip_denoised=True, trajectory_every=5
  )
  assert traj.shape == (4, 5, 2)
  np.testing.assert_array_equal(np.asarray(traj[-1]), np.asarray(final))
  np.testing.assert_allclose(np.asarray(final), np.asarray(anc(jax.random.key(0))), atol=1e-6)
  with pytest.raises(ValueError, match="divisor"):
    diffusion.ancestral_sample(s, eps_fn, jax.random.key(0), (5, 2), clip_denoised=True, trajectory_every=3)
  with pytest.raises(ValueError, match="num_steps"):
    diffusion.ddim_sample(s, eps_fn, jax.random.key(0), (5, 2), num_steps=21, clip_denoised=True)


def _exact_reverse_std(s, m, sd):
  """The std of x_0 under the fixed-small reverse chain with the exact epsilon of N(m, sd^2) data.

  Every reverse step is linear-Gaussian in x_t, so the variance follows a scalar recursion
  (float64, independent of the samplers).
  """
  c = _np(s)
  v = 1.0
  for t in range(s.num_timesteps - 1, -1, -1):
    ab = c["alphas_cumprod"][t]
    slope_eps = np.sqrt(1 - ab) / (ab * sd**2 + 1 - ab)
    slope_x0 = c["sqrt_recip_alphas_cumprod"][t] - c["sqrt_recipm1_alphas_cumprod"][t] * slope_eps
    a = c["posterior_mean_coef1"][t] * slope_x0 + c["posterior_mean_coef2"][t]
    v = a * a * v + (np.exp(c["posterior_log_variance_clipped"][t]) if t > 0 else 0.0)
  return math.sqrt(v)


def test_ddim_eta_one_all_steps_matches_ancestral_in_distribution():
  """On 1-D data N(0.3, 0.2^2) with the exact epsilon: DDIM with eta = 1 over all T steps and
  the ancestral sampler both give the reverse chain's exact distribution (mean 0.3, std from
  a scalar recursion: 0.196, slightly below 0.2 because the fixed-small variance omits
  Var(x_0 | x_t)), agree quantile by quantile, and with the same key give the same chains."""
  m, sd, n = 0.3, 0.2, 20000
  s = diffusion.get_schedule("linear", 1000)
  eps_fn = _gaussian_eps(s, m, sd)
  target_std = _exact_reverse_std(s, m, sd)
  assert 0.19 < target_std < 0.2
  shape = (n, 1)
  anc = diffusion.ancestral_sample(s, eps_fn, jax.random.key(0), shape, clip_denoised=False)
  ddim1 = diffusion.ddim_sample(s, eps_fn, jax.random.key(1), shape, num_steps=1000, eta=1.0, clip_denoised=False)
  for x in (anc, ddim1):
    x = np.asarray(x)[:, 0]
    assert abs(x.mean() - m) < 5 * target_std / math.sqrt(n)
    assert abs(x.std() / target_std - 1) < 0.025, x.std()
  a, d = np.sort(np.asarray(anc)[:, 0]), np.sort(np.asarray(ddim1)[:, 0])
  assert np.max(np.abs(a - d)[n // 100 : -n // 100]) < 0.02  # quantiles agree (two-sample)
  same = diffusion.ddim_sample(s, eps_fn, jax.random.key(0), shape, num_steps=1000, eta=1.0, clip_denoised=False)
  np.testing.assert_allclose(np.asarray(same), np.asarray(anc), atol=1e-3)
  # DDIM's deterministic 50-step path keeps the mean (its coarse steps shrink the spread).
  ddim0 = np.asarray(
    diffusion.ddim_sample(s, eps_fn, jax.random.key(2), shape, num_steps=50, eta=0.0, clip_denoised=False)
  )[:, 0]
  assert abs(ddim0.mean() - m) < 5 * sd / math.sqrt(n)
  assert 0.8 < ddim0.std() / sd < 1.0


def test_slerp_keeps_the_norm_of_orthogonal_noise():
  z0 = jnp.array([1.0, 0.0, 0.0])
  z1 = jnp.array([0.0, 1.0, 0.0])
  mid = diffusion.slerp(z0, z1, 0.5)
  np.testing.assert_allclose(np.asarray(mid), [math.sqrt(0.5), math.sqrt(0.5), 0.0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(diffusion.slerp(z0, z1, 0.0)), np.asarray(z0), atol=1e-6)
  np.testing.assert_allclose(np.asarray(diffusion.slerp(z0, z1, 1.0)), np.asarray(z1), atol=1e-6)
