"""The figures `experiments.sample` draws for the autoencoder family, as plain functions."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from genjax.eval import latent

KINDS = ("samples", "reconstructions", "interpolation", "attribute", "latent_map")
INTERPOLATION_STEPS = 8
ATTRIBUTE_SCALES = np.linspace(0.0, 2.0, 8)


class Subset:
  """Rows `idx` of a source, as a source."""

  def __init__(self, source: Any, idx: np.ndarray):
    self.source, self.idx = source, np.asarray(idx)

  def __len__(self) -> int:
    return len(self.idx)

  def __getitem__(self, indices):
    return self.source[self.idx[np.asarray(indices)]]


def autoencoder_figure(
  family: Any,
  params: Any,
  source: Any,
  kind: str,
  num: int,
  key: jax.Array,
  seed: int = 0,
  temperature: float = 1.0,
  label: int = 1,
  spherical: bool = False,
) -> tuple[np.ndarray, int | None]:
  """Images for one figure kind and the grid's column count (None = square).

  Args:
    family: an `AutoencoderFamily`; params: its (EMA) parameters.
    source: the split whose images are encoded (the test split).
    kind: 'samples' (prior; plain autoencoders have none and show reconstructions),
      'reconstructions' (input/reconstruction pairs), 'interpolation' (rows from one
      image's code to another's), 'attribute' (rows adding 0..2x the attribute vector
      of `label`: mean code with that label minus mean code without).
  Returns:
    `(uint8[N, H, W, C], ncol)`.
  """
  rng = np.random.default_rng(seed)
  if num <= 0:
    raise ValueError(f"num must be positive, got {num}")
  if kind == "samples" and family.variational:
    return np.asarray(family.sample(params, key, num, temperature=temperature)), None
  if kind in ("samples", "reconstructions"):
    batch = source[np.arange(num // 2 + 1) % len(source)]
    return np.asarray(family.reconstruction_grid(params, key, batch, num)), None
  if kind == "interpolation":
    steps = INTERPOLATION_STEPS
    pairs = max(num // steps, 1)
    idx = rng.choice(len(source), size=2 * pairs, replace=False)
    z, labels = latent.encode_split(family, params, Subset(source, idx), key)
    path = latent.interpolate(z[:pairs], z[pairs:], steps, spherical=spherical)
    lab = None if labels is None else np.repeat(labels[:pairs], steps)
    return latent.decode_images(family, params, path.reshape(-1, path.shape[-1]), lab), steps
  if kind == "attribute":
    z, labels = latent.encode_split(family, params, source, key)
    if labels is None:
      raise ValueError("attribute arithmetic needs a labelled dataset")
    has = labels == label
    vector = latent.attribute_vector(z, has)
    rows = max(num // len(ATTRIBUTE_SCALES), 1)
    pick = rng.choice(np.flatnonzero(~has), size=rows, replace=False)
    path = latent.add_attribute(z[pick], vector, ATTRIBUTE_SCALES)
    lab = np.repeat(labels[pick], len(ATTRIBUTE_SCALES)) if family.conditional else None
    return latent.decode_images(family, params, path.reshape(-1, path.shape[-1]), lab), len(ATTRIBUTE_SCALES)
  raise ValueError(
    f"unknown figure kind {kind!r}; expected one of {KINDS[:-1]} (latent_map is drawn by latent.save_latent_map)"
  )


AUTOREGRESSIVE_KINDS = ("samples", "completion")


def autoregressive_figure(
  family: Any,
  params: Any,
  source: Any,
  kind: str,
  num: int,
  key: jax.Array,
  temperature: float = 1.0,
  label: int | None = None,
) -> tuple[np.ndarray, int | None]:
  """Images for a PixelCNN figure and the grid's column count (None = square).

  'samples' draws `num` images (a conditional model: all of class `label`, or cycling
  through the classes when `label` is None); 'completion' keeps the upper half of
  `num // 2` test images and samples the lower half, each completion beside its original.
  Sampling is compiled once per (num, temperature).
  """
  if num <= 0:
    raise ValueError(f"num must be positive, got {num}")
  labels = None
  if family.conditional and label is not None:
    if not 0 <= label < family.num_classes:
      raise ValueError(f"label {label} is outside [0, {family.num_classes})")
    labels = np.full((num,), label, np.int32)
  if kind == "samples":
    sample = jax.jit(family.sample, static_argnames=("num", "temperature"))
    images = np.asarray(sample(params, key, num=num, labels=labels, temperature=temperature))
    # Cycling through the classes: one class per column.
    return images, family.num_classes if family.conditional and labels is None else None
  if kind == "completion":
    n = max(num // 2, 1)
    batch = source[np.arange(n) % len(source)]
    cond = batch.get("label") if family.conditional else None
    done = np.asarray(
      jax.jit(family.complete, static_argnames="temperature")(
        params, key, batch["image"], cond, temperature=temperature
      )
    )
    pairs = np.stack([batch["image"], done], axis=1).reshape((2 * n,) + done.shape[1:])
    return pairs, None
  raise ValueError(
    f"unknown figure kind {kind!r} for an autoregressive model; expected one of {AUTOREGRESSIVE_KINDS}"
  )
