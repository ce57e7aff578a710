"""Flow matching against closed forms for Gaussian data, autodiff, brute-force Jacobians and Monte Carlo."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from genjax import flow_matching as fm
from genjax.data import preprocess

MEAN = jnp.array([1.5, -0.5])
COV = jnp.array([[0.25, 0.1], [0.1, 1.0]])  # correlated: the field's Jacobian is not diagonal
PATHS = {"rectified": fm.LinearPath(), "ot_sigma_min": fm.LinearPath(0.2), "cosine": fm.CosinePath()}


def _exact_flow(path, mean, cov, x0, t):
  """The marginal field's flow map from N(0, I): `x_t = alpha_t m + V_t^{1/2} x_0` (the field is affine)."""
  lam, q = np.linalg.eigh(np.asarray(cov, np.float64))
  a, s = float(path.alpha(t)), float(path.sigma(t))
  root = q @ np.diag(np.sqrt(a**2 * lam + s**2)) @ q.T
  return a * np.asarray(mean, np.float64) + np.asarray(x0, np.float64) @ root


def _mlp_field(key, dims):
  """A nonlinear, batch-independent `v_fn` on `[B, ...]` with a dense (non-diagonal) Jacobian."""
  k1, k2, k3 = jax.random.split(key, 3)
  w1 = jax.random.normal(k1, (dims, 16)) / math.sqrt(dims)
  w2 = jax.random.normal(k2, (16, dims)) / 4.0
  c = jax.random.normal(k3, (16,))

  def v_fn(x, t):
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ w1 + t[:, None] * c)
    return (h @ w2).reshape(x.shape)

  return v_fn


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", list(PATHS))
def test_path_coefficients_velocity_and_conditional_field(name):
  path = PATHS[name]
  t = jnp.array([0.0, 0.1, 0.37, 0.8, 0.999])
  assert float(path.alpha(0.0)) == 0.0 and float(path.sigma(0.0)) == pytest.approx(1.0, abs=1e-7)
  # Hand-written derivatives against autodiff of the coefficients.
  np.testing.assert_allclose(path.d_alpha(t), jax.vmap(jax.grad(path.alpha))(t), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(path.d_sigma(t), jax.vmap(jax.grad(path.sigma))(t), rtol=1e-5, atol=1e-6)
  k0, k1 = jax.random.split(jax.random.key(0))
  x0, x1 = jax.random.normal(k0, (5, 3, 2)), jax.random.normal(k1, (5, 3, 2))
  # The target is the time derivative of the interpolation (forward-mode in t).
  xt, dxt = jax.jvp(lambda tt: path.sample_xt(x0, x1, tt), (t,), (jnp.ones_like(t),))
  np.testing.assert_allclose(path.target_velocity(x0, x1, t), dxt, rtol=1e-5, atol=1e-5)
  # p_t(x | x_1) = N(mu_t, sigma_t^2): x_t is mu_t plus sigma_t times the noise.
  sig = path.sigma_t(t).reshape(-1, 1, 1)
  np.testing.assert_allclose(xt, path.mu_t(x1, t) + sig * x0, rtol=1e-6, atol=1e-6)
  # Lipman's u_t(x | x_1) at x = x_t is the same target.
  np.testing.assert_allclose(path.conditional_velocity(xt, x1, t), dxt, rtol=1e-4, atol=1e-4)
  # A static pytree: no leaves, usable as a jit argument.
  assert jax.tree.leaves(path) == []
  out = jax.jit(lambda p, a, b, tt: p.sample_xt(a, b, tt))(path, x0, x1, t)
  np.testing.assert_allclose(out, xt, rtol=1e-6, atol=1e-6)


def test_linear_path_is_conditional_ot_and_cosine_is_variance_preserving():
  k0, k1 = jax.random.split(jax.random.key(1))
  x0, x1 = jax.random.normal(k0, (4, 3)), jax.random.normal(k1, (4, 3))
  t = jnp.array([0.0, 0.25, 0.5, 1.0])
  for sigma_min in (0.0, 0.2):
    path = fm.get_path("linear", sigma_min)
    tt = t[:, None]
    np.testing.assert_allclose(path.sample_xt(x0, x1, t), (1 - (1 - sigma_min) * tt) * x0 + tt * x1, atol=1e-6)
    np.testing.assert_allclose(path.target_velocity(x0, x1, t), x1 - (1 - sigma_min) * x0, atol=1e-6)
  # Rectified flow ends at the data; sigma_min > 0 ends at the data blurred by sigma_min.
  np.testing.assert_allclose(fm.LinearPath().sample_xt(x0, x1, jnp.ones(4)), x1, atol=1e-6)
  np.testing.assert_allclose(fm.LinearPath(0.2).sample_xt(x0, x1, jnp.ones(4)), x1 + 0.2 * x0, atol=1e-6)
  cos = fm.get_path("cosine")
  np.testing.assert_allclose(cos.alpha(t) ** 2 + cos.sigma(t) ** 2, 1.0, atol=1e-6)
  np.testing.assert_allclose(cos.sample_xt(x0, x1, jnp.ones(4)), x1, atol=1e-6)


def test_time_distributions():
  n = 40000
  key = jax.random.key(2)
  u = fm.sample_time(key, n)
  assert u.shape == (n,) and u.dtype == jnp.float32
  assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
  assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / n)
  assert abs(float(u.var()) - 1 / 12) < 0.003
  t = fm.sample_time(key, n, "logit_normal", loc=0.5, scale=0.8)
  assert t.dtype == jnp.float32 and float(t.min()) > 0.0 and float(t.max()) < 1.0
  logit = np.log(np.asarray(t, np.float64)) - np.log1p(-np.asarray(t, np.float64))
  assert abs(logit.mean() - 0.5) < 4 * 0.8 / math.sqrt(n)
  assert abs(logit.std() - 0.8) < 0.02


