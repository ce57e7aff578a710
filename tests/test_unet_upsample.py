"""The U-Net's nearest-neighbour upsampling (broadcast + reshape) is `jax.image.resize(..., 'nearest')`
in values and in gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax.nn.unet import upsample_nearest_2x


def test_upsample_equals_image_resize_nearest_with_its_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
  probe = jax.random.normal(jax.random.key(1), (2, 6, 10, 4))
  resize = lambda x: jax.image.resize(x, (2, 6, 10, 4), "nearest")
  np.testing.assert_array_equal(upsample_nearest_2x(x), resize(x))
  g = jax.grad(lambda x: jnp.sum(jnp.sin(upsample_nearest_2x(x)) * probe))(x)
  g_ref = jax.grad(lambda x: jnp.sum(jnp.sin(resize(x)) * probe))(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6)
