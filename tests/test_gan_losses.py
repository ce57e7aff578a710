"""GAN losses on logits against their probability-space definitions and closed-form gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax import losses


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


LOGITS_R = np.array([-3.0, -0.5, 0.0, 1.2, 4.0], np.float32)
LOGITS_F = np.array([-2.0, 0.3, 2.5, -6.0, 0.0], np.float32)


def test_losses_match_their_definitions_in_probability_space():
  dr, df = _sigmoid(LOGITS_R), _sigmoid(LOGITS_F)
  np.testing.assert_allclose(
    losses.gan_discriminator_loss(LOGITS_R, LOGITS_F), -np.mean(np.log(dr)) - np.mean(np.log(1 - df)), rtol=1e-5
  )
  np.testing.assert_allclose(losses.gan_generator_minimax_loss(LOGITS_F), np.mean(np.log(1 - df)), rtol=1e-5)
  np.testing.assert_allclose(losses.gan_generator_non_saturating_loss(LOGITS_F), -np.mean(np.log(df)), rtol=1e-5)
  np.testing.assert_allclose(
    losses.gan_hinge_discriminator_loss(LOGITS_R, LOGITS_F),
    np.mean(np.maximum(0, 1 - LOGITS_R)) + np.mean(np.maximum(0, 1 + LOGITS_F)),
    rtol=1e-6,
  )
  np.testing.assert_allclose(losses.gan_hinge_generator_loss(LOGITS_F), -np.mean(LOGITS_F), rtol=1e-6)
  np.testing.assert_allclose(
    losses.wgan_critic_loss(LOGITS_R, LOGITS_F), np.mean(LOGITS_F) - np.mean(LOGITS_R), rtol=1e-6
  )


def test_equilibrium_value_is_two_log_two():
  zeros = jnp.zeros(7)
  np.testing.assert_allclose(losses.gan_discriminator_loss(zeros, zeros), 2 * np.log(2.0), rtol=1e-6)


def test_stable_at_extreme_logits():
  big = jnp.array([-200.0, 200.0])
  for value in (
    losses.gan_discriminator_loss(big, big),
    losses.gan_generator_minimax_loss(big),
    losses.gan_generator_non_saturating_loss(big),
  ):
    assert np.isfinite(float(value))
  # Confidently rejected fakes (logit -200): -log D = 200, log(1 - D) = 0.
  np.testing.assert_allclose(losses.gan_generator_non_saturating_loss(jnp.array([-200.0])), 200.0, rtol=1e-6)
  np.testing.assert_allclose(losses.gan_generator_minimax_loss(jnp.array([-200.0])), 0.0, atol=1e-6)
  grads = jax.grad(lambda r, f: losses.gan_discriminator_loss(r, f), argnums=(0, 1))(big, big)
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_generator_gradients_saturation():
  """d/dl log(1 - sigmoid(l)) = -sigmoid(l) (vanishes for rejected fakes); d/dl -log sigmoid(l) = sigmoid(l) - 1"""
  logits = jnp.array([-10.0, -2.0, 0.0, 3.0])
  n = logits.shape[0]
  g_mm = jax.grad(losses.gan_generator_minimax_loss)(logits)
  g_ns = jax.grad(losses.gan_generator_non_saturating_loss)(logits)
  np.testing.assert_allclose(g_mm, -_sigmoid(logits) / n, rtol=1e-5)
  np.testing.assert_allclose(g_ns, (_sigmoid(logits) - 1) / n, rtol=1e-5)
  assert abs(float(g_mm[0])) < 1e-4 < 0.2 < abs(float(g_ns[0]))  # saturated vs not, at D(G(z)) = 4.5e-5


def test_optimal_discriminator_minimizes_the_bce():
  """For p_data, p_g at a point, the BCE p_d * softplus(-l) + p_g * softplus(l) is minimized at
  sigmoid(l) = p_d / (p_d + p_g), the D* of Goodfellow et al."""
  p_d, p_g = 0.3, 0.9

  def weighted(lg):
    return p_d * losses.gan_discriminator_loss(
      lg, jnp.full_like(lg, -jnp.inf)
    ) + p_g * losses.gan_discriminator_loss(jnp.full_like(lg, jnp.inf), lg)

  l_star = np.log(p_d / p_g)
  np.testing.assert_allclose(jax.grad(lambda lg: weighted(lg[None]))(jnp.float32(l_star)), 0.0, atol=1e-6)
  assert float(weighted(jnp.array([l_star + 0.3]))) > float(weighted(jnp.array([l_star])))


def test_gradient_penalty_of_a_linear_critic():
  """f(x) = w . x has |grad f| = |w| everywhere, so the penalty is exactly (|w| - 1)^2."""
  w = jnp.array([3.0, 4.0])
  real = jax.random.normal(jax.random.key(0), (16, 2))
  fake = jax.random.normal(jax.random.key(1), (16, 2))
  gp = losses.gradient_penalty(lambda x: x @ w, real, fake, jax.random.key(2))
  np.testing.assert_allclose(gp, (5.0 - 1.0) ** 2, rtol=1e-5)