# --------------------------------------------------------------------------- the CFM loss


def test_cfm_loss_draws_its_times_and_noise_from_the_key_and_is_jit_vmap_grad_safe():
  path = fm.LinearPath(0.1)
  x1 = jax.random.normal(jax.random.key(3), (6, 4, 4, 1))
  v_fn = _mlp_field(jax.random.key(4), 16)

  def one(key):
    loss = fm.cfm_loss(path, v_fn, key, x1, "logit_normal", loc=0.3, scale=1.5)
    k_t, k_x = jax.random.split(key)
    t, x0 = jax.nn.sigmoid(0.3 + 1.5 * jax.random.normal(k_t, (6,))), jax.random.normal(k_x, x1.shape)
    xt = (1 - 0.9 * t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
    manual = jnp.mean(jnp.square(v_fn(xt, t) - (x1 - 0.9 * x0)).reshape(6, -1), axis=-1)
    grad = jax.grad(lambda s: jnp.mean(fm.cfm_loss(path, lambda x, tt: s * v_fn(x, tt), key, x1)))(1.0)
    return loss, manual, grad

  loss, manual, grad = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), 3))
  assert loss.shape == (3, 6) and loss.dtype == jnp.float32 and grad.shape == (3,)
  np.testing.assert_allclose(loss, manual, rtol=1e-5)
  assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad) != 0.0)


