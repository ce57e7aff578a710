"""tensorflow-datasets input through ``tfds.data_source`` (no TensorFlow).

Datasets must be prepared in the ``array_record`` file format, which gives
random access; records are converted to the batch contract
``{'image': uint8[B, H, W, C], 'label': int32[B]}`` ('label' omitted for
unlabeled datasets such as celeb_a). Images can be center-cropped to a square
and resized with PIL (bilinear, antialiased when downscaling).

``tensorflow_datasets`` is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np


class DatasetUnavailableError(RuntimeError):
  """A tfds dataset could not be found, prepared or downloaded."""


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How a genjax dataset name maps onto tfds.

  Attributes:
    tfds_name: the tfds builder name.
    train_split / test_split: tfds split expressions.
    native_shape: (H, W, C) of the stored images, None if variable.
    num_classes: 0 when the dataset has no 'label' feature.
    default_image_size: side used when the config says 0 (native); 0 = keep.
  """

  tfds_name: str
  train_split: str
  test_split: str
  native_shape: tuple[int, int, int] | None
  num_classes: int
  default_image_size: int = 0
  manual_download: bool = False


TFDS_DATASETS: dict[str, TfdsSpec] = {
  "mnist": TfdsSpec("mnist", "train", "test", (28, 28, 1), 10),
  "fashion_mnist": TfdsSpec("fashion_mnist", "train", "test", (28, 28, 1), 10),
  "cifar10": TfdsSpec("cifar10", "train", "test", (32, 32, 3), 10),
  "celeb_a": TfdsSpec("celeb_a", "train", "test", (218, 178, 3), 0, default_image_size=64, manual_download=True),
  # The official train and validation splits have only 10 images per class
  # each; both are used for training and the 6,149-image test split for
  # evaluation.
  "oxford_flowers102": TfdsSpec("oxford_flowers102", "train+validation", "test", None, 102, default_image_size=64),
}


def effective_image_size(name: str, image_size: int) -> int:
  """The side images are resized to (0 = native) for dataset ``name``."""
  return int(image_size) or TFDS_DATASETS[name].default_image_size


def image_shape(name: str, image_size: int) -> tuple[int, int, int]:
  """Per-example (H, W, C) of the batches ``TfdsSource`` produces."""
  spec = TFDS_DATASETS[name]
  size = effective_image_size(name, image_size)
  channels = spec.native_shape[2] if spec.native_shape else 3
  if size:
    return (size, size, channels)
  return spec.native_shape


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Center-crops ``uint8[H, W, C]`` to a square, resizes to ``[size, size, C]``.

  Uses PIL bilinear resampling, which antialiases when downscaling.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  h, w, c = image.shape
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  image = image[top : top + side, left : left + side]
  if side == size:
    return np.ascontiguousarray(image)
  pil = Image.fromarray(image[..., 0] if c == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
  return out.reshape(size, size, c)


def convert_records(
  records: Sequence[dict[str, Any]], image_size: int = 0, with_label: bool = True
) -> dict[str, np.ndarray]:
  """Converts decoded tfds records to a batch.

  Args:
    records: B >= 1 dicts with 'image' (uint8 [H, W, C] or [H, W]) and, if
      ``with_label``, an integer 'label'.
    image_size: if > 0, center-crop + resize each image to that side.
    with_label: whether to emit 'label'.

  Returns:
    ``{'image': uint8[B, H', W', C], 'label': int32[B]}``.
  """
  images = []
  for r in records:
    img = np.asarray(r["image"])
    if img.ndim == 2:
      img = img[..., None]
    if img.dtype != np.uint8:
      raise ValueError(f"tfds image has dtype {img.dtype}, expected uint8")
    if image_size:
      img = center_crop_resize(img, image_size)
    images.append(img)
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise ValueError(
      f"tfds images have different shapes {sorted(shapes)}; set an "
      "image_size > 0 to center-crop and resize them to a common size."
    )
  batch = {"image": np.stack(images)}
  if with_label:
    batch["label"] = np.asarray([r["label"] for r in records], np.int32)
  return batch


def unavailable_message(
  name: str, split: str, data_dir: str | None, download: bool, error: BaseException, not_prepared: bool = False
) -> str:
  """Explains how to make tfds dataset ``name`` available."""
  spec = TFDS_DATASETS.get(name)
  tfds_name = spec.tfds_name if spec else name
  where = data_dir or ("~/tensorflow_datasets (the tfds default, or $TFDS_DATA_DIR)")
  lines = [
    f"Could not open tfds dataset '{tfds_name}' split '{split}' in "
    f"data_dir={where} (download={download}): "
    + ("no prepared copy was found there. " if not_prepared else "")
    + f"tfds said {type(error).__name__}: "
    + (str(error).splitlines()[0] if str(error) else ""),
    "genjax reads tfds datasets with random access, which needs them "
    "prepared in the array_record format. To get it:",
    "  * on a machine with network access run `pip install 'genjax[prepare]'` (TensorFlow, which tfds needs "
    f"to encode the images) and `python -m genjax.data.prepare {name} --data_dir=DIR`, copy DIR here "
    "(this machine may have no network), then pass --config.data.data_dir=DIR;",
    f"  * or place already prepared array_record data under data_dir (DIR/{tfds_name}/VERSION/...);",
  ]
  if needs_tensorflow(error):
    lines.insert(
      1, "Preparing the dataset needs TensorFlow, which is not installed: pip install 'genjax[prepare]'."
    )
  if not download:
    lines.append(
      "  * or set --config.data.download=True to let tfds download and prepare it "
      "(needs network and pip install 'genjax[prepare]')."
    )
  if spec is not None and spec.manual_download:
    lines.append(
      f"  * note: {tfds_name} may need a manual download (its hosting is "
      "often rate limited); see "
      f"https://www.tensorflow.org/datasets/catalog/{tfds_name} and put the "
      "files in DIR/downloads/manual."
    )
  lines.append("  * or use a dataset that needs no download: 'mnist_embedded' or 'digits_8x8'.")
  return "\n".join(lines)


def needs_tensorflow(error: BaseException | None) -> bool:
  """Whether ``error`` (or an exception it was raised from) is TensorFlow missing."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, ModuleNotFoundError) and (
      (error.name or "").split(".")[0] == "tensorflow" or re.search(r"No module named 'tensorflow[.']", str(error))
    ):
      return True
    error = error.__cause__ or error.__context__
  return False


def open_data_source(name: str, split: str, data_dir: str | None = None, download: bool = False):
  """``tfds.data_source`` with failures re-raised as DatasetUnavailableError."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  tfds_name = TFDS_DATASETS[name].tfds_name if name in TFDS_DATASETS else name
  try:
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=download)
  except Exception as e:  # tfds raises many types: not found, network, ...
    raise DatasetUnavailableError(
      unavailable_message(
        name, split, data_dir, download, e, not_prepared=not download and not _is_prepared(tfds_name, data_dir)
      )
    ) from e


