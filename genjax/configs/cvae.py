"""Conditional VAE: the one-hot label enters encoder and decoder; presets as in vae.py."""

from genjax.configs import vae


def get_config(preset=None):
  c = vae.get_config(preset)
  c.model.kind = "cvae"
  return c