@pytest.mark.parametrize("name", ["ot_sigma_min", "cosine"])
def test_cfm_gradient_equals_marginal_flow_matching_gradient(name):
  """Lipman et al.'s Theorem 2: per example, grad CFM - grad FM is zero-mean (Monte Carlo).

  For an affine `v_theta(x, t) = x W + b + t c` and data N(m, S), the marginal field
  `u_t` is in closed form. The same (x0, x1, t) draws feed both losses; the difference
  of their per-example gradients must average to zero within its standard error, while
  a wrong regression target (the rectified-flow target on a sigma_min = 0.2 path, or
  the target with the wrong sign of sigma') shows up at many standard errors.
  """
  path = PATHS[name]
  n = 20000
  k0, k1, kt, kp = jax.random.split(jax.random.key(6), 4)
  x1 = jax.random.multivariate_normal(k1, MEAN, COV, (n,))
  x0 = jax.random.normal(k0, (n, 2))
  t = jax.random.uniform(kt, (n,))
  xt = path.sample_xt(x0, x1, t)
  u_marg = fm.gaussian_velocity(path, MEAN, COV)(xt, t)
  kw, kb, kc = jax.random.split(kp, 3)
  theta = {"W": jax.random.normal(kw, (2, 2)), "b": jax.random.normal(kb, (2,)), "c": jax.random.normal(kc, (2,))}

  def field(th):
    return lambda x, tt: x @ th["W"] + th["b"] + tt[:, None] * th["c"]

  def per_fm(th):
    return jnp.mean(jnp.square(field(th)(xt, t) - u_marg), axis=-1)

  def per_example_grads(fn):
    jac = jax.jacfwd(fn)(theta)  # 8 parameters: forward mode
    return np.concatenate([np.asarray(v).reshape(n, -1) for v in jax.tree.leaves(jac)], axis=1)

  def z_scores(g):
    return np.abs(g.mean(0)) / (g.std(0) / math.sqrt(n))

  g_cfm = per_example_grads(lambda th: fm.cfm_loss_at(path, field(th), x0, x1, t))
  g_fm = per_example_grads(per_fm)
  assert z_scores(g_cfm - g_fm).max() < 4.5
  assert z_scores(g_fm).max() > 20  # the gradients themselves are far from zero

  wrong = x1 - x0 if name == "ot_sigma_min" else path.d_alpha(t)[:, None] * x1 - path.d_sigma(t)[:, None] * x0
  g_wrong = per_example_grads(lambda th: jnp.mean(jnp.square(field(th)(xt, t) - wrong), axis=-1))
  assert z_scores(g_wrong - g_fm).max() > 10


@pytest.mark.parametrize("name", list(PATHS))
def test_gaussian_marginal_density_and_velocity_are_right(name):
  """The closed forms the other tests trust: against scipy and a regression on the conditional targets."""
  path = PATHS[name]
  t = jnp.array([0.0, 0.3, 0.7, 1.0])
  means, covs = fm.gaussian_marginal(path, MEAN, COV, t)
  x = jax.random.normal(jax.random.key(30), (4, 2)) * 2.0
  log_p = fm.gaussian_log_prob(path, MEAN, COV, x, t)
  for b in range(4):
    a, s = float(path.alpha(t[b])), float(path.sigma(t[b]))
    np.testing.assert_allclose(means[b], a * np.asarray(MEAN), atol=1e-6)
    np.testing.assert_allclose(covs[b], a**2 * np.asarray(COV) + s**2 * np.eye(2), atol=1e-6)
    ref = scipy.stats.multivariate_normal(np.asarray(means[b]), np.asarray(covs[b], np.float64)).logpdf(x[b])
    np.testing.assert_allclose(log_p[b], ref, rtol=1e-5)
  # u_t(x) = E[target | x_t = x] is affine in x: least squares of the targets on (1, x_t) at t = 0.6.
  n, tt = 40000, jnp.full((40000,), 0.6)
  k0, k1 = jax.random.split(jax.random.key(31))
  x0, x1 = jax.random.normal(k0, (n, 2)), jax.random.multivariate_normal(k1, MEAN, COV, (n,))
  xt, target = path.sample_xt(x0, x1, tt), path.target_velocity(x0, x1, tt)
  design = np.concatenate([np.ones((n, 1)), np.asarray(xt, np.float64)], axis=1)
  coef, *_ = np.linalg.lstsq(design, np.asarray(target, np.float64), rcond=None)
  resid = np.asarray(target, np.float64) - design @ coef
  se = np.sqrt(np.outer(np.diag(np.linalg.inv(design.T @ design)), resid.var(0)))  # OLS standard errors
  v_fn = fm.gaussian_velocity(path, MEAN, COV)
  probe_x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  u = np.asarray(v_fn(probe_x, tt[:3]), np.float64)
  closed = np.stack([u[0], u[1] - u[0], u[2] - u[0]])  # intercept and the rows of the matrix
  np.testing.assert_array_less(np.abs(coef - closed), 5 * se + 1e-6)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("name", list(PATHS))
