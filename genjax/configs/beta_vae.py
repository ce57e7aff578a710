"""beta-VAE (beta = 4): a heavier KL weight for more factorized latents; presets as in vae.py."""

from genjax.configs import vae

PRESETS = vae.PRESETS  # the same presets as vae.py


def get_config(preset=None):
  c = vae.get_config(preset)
  c.model.beta = 4.0
  return c
