"""A denoising autoencoder (Gaussian corruption, std 0.3); presets as in vae.py."""

from genjax.configs import vae


def get_config(preset=None):
  c = vae.get_config(preset)
  c.model.kind = "dae"
  return c
