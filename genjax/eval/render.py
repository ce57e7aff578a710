"""Draws a family's `Figure` as a picture, with one set of rules for every family (numpy, host side).

* images: tiled into a grid (white 1-pixel gaps), small images upscaled to >= 28 pixels;
* pairs: the same grid with each input directly above its output (reconstructions, completions);
* points: a 2-D scatter (log-shaded counts, dark = dense; coloured by label when the
  figure has labels) or a 1-D histogram, over the interval `extent`;
* density: a learned density `exp(log p)` on its grid, dark = dense.

The one range rule for vector data (`extent`): the 0.5% and 99.5% quantiles over all
coordinates of the reference points (the test split), widened by a quarter of their
span on each side, the same interval on both axes. The train loop, `experiments.sample`
and the studies all call it, so pictures of one dataset always cover the same square.
"""

from __future__ import annotations

import math
import os

import numpy as np

from genjax.models.base import Figure

#: Side of a picture of vector data, in pixels.
PICTURE_SIZE = 128
#: Ten distinguishable colours (tab10) for labelled points, RGB.
PALETTE = np.array(
  [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
  ],
  np.uint8,
)


def extent(points: np.ndarray, margin: float = 0.25) -> tuple[float, float]:
  """The interval pictures of `points` `[N, D]` cover: quantiles 0.5%..99.5% over all coordinates, widened."""
  x = np.asarray(points, np.float64).reshape(-1)
  x = x[np.isfinite(x)]
  if x.size == 0:
    return -1.0, 1.0
  lo, hi = np.quantile(x, [0.005, 0.995])
  span = max(hi - lo, 1e-6)
  return float(lo - margin * span), float(hi + margin * span)


