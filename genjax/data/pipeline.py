"""Sources, a deterministic batch iterator, eval batches and ``load_dataset``.

Batch contract: a dict of numpy arrays with a shared leading batch axis B:
images ``{'image': uint8[B, H, W, C], 'label': int32[B]}``, toy densities
``{'x': float32[B, D]}`` (+ ``'label': int32[B]``, the mixture component, for
toys with components). 'label' is omitted when ``DatasetInfo.num_classes`` is
0 (celeb_a, gaussian_1d).

A source is anything with ``len(source)`` and ``source[indices int[B]] ->
batch`` (``ArraySource`` over arrays in memory or memory-mapped, ``TfdsSource``
over array_record files).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from genjax.data import embedded, own, tfds_input, toy
from genjax.data.errors import DataConfigError

log = logging.getLogger("genjax")

EMBEDDED_DATASETS = ("mnist_embedded", "digits_8x8")
# Your own images: `data.path` is a directory of images or an .npz file (see `own`).
OWN_DATASETS = ("folder", "npz")
DATASET_NAMES: tuple[str, ...] = (
  EMBEDDED_DATASETS + OWN_DATASETS + tuple(tfds_input.TFDS_DATASETS) + tuple(toy.TOYS)
)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a dataset.

  Attributes:
    name: dataset name as given to ``load_dataset``.
    kind: 'image' (batches have uint8 'image') or 'vector' (float32 'x').
    shape: per-example shape, (H, W, C) for images and (D,) for vectors.
    num_classes: number of label values (labels lie in [0, num_classes)); 0
      when the batches carry no 'label'.
    num_train / num_test: split sizes.
    class_names: the name of each label 0..num_classes-1 (a folder dataset's class
      subfolder names, an npz's 'class_names'); () when unknown or unlabelled.
    cache_key: identifies the data behind ``name`` in cache file names: ``name``
      itself for the built-in datasets; for own data (folder, npz) the name plus a
      digest of the files, settings and split, so two folders never share a cache.
  """

  name: str
  kind: str
  shape: tuple[int, ...]
  num_classes: int
  num_train: int
  num_test: int
  class_names: tuple[str, ...] = ()
  cache_key: str = ""

  def __post_init__(self):
    if not self.cache_key:
      object.__setattr__(self, "cache_key", self.name)


class Source(Protocol):
  """Random-access split: ``len(source)`` and ``source[indices] -> batch``."""

  def __len__(self) -> int: ...

  def __getitem__(self, indices: np.ndarray) -> dict[str, np.ndarray]: ...