def _is_prepared(tfds_name: str, data_dir: str | None) -> bool:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    return tfds.builder(tfds_name, data_dir=data_dir, file_format="array_record").is_prepared()
  except Exception:  # pylint: disable=broad-except
    return False


class TfdsSource:
  """Random-access split of a tfds dataset; same interface as ArraySource.

  ``source[indices]`` reads those records and returns
  ``{'image': uint8[B, H, W, C], 'label': int32[B]}`` ('label' only when the
  dataset has classes), resized per ``image_size``.
  """

  def __init__(
    self, name: str, split: str, *, data_dir: str | None = None, download: bool = False, image_size: int = 0
  ):
    if name not in TFDS_DATASETS:
      raise ValueError(f"unknown tfds dataset {name!r}; supported: {sorted(TFDS_DATASETS)}")
    self.name = name
    self.split = split
    self.image_size = effective_image_size(name, image_size)
    self.with_label = TFDS_DATASETS[name].num_classes > 0
    self.shape = image_shape(name, image_size)  # None if variable.
    self._ds = open_data_source(name, split, data_dir, download)
    self._batched_reads = True

  def __len__(self) -> int:
    return len(self._ds)

  def _read(self, keys: list[int]) -> list[Any]:
    if self._batched_reads:
      try:
        return list(self._ds.__getitems__(keys))
      except TypeError:
        # tfds.testing.mock_data's __getitems__ is broken (missing `self`);
        # fall back to one read per record.
        self._batched_reads = False
    return [self._ds[k] for k in keys]

  def __getitem__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    keys = [int(i) for i in np.asarray(indices).reshape(-1)]
    n = len(self)
    for k in keys:
      if not 0 <= k < n:
        raise IndexError(f"index {k} out of range for {self.name} {self.split!r} of size {n}")
    if not keys:
      batch = {"image": np.zeros((0,) + (self.shape or (0, 0, 3)), np.uint8)}
      if self.with_label:
        batch["label"] = np.zeros((0,), np.int32)
      return batch
    return convert_records(self._read(keys), self.image_size, self.with_label)

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r}, len={len(self)}, image_size={self.image_size})"