def test_samplers_carry_noise_to_the_gaussian_data(name):
  path = PATHS[name]
  v_fn = fm.gaussian_velocity(path, MEAN, COV)
  n = 4000
  x = fm.sample(v_fn, jax.random.key(7), (n, 2), num_steps=32, solver="heun")
  assert x.shape == (n, 2) and x.dtype == jnp.float32
  mean1, cov1 = fm.gaussian_marginal(path, MEAN, COV, jnp.ones(1))
  target_cov = np.asarray(cov1[0], np.float64)  # COV plus the sigma_min^2 blur
  np.testing.assert_allclose(target_cov, np.asarray(COV) + float(path.sigma(1.0)) ** 2 * np.eye(2), atol=1e-6)
  se = np.sqrt(np.diag(target_cov) / n)
  np.testing.assert_array_less(np.abs(np.asarray(x).mean(0) - np.asarray(mean1[0])), 4 * se)
  cov = np.cov(np.asarray(x, np.float64).T)
  # Sample covariance: se(S_ij) = sqrt((S_ii S_jj + S_ij^2) / n) for Gaussian samples.
  se_cov = np.sqrt((np.outer(np.diag(target_cov), np.diag(target_cov)) + target_cov**2) / n)
  np.testing.assert_array_less(np.abs(cov - target_cov), 4 * se_cov)
  # Against the exact flow of the same noise: the sampler solves the ODE, not just its marginals.
  x0 = jax.random.normal(jax.random.key(7), (n, 2))
  np.testing.assert_allclose(x, _exact_flow(path, MEAN, COV, x0, 1.0), atol=5e-3)
  # Temperature scales the base noise: 0 is the flow of the origin, the mean alpha_1 m.
  x_cold = fm.sample(v_fn, jax.random.key(7), (3, 2), num_steps=16, solver="rk4", temperature=0.0)
  np.testing.assert_allclose(x_cold, np.broadcast_to(MEAN, (3, 2)), atol=1e-5)


@pytest.mark.parametrize("name", ["rectified", "cosine"])
def test_solver_orders_euler_heun_rk4(name):
  """Doubling the steps divides the error at t = 1 by ~2 (Euler), ~4 (Heun), ~16 (RK4)."""
  path = PATHS[name]
  v_fn = fm.gaussian_velocity(path, MEAN, COV)
  x0 = jax.random.normal(jax.random.key(8), (64, 2))
  exact = _exact_flow(path, MEAN, COV, x0, 1.0)
  run = jax.jit(fm.integrate, static_argnums=(0, 2, 3, 4, 5))
  for solver, steps, (lo, hi) in (("euler", 16, (1.8, 2.2)), ("heun", 16, (3.3, 4.6)), ("rk4", 4, (10.0, 32.0))):
    e1, e2 = (np.abs(np.asarray(run(v_fn, x0, 0.0, 1.0, n, solver)) - exact).max() for n in (steps, 2 * steps))
    assert lo < e1 / e2 < hi, (solver, e1, e2)


def test_trajectory_and_reverse_integration():
  path = PATHS["cosine"]
  v_fn = fm.gaussian_velocity(path, MEAN, COV)
  x0 = jax.random.normal(jax.random.key(9), (8, 2))
  x1, traj = fm.integrate(v_fn, x0, 0.0, 1.0, num_steps=32, solver="rk4", trajectory_every=8)
  assert traj.shape == (4, 8, 2) and traj.dtype == jnp.float32
  np.testing.assert_array_equal(traj[-1], x1)
  for i in range(4):
    np.testing.assert_allclose(traj[i], _exact_flow(path, MEAN, COV, x0, (i + 1) / 4), atol=1e-4)
  # Integrating back from t = 1 to t = 0 recovers the noise (encoding).
  np.testing.assert_allclose(fm.integrate(v_fn, x1, 1.0, 0.0, num_steps=32, solver="rk4"), x0, atol=1e-4)
  # sample() returns the same trajectory layout.
  xs, traj_s = fm.sample(v_fn, jax.random.key(9), (8, 2), 16, "euler", trajectory_every=16)
  assert traj_s.shape == (1, 8, 2)
  np.testing.assert_array_equal(traj_s[0], xs)


# --------------------------------------------------------------------------- divergence


def _jacobians(v_fn, x, t):
  """Per-example Jacobians `[B, D, D]` of `v_fn` by `jax.jacfwd`, brute force."""
  d = math.prod(x.shape[1:])
  one = lambda y, tt: v_fn(y.reshape((1,) + x.shape[1:]), tt[None]).reshape(d)
  return jax.vmap(jax.jacfwd(one))(x.reshape(x.shape[0], d), t)