class ArraySource:
  """A split held as ``{key: array[N, ...]}`` (in memory or memory-mapped).

  With ``rows`` (``int[M]``, values in [0, N)) the split is those rows of the arrays:
  ``len(source) == M`` and ``source[i] == arrays[rows[i]]``, so a train and a test
  split can share one array without copying it.
  """

  def __init__(self, arrays: dict[str, np.ndarray], rows: np.ndarray | None = None):
    if not arrays:
      raise ValueError("ArraySource needs at least one array")
    self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in self.arrays.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
      raise ValueError(f"ArraySource arrays need one shared leading size, got {sizes}")
    n = next(iter(sizes.values()))
    self.rows = None
    if rows is not None:
      self.rows = np.asarray(rows, np.int64)
      if self.rows.ndim != 1 or (self.rows.size and not (0 <= self.rows.min() and self.rows.max() < n)):
        raise ValueError(f"ArraySource rows must be int[M] in [0, {n}), got shape {self.rows.shape}")
    self._len = n if self.rows is None else len(self.rows)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Gathers rows: ``indices int[B] -> {key: array[B, ...]}``."""
    indices = np.asarray(indices, np.int64)
    if self.rows is not None:
      indices = self.rows[indices]
    return {k: v[indices] for k, v in self.arrays.items()}

  def __repr__(self) -> str:
    shapes = {k: (v.dtype.name, v.shape) for k, v in self.arrays.items()}
    return f"ArraySource({shapes}" + (f", rows={len(self.rows)})" if self.rows is not None else ")")


def _local_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size <= 0:
    raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(
      f"need 0 <= process_index < process_count, got process_index={process_index}, process_count={process_count}"
    )
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible by process_count {process_count}")
  return global_batch_size // process_count


class BatchIterator:
  """Infinite, deterministic, restartable stream of host-local batches.

  The example stream is the concatenation of epochs e = 0, 1, ...; epoch e
  visits the source in the order ``np.random.default_rng([seed, e])
  .permutation(len(source))`` (identity when ``shuffle=False``). The global
  batch at stream position p covers stream positions [p, p + G); ``next(it)``
  returns this process's rows [i * L, (i + 1) * L) of it, L = G //
  process_count, and advances ``it.position`` by G. Batches may straddle an
  epoch boundary. ``BatchIterator(..., position=it.position)`` continues
  exactly where ``it`` stopped; prefetching (a background thread computing
  the next ``prefetch`` batches) never changes the output.
  """

  _MAX_CACHED_EPOCHS = 4

  def __init__(
    self,
    source: Source,
    global_batch_size: int,
    seed: int,
    position: int = 0,
    shuffle: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 2,
  ):
    self.local_batch_size = _local_size(global_batch_size, process_index, process_count)
    if len(source) == 0:
      raise ValueError("cannot iterate over an empty source")
    if position < 0:
      raise ValueError(f"position must be >= 0, got {position}")
    self.source = source
    self.global_batch_size = int(global_batch_size)
    self.seed = int(seed)
    self.shuffle = bool(shuffle)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.prefetch = max(int(prefetch), 0)
    self._position = int(position)
    self._orders: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._lock = threading.Lock()
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None
    self._pending: collections.deque[tuple[int, concurrent.futures.Future]] = collections.deque()

  @property
  def position(self) -> int:
    """Stream examples consumed by the batches returned so far."""
    return self._position

  def epoch_order(self, epoch: int) -> np.ndarray:
    """int64[N]: source indices in the order epoch ``epoch`` visits them."""
    with self._lock:
      order = self._orders.get(epoch)
      if order is None:
        n = len(self.source)
        if self.shuffle:
          order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
          order = np.arange(n)
        self._orders[epoch] = order
        while len(self._orders) > self._MAX_CACHED_EPOCHS:
          self._orders.popitem(last=False)
      else:
        self._orders.move_to_end(epoch)
      return order

  def indices_at(self, position: int) -> np.ndarray:
    """int64[L]: source indices of this process's rows of batch ``position``."""
    n = len(self.source)
    start = position + self.process_index * self.local_batch_size
    stream = start + np.arange(self.local_batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(stream, n)
    out = np.empty_like(stream)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self.epoch_order(int(e))[offsets[sel]]
    return out

  def batch_at(self, position: int) -> dict[str, np.ndarray]:
    """The host-local batch of the global batch starting at ``position``."""
    return self.source[self.indices_at(position)]

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.prefetch == 0:
      batch = self.batch_at(self._position)
    else:
      if self._executor is None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="genjax-prefetch")
      while len(self._pending) < self.prefetch + 1:
        pos = self._position + len(self._pending) * self.global_batch_size
        self._pending.append((pos, self._executor.submit(self.batch_at, pos)))
      pos, future = self._pending.popleft()
      assert pos == self._position, (pos, self._position)
      batch = future.result()
    self._position += self.global_batch_size
    return batch

  def close(self) -> None:
    """Stops the prefetch thread (the iterator can still be used after)."""
    for _, future in self._pending:
      future.cancel()
    self._pending.clear()
    if self._executor is not None:
      self._executor.shutdown(wait=False, cancel_futures=True)
      self._executor = None

  def __enter__(self) -> BatchIterator:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass


def eval_batches(
  source: Source, batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Yields ``(batch, mask)`` covering ``source`` once, in order.

  Global batch k covers indices [k * B, (k + 1) * B) (B = ``batch_size``); the
  last one is padded to B by repeating index 0. Each process gets its rows
  [i * L, (i + 1) * L) (L = B // process_count) of every global batch, so all
  processes yield the same number, ceil(N / B), of batches.

  Yields:
    batch with leading size L and ``mask: float32[L]``, 1 for real rows and 0
    for padding.
  """
  local = _local_size(batch_size, process_index, process_count)
  n = len(source)
  lo = process_index * local
  for start in range(0, n, batch_size):
    idx = start + lo + np.arange(local, dtype=np.int64)
    real = idx < n
    yield source[np.where(real, idx, 0)], real.astype(np.float32)


def _describe_positions(bad: np.ndarray, limit: int = 5) -> str:
  """'[(row, col), ...]' for the first ``limit`` True entries of ``bad``."""
  where = [tuple(int(i) for i in p) for p in np.argwhere(bad)[:limit]]
  more = ", ..." if int(bad.sum()) > limit else ""
  return "[" + ", ".join(map(str, where)) + more + "]"


def validate_batch(batch: dict[str, Any], info: DatasetInfo) -> None:
  """Raises ValueError if ``batch`` breaks the batch contract for ``info``."""
  if not isinstance(batch, dict):
    raise ValueError(f"batch must be a dict of arrays, got {type(batch)}")
  data_key = "image" if info.kind == "image" else "x"
  required = [data_key] + (["label"] if info.num_classes > 0 else [])
  for key in required:
    if key not in batch:
      raise ValueError(
        f"batch is missing key {key!r} (has {sorted(batch)}); dataset {info.name!r} batches need {required}"
      )
  arrays = {k: np.asarray(v) for k, v in batch.items()}
  sizes = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
  if len(set(sizes.values())) != 1 or None in sizes.values():
    raise ValueError(f"batch sizes of keys disagree: {sizes}")

  data = arrays[data_key]
  expected_dtype = np.uint8 if info.kind == "image" else np.float32
  if data.dtype != expected_dtype:
    raise ValueError(
      f"batch[{data_key!r}] has dtype {data.dtype} but dataset "
      f"{info.name!r} expects {np.dtype(expected_dtype).name}"
    )
  if tuple(data.shape[1:]) != tuple(info.shape):
    raise ValueError(
      f"batch[{data_key!r}] has per-example shape {tuple(data.shape[1:])} "
      f"but dataset {info.name!r} has {tuple(info.shape)}"
    )
  if info.kind != "image":
    bad = ~np.isfinite(data)
    if bad.any():
      raise ValueError(
        f"batch['x'] has {int(bad.sum())} non-finite values (NaN/inf) at (row, column) {_describe_positions(bad)}"
      )

  if "label" in arrays and info.num_classes > 0:
    label = arrays["label"]
    if label.dtype != np.int32:
      raise ValueError(f"batch['label'] has dtype {label.dtype}, expected int32")
    if label.ndim != 1:
      raise ValueError(f"batch['label'] has shape {label.shape}, expected [B]")
    bad = (label < 0) | (label >= info.num_classes)
    if bad.any():
      rows = np.flatnonzero(bad)
      raise ValueError(
        f"batch['label'] has {rows.size} values outside [0, "
        f"{info.num_classes}) for dataset {info.name!r}, e.g. "
        f"{int(label[rows[0]])} at row {int(rows[0])}"
      )


def _cfg(config: Any, key: str, default: Any) -> Any:
  value = getattr(config, key, default)
  return default if value is None and default is not None else value


def _resize_arrays(splits, image_size: int):
  out = {}
  for split, arrays in splits.items():
    images = np.stack([tfds_input.center_crop_resize(im, image_size) for im in arrays["image"]])
    out[split] = dict(arrays, image=images)
  return out


def _own_setting(config: Any, key: str) -> Any:
  try:
    return getattr(config, key)
  except (AttributeError, KeyError):
    raise DataConfigError(
      f"the data config has no key {key!r}, which data.name={config.name!r} needs; start from "
      "genjax.configs.default.get_base_config().data"
    ) from None


def own_settings(config: Any) -> dict[str, Any]:
  """The checked own-data settings of ``config`` (folder / npz); DataConfigError if one is bad."""
  path, fraction, seed = (
    _own_setting(config, "path"),
    _own_setting(config, "test_fraction"),
    _own_setting(config, "split_seed"),
  )
  channels, cache, image_size = _own_setting(config, "channels"), _own_setting(config, "cache"), config.image_size
  if not isinstance(path, str):
    raise DataConfigError(f"data.path must be a string (a directory or .npz file), got {path!r}")
  if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
    raise DataConfigError(f"data.test_fraction must be a number in (0, 1), got {fraction!r}")
  if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
    raise DataConfigError(f"data.split_seed must be an integer >= 0, got {seed!r}")
  if channels not in (0, 1, 3) or isinstance(channels, bool):
    raise DataConfigError(f"data.channels must be 0 (auto), 1 (grey) or 3 (RGB), got {channels!r}")
  if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or image_size < 0:
    raise DataConfigError(f"data.image_size must be an integer >= 0 (0 = native), got {image_size!r}")
  return dict(
    path=os.path.expanduser(path),
    test_fraction=float(fraction),
    split_seed=int(seed),
    channels=int(channels),
    cache=bool(cache),
    image_size=int(image_size),
  )


def _load_own(name: str, config: Any) -> tuple[DatasetInfo, dict[str, Source]]:
  """A folder or npz dataset with its fixed, seeded split (see ``genjax.data.own``)."""
  s = own_settings(config)
  if name == "folder":
    data = own.load_folder(s["path"], s["channels"], s["image_size"], s["cache"])
  else:
    data = own.load_npz(s["path"], s["channels"], s["image_size"])
  if data.split is not None:
    split = data.split
    key_spec = [data.fingerprint]
  else:
    train, test = own.split_indices(
      data.label, len(data.image), s["test_fraction"], s["split_seed"], data.class_names
    )
    split = {"train": train, "test": test}
    key_spec = [data.fingerprint, s["test_fraction"], s["split_seed"]]
  arrays = {"image": data.image}
  if data.label is not None:
    arrays["label"] = data.label
  sources = {k: ArraySource(arrays, rows=v) for k, v in split.items()}
  digest = hashlib.sha256(json.dumps(key_spec).encode()).hexdigest()[:16]
  info = DatasetInfo(
    name,
    "image",
    tuple(int(d) for d in data.image.shape[1:]),
    len(data.class_names),
    len(sources["train"]),
    len(sources["test"]),
    class_names=data.class_names,
    cache_key=f"{name}-{digest}",
  )
  shown = ", ".join(f"{k}={n}" for k, n in enumerate(data.class_names[:10]))
  log.info(
    "%s %s: %d train / %d test images of %s, %s",
    name,
    s["path"],
    info.num_train,
    info.num_test,
    info.shape,
    f"{info.num_classes} classes ({shown}{', ...' if info.num_classes > 10 else ''})"
    if info.num_classes
    else "no labels",
  )
  return info, sources


def load_dataset(config: Any) -> tuple[DatasetInfo, dict[str, Source]]:
  """Loads dataset ``config.name`` as ``(info, {'train': src, 'test': src})``.

  Config fields (ml_collections ConfigDict or any attribute object; missing
  fields take the defaults): name ('mnist_embedded'), data_dir (None),
  download (False), image_size (0 = native; celeb_a and oxford_flowers102
  use 64), toy_num_train (20000), toy_num_test (5000). Toy splits are sampled
  with seeds 0 (train) and 1 (test); embedded splits are fixed.

  Own data (name 'folder' or 'npz') reads path, test_fraction, split_seed,
  channels, cache and image_size, which must all be present (see
  ``genjax/configs/default.py``); a bad value or bad files raise
  ``DataConfigError``.
  """
  name = _cfg(config, "name", "mnist_embedded")
  image_size = int(_cfg(config, "image_size", 0) or 0)
  if name in EMBEDDED_DATASETS:
    splits = embedded.load_mnist_embedded() if name == "mnist_embedded" else embedded.load_digits_8x8()
    if image_size and image_size != splits["train"]["image"].shape[1]:
      splits = _resize_arrays(splits, image_size)
    sources = {k: ArraySource(v) for k, v in splits.items()}
    shape = tuple(splits["train"]["image"].shape[1:])
    digits = tuple(str(k) for k in range(10))
    info = DatasetInfo(name, "image", shape, 10, len(sources["train"]), len(sources["test"]), class_names=digits)
  elif name in OWN_DATASETS:
    info, sources = _load_own(name, config)
  elif name in toy.TOYS:
    spec = toy.TOYS[name]
    sizes = {"train": int(_cfg(config, "toy_num_train", 20000)), "test": int(_cfg(config, "toy_num_test", 5000))}
    sources = {
      split: ArraySource(toy.make_toy_split(name, n, seed)) for seed, (split, n) in enumerate(sizes.items())
    }
    info = DatasetInfo(name, "vector", (spec.dim,), spec.num_components, sizes["train"], sizes["test"])
  elif name in tfds_input.TFDS_DATASETS:
    spec = tfds_input.TFDS_DATASETS[name]
    kwargs = dict(
      data_dir=_cfg(config, "data_dir", None),
      download=bool(_cfg(config, "download", False)),
      image_size=image_size,
    )
    sources = {
      "train": tfds_input.TfdsSource(name, spec.train_split, **kwargs),
      "test": tfds_input.TfdsSource(name, spec.test_split, **kwargs),
    }
    info = DatasetInfo(
      name,
      "image",
      tfds_input.image_shape(name, image_size),
      spec.num_classes,
      len(sources["train"]),
      len(sources["test"]),
    )
  else:
    raise DataConfigError(f"unknown dataset name {name!r}; valid names: {', '.join(DATASET_NAMES)}")
  return info, sources