def image_grid(images: np.ndarray, ncol: int = 0, pad: int = 1) -> np.ndarray:
  """Tiles `uint8[N, H, W, C]` into one `uint8[rows*(H+pad)+pad, ncol*(W+pad)+pad, C]` (white gaps).

  `ncol=0` makes a square grid.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"image_grid expects uint8[N, H, W, C], got shape {images.shape}")
  if images.dtype != np.uint8:
    raise ValueError(f"image_grid expects uint8 images, got {images.dtype}")
  n, h, w, c = images.shape
  ncol = ncol or max(math.ceil(math.sqrt(n)), 1)
  nrow = math.ceil(n / ncol)
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, ncol)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y : y + h, x : x + w] = images[i]
  return grid


def pair_rows(pairs: np.ndarray) -> tuple[np.ndarray, int]:
  """`uint8[N, 2, H, W, C]` -> `(tiles, ncol)` laid out so each input sits directly above its output:
  rows of `ncol = ceil(sqrt(N))` inputs alternate with the rows of their outputs (blank tiles pad the last)."""
  n = pairs.shape[0]
  ncol = max(math.ceil(math.sqrt(n)), 1)
  rows = math.ceil(n / ncol)
  blank = np.full(pairs.shape[2:], 255, np.uint8)
  tiles = []
  for r in range(rows):
    for which in (0, 1):
      for c in range(ncol):
        i = r * ncol + c
        tiles.append(pairs[i, which] if i < n else blank)
  return np.stack(tiles), ncol


def _shade(counts: np.ndarray) -> np.ndarray:
  """Counts -> grey levels in [0, 1], 1 for empty cells, log-scaled so sparse points show."""
  level = np.log1p(counts) / max(np.log1p(counts.max()), 1e-6)
  return 1.0 - level


def scatter_image(
  points: np.ndarray, lo: float, hi: float, size: int = PICTURE_SIZE, labels: np.ndarray | None = None
) -> np.ndarray:
  """A 2-D histogram of `points` `float[N, 2]` over `[lo, hi]^2`: `uint8[size, size, 1]` (dark = dense),
  or `uint8[size, size, 3]` coloured by the majority label of each cell when `labels` `int[N]` is given.

  Row 0 is the top (the largest second coordinate); points outside the square are dropped.
  """
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"scatter_image expects points float[N, 2], got shape {points.shape}")
  if not hi > lo:
    raise ValueError(f"scatter_image needs hi > lo, got lo={lo}, hi={hi}")
  cell = (points - lo) / (hi - lo) * size
  col = np.floor(cell[:, 0]).astype(np.int64)
  row = size - 1 - np.floor(cell[:, 1]).astype(np.int64)
  inside = (col >= 0) & (col < size) & (row >= 0) & (row < size) & np.isfinite(points).all(axis=1)
  row, col = row[inside], col[inside]
  counts = np.zeros((size, size))
  np.add.at(counts, (row, col), 1.0)
  grey = _shade(counts)
  if labels is None:
    return np.round(255.0 * grey).astype(np.uint8)[..., None]
  labels = np.asarray(labels)[inside] % len(PALETTE)
  votes = np.zeros((size, size, len(PALETTE)))
  np.add.at(votes, (row, col, labels), 1.0)
  colour = PALETTE[votes.argmax(axis=-1)].astype(np.float64)
  out = np.where((counts > 0)[..., None], colour + (255.0 - colour) * 0.5 * grey[..., None], 255.0)
  return np.round(out).astype(np.uint8)


def histogram_image(values: np.ndarray, lo: float, hi: float, size: int = PICTURE_SIZE) -> np.ndarray:
  """A histogram of `values` `float[N]` (or `[N, 1]`) over `[lo, hi]`: `uint8[size, size, 1]`.

  `size` bins; each column is a bar whose height is the bin count relative to the
  largest bin. Values outside the range are dropped.
  """
  values = np.asarray(values, np.float64).reshape(-1)
  if not hi > lo:
    raise ValueError(f"histogram_image needs hi > lo, got lo={lo}, hi={hi}")
  col = np.floor((values - lo) / (hi - lo) * size)
  inside = (col >= 0) & (col < size)
  counts = np.bincount(col[inside].astype(np.int64), minlength=size).astype(np.float64)
  heights = counts / max(counts.max(), 1.0) * size
  rows = np.arange(size, dtype=np.float64)[::-1, None]  # row 0 is the top
  return np.where(rows < heights[None, :], 0, 255).astype(np.uint8)[..., None]


def density_image(log_p: np.ndarray) -> np.ndarray:
  """`log p` `[S, S]` on a grid (row i = i-th y, ascending) -> `uint8[S, S, 1]`, dark = dense, top = largest y."""
  p = np.exp(np.asarray(log_p, np.float64) - np.max(log_p))
  return np.round(255.0 * (1.0 - p))[::-1].astype(np.uint8)[..., None]


def render(figure: Figure, extent_: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
  """`(uint8[N, H, W, C] tiles, columns)` for a figure; see the module docstring.

  Points are drawn over `extent_` (default: `extent` of the points themselves).
  """
  data = np.asarray(figure.data)
  if figure.kind == "images":
    return data, figure.ncol
  if figure.kind == "pairs":
    return pair_rows(data)
  if figure.kind == "points":
    lo, hi = extent_ or extent(data)
    labels = None if figure.labels is None else np.asarray(figure.labels)
    if data.ndim == 2 and data.shape[1] == 1 or data.ndim == 1:
      return histogram_image(data, lo, hi)[None], 1
    if data.shape[1] != 2:
      raise ValueError(f"a points figure needs 1-D or 2-D points, got shape {data.shape}")
    return scatter_image(data, lo, hi, labels=labels)[None], 1
  if figure.kind == "density":
    return density_image(data)[None], 1
  raise ValueError(f"unknown figure kind {figure.kind!r}; expected 'images', 'points' or 'density'")


def save_png(path: str, image: np.ndarray, scale: int = 1) -> str:
  """Writes a `uint8[H, W, C]` (C = 1 or 3) image to `path`, upscaled by `scale`; returns `path`."""
  from PIL import Image

  image = np.asarray(image)
  if scale > 1:
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
  img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}.png"
  img.save(tmp)
  os.replace(tmp, path)  # a reader never sees a half-written picture
  return path


def save_image_grid(path: str, images: np.ndarray, ncol: int = 0) -> str:
  """Tiles `uint8[N, H, W, C]` images and writes one PNG (images under 28 pixels are upscaled)."""
  h = np.asarray(images).shape[1]
  return save_png(path, image_grid(images, ncol), scale=max(1, 28 // h))


def picture(figure: Figure, extent_: tuple[float, float] | None = None) -> np.ndarray:
  """The figure as one `uint8[H, W, C]` picture (a grid of its tiles), as `save_figure` writes it unscaled."""
  tiles, ncol = render(figure, extent_)
  return image_grid(tiles, ncol)


def save_figure(path: str, figure: Figure, extent_: tuple[float, float] | None = None) -> str:
  """Renders `figure` (see `render`) and writes it as one PNG; returns `path`."""
  tiles, ncol = render(figure, extent_)
  return save_image_grid(path, tiles, ncol)