def test_exact_divergence_is_the_jacobian_trace():
  v_fn = _mlp_field(jax.random.key(10), 6)
  x = jax.random.normal(jax.random.key(11), (4, 3, 2))  # event shape [3, 2]: D = 6
  t = jnp.array([0.0, 0.3, 0.6, 1.0])
  run = jax.jit(lambda x, t: (fm.exact_divergence(v_fn, x, t), v_fn(x, t), _jacobians(v_fn, x, t)))
  (v, div), v_direct, jac = run(x, t)
  assert v.shape == x.shape and div.shape == (4,) and div.dtype == jnp.float32
  np.testing.assert_allclose(v, v_direct, rtol=1e-6)
  np.testing.assert_allclose(div, jnp.trace(jac, axis1=1, axis2=2), rtol=1e-5, atol=1e-6)


def test_hutchinson_is_unbiased_with_the_predicted_variance():
  v_fn = _mlp_field(jax.random.key(12), 4)
  diag_fn = lambda y, tt: jnp.sin(y) * (1 + tt[:, None])  # elementwise: a diagonal Jacobian
  x = jax.random.normal(jax.random.key(13), (3, 4))
  t = jnp.array([0.2, 0.5, 0.9])
  k = 8000

  @jax.jit
  def run():
    out = {"exact": fm.exact_divergence(v_fn, x, t)[1], "jac": _jacobians(v_fn, x, t)}
    for kind in ("rademacher", "gaussian"):
      probes = fm.hutchinson_probes(jax.random.key(14), x.shape, k, kind)
      # One probe at a time gives the K single-probe estimates; their mean is the K-probe estimate.
      out[kind] = jax.vmap(lambda e: fm.hutchinson_divergence(v_fn, x, t, e[None])[1])(probes)
      out[kind + "_mean"] = fm.hutchinson_divergence(v_fn, x, t, probes)[1]
      out["dtype_" + kind] = probes[:1]
    probes = fm.hutchinson_probes(jax.random.key(15), x.shape, 3)
    out["diag"] = fm.hutchinson_divergence(diag_fn, x, t, probes)[1], fm.exact_divergence(diag_fn, x, t)[1]
    return out

  out = run()
  jac = np.asarray(out["jac"], np.float64)
  sym = (jac + np.swapaxes(jac, 1, 2)) / 2
  off = sym * (1 - np.eye(4))
  predicted = {"rademacher": 2 * (off**2).sum((1, 2)), "gaussian": 2 * (sym**2).sum((1, 2))}
  for kind in ("rademacher", "gaussian"):
    assert out["dtype_" + kind].dtype == jnp.float32 and out["dtype_" + kind].shape == (1, 3, 4)
    single = np.asarray(out[kind], np.float64)
    np.testing.assert_allclose(out[kind + "_mean"], single.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_less(np.abs(single.mean(0) - out["exact"]), 4 * single.std(0) / math.sqrt(k))
    np.testing.assert_allclose(single.var(0), predicted[kind], rtol=0.15)
  # Rademacher probes are exact for a diagonal Jacobian.
  np.testing.assert_allclose(*out["diag"], rtol=1e-5)


# --------------------------------------------------------------------------- log-likelihood


@pytest.mark.parametrize("name", list(PATHS))
def test_ode_log_likelihood_is_the_gaussian_density(name):
  path = PATHS[name]
  v_fn = fm.gaussian_velocity(path, MEAN, COV)
  x1 = jax.random.multivariate_normal(jax.random.key(16), MEAN, COV, (16,)) * 1.5  # include the tails
  exact = fm.gaussian_log_prob(path, MEAN, COV, x1, jnp.ones(16))
  result = jax.jit(fm.log_likelihood, static_argnums=(0, 2, 3))(v_fn, x1, 32, "rk4")
  assert result.log_prob.shape == (16,) and result.log_prob.dtype == jnp.float32
  np.testing.assert_allclose(result.log_prob, exact, atol=2e-5 * np.abs(np.asarray(exact)).max() + 1e-5)
  np.testing.assert_allclose(result.prior_log_prob + result.delta_log_prob, result.log_prob, rtol=1e-6)
  # x_0 is the exact inverse flow of x_1, and delta is log p_1(x_1) - log N(x_0) (the sign).
  lam, q = np.linalg.eigh(np.asarray(COV, np.float64))
  var1 = float(path.alpha(1.0)) ** 2 * lam + float(path.sigma(1.0)) ** 2
  x0 = ((np.asarray(x1) - float(path.alpha(1.0)) * np.asarray(MEAN)) @ q / np.sqrt(var1)) @ q.T
  np.testing.assert_allclose(result.x0, x0, atol=1e-4)
  np.testing.assert_allclose(result.delta_log_prob, -0.5 * np.log(var1).sum(), atol=1e-4)  # contracting: < 0
  # Heun converges to the same value at second order: doubling the steps quarters the error.
  e1, e2 = (np.abs(np.asarray(fm.log_likelihood(v_fn, x1, n, "heun").log_prob - exact)).max() for n in (16, 32))
  assert 3.3 < e1 / e2 < 4.6 and e2 < 0.05, (e1, e2)


def test_hutchinson_log_likelihood_is_unbiased():
  """FFJORD's estimate, one probe per solve, averaged over 512 solves of each of 2 points."""
  path = PATHS["rectified"]
  v_fn = fm.gaussian_velocity(path, MEAN, COV)
  copies = 512
  x1 = jnp.repeat(jnp.array([[1.0, 0.0], [2.0, -2.0]]), copies, axis=0)  # each row gets its own probe
  exact = fm.log_likelihood(v_fn, x1[::copies], 16, "rk4")
  for kind in ("rademacher", "gaussian"):
    est = fm.log_likelihood(v_fn, x1, 16, "rk4", "hutchinson", key=jax.random.key(17), probe=kind)
    np.testing.assert_allclose(est.x0[::copies], exact.x0, atol=1e-6)  # the path does not see the probes
    lp = np.asarray(est.log_prob, np.float64).reshape(2, copies)
    assert lp.std(1).min() > 0.01  # correlated dimensions: the estimate is noisy
    np.testing.assert_array_less(np.abs(lp.mean(1) - exact.log_prob), 4 * lp.std(1) / math.sqrt(copies))


def test_log_likelihood_of_images_with_hutchinson_probes():
  v_fn = _mlp_field(jax.random.key(18), 32)
  x1 = jax.random.uniform(jax.random.key(19), (3, 4, 4, 2), minval=-1, maxval=1)

  @jax.jit
  def run(key):
    hutch = fm.log_likelihood(v_fn, x1, 4, "heun", "hutchinson", key, num_probes=2)
    return hutch, fm.log_likelihood(v_fn, x1, 4, "heun"), fm.log_prob_to_bits_per_dim(hutch.log_prob, 32)

  hutch, exact, bpd = run(jax.random.key(20))
  assert hutch.log_prob.shape == (3,) and hutch.x0.shape == x1.shape and bpd.shape == (3,)
  assert np.all(np.isfinite(np.asarray(hutch.log_prob)))
  np.testing.assert_allclose(hutch.x0, exact.x0, atol=1e-6)  # the path does not see the probes
  # Two probes per example on a 32-dimensional field: close to the exact value, not equal.
  assert 0 < np.abs(np.asarray(hutch.log_prob - exact.log_prob)).max() < 2.0


def test_bits_per_dim_with_dequantization():
  # The uniform density on [-1, 1]^D is log p = -D log 2: exactly 8 bits/dim.
  d = 784
  np.testing.assert_allclose(fm.log_prob_to_bits_per_dim(jnp.array([-d * math.log(2.0)]), d), [8.0], rtol=1e-6)
  # A density constant on each bin's box, p(y) = P(x) / w^D, gives exactly -log2 P(x) / D.
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(256), size=3)  # three independent dimensions
  image = rng.integers(0, 256, size=(5, 3)).astype(np.uint8)
  y = 2.0 * preprocess.dequantize_uniform(jax.random.key(21), jnp.asarray(image)) - 1.0
  w = 2.0 / 256
  bins = np.floor((np.asarray(y, np.float64) + 1.0) / w).astype(int)
  np.testing.assert_array_equal(bins, image)  # the family's map puts y in x's box
  log_p_y = np.log(probs[np.arange(3), bins]).sum(1) - 3 * math.log(w)
  discrete_bits = -np.log2(probs[np.arange(3), image]).sum(1) / 3
  np.testing.assert_allclose(fm.log_prob_to_bits_per_dim(jnp.asarray(log_p_y), 3), discrete_bits, rtol=1e-5)


