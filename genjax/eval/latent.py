"""Latent-space tools for the autoencoder family: encodings, interpolation, attribute
arithmetic and the 2-D latent map."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genjax.data import preprocess
from genjax.models.autoencoder import slerp


def _encode_fn(family):
  @jax.jit
  def encode(params, image, label, key):
    x = family.targets(image, key)
    cond = jax.nn.one_hot(label, family.num_classes) if family.conditional else None
    mean, _ = family.encode(params, x, cond)
    return mean

  return encode


def encode_split(
  family: Any, params: Any, source: Any, key: jax.Array, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray | None]:
  """Posterior means (VAE) or codes (AE) of every example: `(z [N, Z], labels [N] or None)`."""
  encode = _encode_fn(family)
  zs, labels = [], []
  n = len(source)
  for i, start in enumerate(range(0, n, batch_size)):
    batch = source[np.arange(start, min(start + batch_size, n))]
    label = batch.get("label", np.zeros(len(batch["image"]), np.int32))
    zs.append(np.asarray(encode(params, batch["image"], label, jax.random.fold_in(key, i))))
    labels.append(batch.get("label"))
  z = np.concatenate(zs)
  return z, (np.concatenate(labels) if labels[0] is not None else None)


def decode_images(family: Any, params: Any, z: jax.Array, labels: jax.Array | None = None) -> np.ndarray:
  """Decoder means for codes `[N, Z]` (and labels `[N]` for a conditional VAE) as `uint8[N, H, W, C]`."""
  if family.conditional and labels is None:
    raise ValueError("a conditional VAE decodes codes together with their labels; pass labels [N]")
  cond = jax.nn.one_hot(labels, family.num_classes) if family.conditional else None
  out = family.decode(params, jnp.asarray(z), cond)
  return np.asarray(preprocess.from_unit(family.mean_image(out)))


def interpolate(z_a: np.ndarray, z_b: np.ndarray, num_steps: int, spherical: bool = False) -> np.ndarray:
  """Codes along the path from each `z_a[i]` to `z_b[i]` (`[P, Z]` each): `[P, num_steps, Z]`."""
  t = jnp.linspace(0.0, 1.0, num_steps)[None, :, None]
  a, b = jnp.asarray(z_a)[:, None], jnp.asarray(z_b)[:, None]
  path = slerp(a, b, t) if spherical else (1 - t) * a + t * b
  return np.asarray(path)


def attribute_vector(z: np.ndarray, has_attribute: np.ndarray) -> np.ndarray:
  """Mean code of the examples with the attribute minus the mean of those without: `[Z]`."""
  has_attribute = np.asarray(has_attribute, bool)
  if has_attribute.all() or not has_attribute.any():
    raise ValueError("attribute_vector needs examples both with and without the attribute")
  return z[has_attribute].mean(axis=0) - z[~has_attribute].mean(axis=0)


def add_attribute(z: np.ndarray, vector: np.ndarray, scales: np.ndarray) -> np.ndarray:
  """`z[i] + scale * vector` for every code and scale: `[N, S, Z]`."""
  return z[:, None, :] + np.asarray(scales)[None, :, None] * vector[None, None, :]


def save_latent_map(path: str, z: np.ndarray, labels: np.ndarray | None) -> str:
  """Scatter plot of 2-D codes, coloured by label, written as a PNG."""
  if z.shape[1] != 2:
    raise ValueError(f"a latent map needs a 2-D latent, got latent_dim={z.shape[1]}")
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 6))
  sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=4)
  if labels is not None:
    fig.colorbar(sc, ax=ax, label="label")
  ax.set_xlabel("z[0]")
  ax.set_ylabel("z[1]")
  ax.set_title("test-set posterior means")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return path
