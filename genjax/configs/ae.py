"""A plain (deterministic) autoencoder on the embedded MNIST digits; presets as in vae.py."""

from genjax.configs import vae


def get_config(preset=None):
  c = vae.get_config(preset)
  c.model.kind = "ae"
  return c