# --------------------------------------------------------------------------- bad arguments


def test_bad_arguments_give_one_line_errors():
  v_fn = fm.gaussian_velocity(fm.LinearPath(), MEAN, COV)
  x = jnp.zeros((2, 2))
  key = jax.random.key(0)
  cases = [
    (lambda: fm.sample(v_fn, key, (2, 2), num_steps=0), "num_steps must be >= 1, got 0"),
    (lambda: fm.integrate(v_fn, x, num_steps=4, solver="dopri5"), "unknown ODE solver 'dopri5'"),
    (lambda: fm.log_likelihood(v_fn, x, 4, "midpoint"), "unknown ODE solver 'midpoint'"),
    (lambda: fm.integrate(v_fn, x, 0.0, 1.5, 4), r"t_end must lie in \[0, 1\], got 1.5"),
    (lambda: fm.LinearPath().sample_xt(x, x, jnp.array([0.5, 1.2])), r"t must lie in \[0.0, 1.0\]"),
    (lambda: fm.cfm_loss_at(fm.CosinePath(), v_fn, x, x, jnp.array([-0.1, 0.5])), r"t must lie in"),
    (lambda: fm.LinearPath(1.0), r"sigma_min must be in \[0, 1\), got 1.0"),
    (lambda: fm.get_path("vp"), "unknown probability path 'vp'"),
    (lambda: fm.get_path("cosine", 0.1), "applies to the linear path only"),
    (lambda: fm.sample_time(key, 4, "beta"), "unknown time distribution 'beta'"),
    (lambda: fm.sample_time(key, 4, "logit_normal", scale=0.0), "scale must be > 0"),
    (lambda: fm.sample(v_fn, key, (2, 2), 4, temperature=-1.0), "temperature must be >= 0"),
    (lambda: fm.integrate(v_fn, x, 0.0, 1.0, 6, trajectory_every=4), "positive divisor of num_steps=6"),
    (lambda: fm.log_likelihood(v_fn, x, 4, divergence="exact_trace"), "unknown divergence 'exact_trace'"),
    (lambda: fm.log_likelihood(v_fn, x, 4, divergence="hutchinson"), "needs a key"),
    (lambda: fm.hutchinson_probes(key, (2, 2), 0), "num_probes must be >= 1"),
    (lambda: fm.hutchinson_probes(key, (2, 2), 1, "sphere"), "unknown Hutchinson probe 'sphere'"),
    (lambda: fm.hutchinson_divergence(v_fn, x, jnp.zeros(2), jnp.zeros((1, 3, 2))), r"probes \(1, 3, 2\)"),
    (lambda: fm.log_prob_to_bits_per_dim(jnp.zeros(2), 0), "num_dims must be positive"),
    (lambda: fm.log_prob_to_bits_per_dim(jnp.zeros(2), 4, data_range=0.0), "data_range must be > 0"),
  ]
  for fn, match in cases:
    with pytest.raises(ValueError, match=match) as info:
      fn()
    assert "\n" not in str(info.value), str(info.value)


def test_rk4_solves_a_linear_ode_with_a_partial_applied_v_fn():
  """A family closes params over its network: `functools.partial(apply, params)` must be a valid `v_fn`."""

  def apply(scale, x, t):
    return -scale * x + t[:, None]

  v_fn = functools.partial(apply, 0.5)
  x = fm.sample(v_fn, jax.random.key(22), (4, 3), num_steps=8, solver="rk4")
  # dx/dt = -x/2 + t from x0: x(1) = x0 e^{-1/2} + (2 - 4 + 4 e^{-1/2}) (integrating factor).
  x0 = jax.random.normal(jax.random.key(22), (4, 3))
  np.testing.assert_allclose(x, x0 * math.exp(-0.5) + (-2 + 4 * math.exp(-0.5)), atol=1e-5)
  # The state keeps its dtype through the loop (bfloat16 in, bfloat16 out).
  x_bf16 = fm.integrate(v_fn, x0.astype(jnp.bfloat16), 0.0, 1.0, 4, "heun")
  assert x_bf16.dtype == jnp.bfloat16
  np.testing.assert_allclose(x_bf16.astype(jnp.float32), x, atol=0.05)
