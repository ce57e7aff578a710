"""Image grids as PNG files."""

from __future__ import annotations

import math
import os

import numpy as np


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """Tiles `uint8[N, H, W, C]` images into one `uint8[rows*(H+pad)+pad, ncol*(W+pad)+pad, C]` image."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"image_grid expects uint8[N, H, W, C], got shape {images.shape}")
  if images.dtype != np.uint8:
    raise ValueError(f"image_grid expects uint8 images, got {images.dtype}")
  n, h, w, c = images.shape
  ncol = ncol or max(int(math.ceil(math.sqrt(n))), 1)
  nrow = int(math.ceil(n / ncol))
  grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, ncol)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y : y + h, x : x + w] = images[i]
  return grid


def save_png(path: str, grid: np.ndarray, scale: int = 1) -> str:
  """Writes a `uint8[H, W, C]` (C = 1 or 3) image to `path`, upscaled by `scale`; returns `path`."""
  from PIL import Image

  grid = np.asarray(grid)
  if scale > 1:
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
  img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path


def save_image_grid(path: str, images: np.ndarray, ncol: int | None = None) -> str:
  """Tiles `uint8[N, H, W, C]` images and writes them as one PNG (small images are upscaled)."""
  h = np.asarray(images).shape[1]
  scale = max(1, 28 // h)
  return save_png(path, image_grid(images, ncol), scale=scale)
