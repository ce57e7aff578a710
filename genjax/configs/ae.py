"""A plain (deterministic) autoencoder on the embedded MNIST digits; presets as in vae.py."""

from genjax.configs import vae

PRESETS = vae.PRESETS  # the same presets as vae.py


def get_config(preset=None):
  c = vae.get_config(preset)
  c.model.variant = "ae"
  return c
