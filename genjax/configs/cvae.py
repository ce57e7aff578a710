"""Conditional VAE: the one-hot label enters encoder and decoder; presets as in vae.py."""

from genjax.configs import vae

PRESETS = vae.PRESETS  # the same presets as vae.py


def get_config(preset=None):
  c = vae.get_config(preset)
  c.model.variant = "cvae"
  return c
