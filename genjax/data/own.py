"""Your own images: a folder of image files or an .npz of arrays, and their seeded split.

* ``load_folder(path, channels, image_size, cache)``: every image under ``path``, either
  in one subfolder per class (labels = the sorted subfolder names) or all at the top
  level (no labels). Decoded once with Pillow into ``uint8[N, H, W, C]`` and, with
  ``cache``, kept as an ``.npy`` under ``$GENJAX_CACHE/own_data`` (default
  ``~/.cache/genjax``) keyed by the file list, sizes, mtimes and settings, so later runs
  memory-map it instead of decoding again. Nothing is ever written under ``path``.
* ``load_npz(path, channels, image_size)``: arrays ``image`` (+ ``label``,
  ``class_names``) or the pre-split ``train_image`` / ``test_image`` (+ ``train_label``
  / ``test_label``, ``class_names``).
* ``split_indices(labels, n, test_fraction, seed)``: the fixed train/test split,
  stratified by class.

Channel rule (``channels``): 1 = grey, 3 = RGB, 0 = auto: 1 if every image is grey,
else 3. A folder image counts as colour when its Pillow mode is a colour mode (RGB,
RGBA, CMYK, YCbCr, ...) or it has a palette with a non-grey entry; an alpha channel is
dropped (RGBA -> RGB, LA -> L), 16-bit grey is scaled to 8 bits, grey images are
repeated to RGB and colour images reduced to grey with Pillow's ITU-R 601-2 luma when
needed, and EXIF orientation is applied. ``image_size > 0`` centre-crops each image to
a square and resizes it to ``image_size`` x ``image_size`` (PIL bilinear, antialiased
when downscaling).

Every problem raises ``DataConfigError`` with a one-line message naming the file or value.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from genjax.data.errors import DataConfigError
from genjax.data.tfds_input import center_crop_resize

log = logging.getLogger("genjax")

# Extensions of the formats read from a folder (lower case); '.webp' joins when Pillow has WebP.
BASE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
# Folder entries skipped everywhere (besides names starting with '.').
SKIPPED_NAMES = ("__MACOSX",)
# Bumping this invalidates every cached decode (change it when decoding changes).
CACHE_FORMAT = 1
# Threads decoding a folder (at most the CPU count).
DECODE_THREADS = 8
# Long preparations log a progress line about every tenth of the way from this many items.
PROGRESS_MIN_ITEMS = 1000

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_NPZ_SINGLE = ("image", "label")
_NPZ_SPLIT = ("train_image", "test_image", "train_label", "test_label")


@dataclasses.dataclass(frozen=True)
class OwnData:
  """Own images, loaded.

  Attributes:
    image: ``uint8[N, H, W, C]`` (a read-only memory map of the cache, or in memory).
    label: ``int32[N]``, or None for unlabelled data.
    class_names: names of labels 0..K-1; () when unlabelled.
    fingerprint: hex digest of the files and settings that produced ``image``.
    split: for a pre-split npz, ``{'train': int64[N_tr], 'test': int64[N_te]}`` indices
      into ``image``; None when ``split_indices`` decides.
  """

  image: np.ndarray
  label: np.ndarray | None
  class_names: tuple[str, ...]
  fingerprint: str
  split: dict[str, np.ndarray] | None = None


# ------------------------------------------------------------------------- progress


def progress(items: Iterable, total: int, what: str) -> Iterator:
  """Yields ``items``, showing progress for long runs.

  A tqdm bar when stderr is a terminal; otherwise, from ``PROGRESS_MIN_ITEMS`` items
  on, an INFO line on the 'genjax' logger about every tenth of the way. A final line
  gives the count and time either way.
  """
  start = time.perf_counter()
  if total >= PROGRESS_MIN_ITEMS and sys.stderr.isatty():
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    yield from tqdm(items, total=total, desc=what, file=sys.stderr, leave=False)
  else:
    every = max(1, -(-total // 10)) if total >= PROGRESS_MIN_ITEMS else 0
    for i, item in enumerate(items):
      yield item
      if every and (i + 1) % every == 0 and i + 1 < total:
        log.info(
          "%s: %d/%d (%.0f%%, %.1f s)", what, i + 1, total, 100 * (i + 1) / total, time.perf_counter() - start
        )
  log.info("%s: %d done in %.1f s", what, total, time.perf_counter() - start)


# --------------------------------------------------------------------------- folder


def image_extensions() -> tuple[str, ...]:
  """Lower-case file extensions read from a folder."""
  from PIL import features  # pylint: disable=g-import-not-at-top

  return BASE_EXTENSIONS + ((".webp",) if features.check("webp") else ())


def _skipped(name: str) -> bool:
  return name.startswith(".") or name in SKIPPED_NAMES


def _images_under(root: str, top: str, extensions: tuple[str, ...]) -> list[str]:
  """Paths relative to ``root`` ('/'-separated, sorted) of the images anywhere under ``top``."""
  found = []
  for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
    for f in filenames:
      if not _skipped(f) and os.path.splitext(f)[1].lower() in extensions:
        found.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
  return sorted(found)


def list_folder(root: str) -> tuple[list[str], np.ndarray | None, tuple[str, ...]]:
  """Lists the images of a folder dataset.

  Returns:
    ``(files, labels, class_names)``: ``files`` relative to ``root`` in sorted order
    (class by class), ``labels`` ``int32[N]`` (index into the sorted class folder
    names ``class_names``), or ``(files, None, ())`` for a flat folder.
  """
  if not root:
    raise DataConfigError("data.path is empty; data.name='folder' needs data.path=DIR, a directory of images")
  if not os.path.exists(root):
    raise DataConfigError(f"data.path {root!r} does not exist; expected a directory of images")
  if not os.path.isdir(root):
    raise DataConfigError(
      f"data.path {root!r} is not a directory; data.name='folder' needs a directory of images "
      "(use data.name='npz' for an .npz file)"
    )
  extensions = image_extensions()
  entries = sorted((e for e in os.scandir(root) if not _skipped(e.name)), key=lambda e: e.name)
  top = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in extensions]
  per_dir = {e.name: _images_under(root, e.path, extensions) for e in entries if e.is_dir()}
  classes = sorted(d for d, files in per_dir.items() if files)
  if top and classes:
    raise DataConfigError(
      f"data.path {root!r} has both images at the top level (e.g. {top[0]!r}) and class subfolders "
      f"(e.g. {classes[0]!r}); put every image in a class subfolder, or all of them at the top level"
    )
  if classes:
    empty = sorted(d for d, files in per_dir.items() if not files)
    if empty:
      raise DataConfigError(
        f"class folder {os.path.join(root, empty[0])!r} has no images ({', '.join(extensions)}); "
        "add images or remove it"
      )
    files = [f for d in classes for f in per_dir[d]]
    labels = np.concatenate([np.full(len(per_dir[d]), k, np.int32) for k, d in enumerate(classes)])
    return files, labels, tuple(classes)
  if top:
    return top, None, ()
  raise DataConfigError(
    f"no images found in data.path {root!r}: expected {', '.join(extensions)} files at its top level "
    "or in one subfolder per class"
  )


def _open(path: str):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    return Image.open(path)
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
    raise DataConfigError(f"cannot read image {path!r}: {type(e).__name__}: {e}") from None


def _is_grey(im) -> bool:
  if im.mode in _GREY_MODES:
    return True
  if im.mode in ("P", "PA"):
    palette = np.asarray(im.getpalette() or [], np.int64)
    rgb = palette[: len(palette) // 3 * 3].reshape(-1, 3)
    return bool(np.all(rgb == rgb[:, :1]))
  return False


def _oriented_size(im) -> tuple[int, int]:
  """(H, W) after the EXIF orientation is applied."""
  h, w = im.height, im.width
  try:
    orientation = im.getexif().get(0x0112, 1)
  except Exception:  # pylint: disable=broad-except  # a broken EXIF block: ignored, as exif_transpose does
    orientation = 1
  return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_header(path: str) -> tuple[tuple[int, int], bool]:
  """``((H, W), is_grey)`` of an image file without decoding its pixels."""
  with _open(path) as im:
    try:
      return _oriented_size(im), _is_grey(im)
    except (OSError, SyntaxError, ValueError) as e:
      raise DataConfigError(f"cannot read image {path!r}: {type(e).__name__}: {e}") from None


def decode_image(path: str, channels: int) -> np.ndarray:
  """Decodes one image file (first frame) to ``uint8[H, W, channels]``, channels 1 or 3."""
  from PIL import ImageOps  # pylint: disable=g-import-not-at-top

  with _open(path) as im:
    try:
      im.load()
      im = ImageOps.exif_transpose(im)
      if im.mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
          raise DataConfigError(
            f"image {path!r} has mode {im.mode} with values in [{a.min()}, {a.max()}]; expected 0..65535 (16-bit)"
          )
        grey = ((a * 255 + 32767) // 65535).astype(np.uint8)
        out = grey[..., None] if channels == 1 else np.repeat(grey[..., None], 3, axis=-1)
      elif im.mode == "F":
        raise DataConfigError(f"image {path!r} has floating-point pixels (mode F); expected 8- or 16-bit images")
      else:
        target = "L" if channels == 1 else "RGB"
        out = np.asarray(im if im.mode == target else im.convert(target))
        out = out[..., None] if channels == 1 else out
    except (OSError, SyntaxError, ValueError, EOFError) as e:
      if isinstance(e, DataConfigError):
        raise
      raise DataConfigError(f"cannot decode image {path!r}: {type(e).__name__}: {e}") from None
  return np.ascontiguousarray(out, np.uint8)


def cache_root() -> str:
  """``$GENJAX_CACHE`` or ``~/.cache/genjax``."""
  return os.environ.get("GENJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genjax")


def _digest(spec: dict) -> str:
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _folder_fingerprint(root: str, files: Sequence[str], channels: int, image_size: int) -> str:
  stats = []
  for f in files:
    st = os.stat(os.path.join(root, f))
    stats.append([f, st.st_size, st.st_mtime_ns])
  spec = dict(
    format=CACHE_FORMAT, root=os.path.abspath(root), files=stats, channels=channels, image_size=image_size
  )
  return _digest(spec)


def _probe(root: str, files: Sequence[str], channels: int, image_size: int) -> tuple[tuple[int, int, int], int]:
  """Reads every header: the output (H, W, C) and the resolved channel count."""
  sizes, any_colour = {}, False
  for f in progress(files, len(files), f"folder {root}: reading image headers"):
    size, grey = read_header(os.path.join(root, f))
    sizes.setdefault(size, f)
    any_colour = any_colour or not grey
  c = channels or (3 if any_colour else 1)
  if image_size:
    return (image_size, image_size, c), c
  if len(sizes) > 1:
    (s1, f1), (s2, f2) = list(sizes.items())[:2]
    raise DataConfigError(
      f"images differ in size: {os.path.join(root, f1)!r} is {s1[0]}x{s1[1]} (HxW) but "
      f"{os.path.join(root, f2)!r} is {s2[0]}x{s2[1]}; set data.image_size > 0 to centre-crop and resize them"
    )
  (h, w), _ = next(iter(sizes.items()))
  return (h, w, c), c


def _decode_one(path: str, c: int, image_size: int) -> np.ndarray:
  image = decode_image(path, c)
  return center_crop_resize(image, image_size) if image_size else image


def _decoded_in_order(paths: Sequence[str], c: int, image_size: int) -> Iterator[np.ndarray]:
  """Decodes ``paths`` in order on up to ``DECODE_THREADS`` threads (Pillow releases the GIL)."""
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  workers = max(1, min(DECODE_THREADS, cpus))
  with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="genjax-decode") as pool:
    pending: collections.deque = collections.deque()
    try:
      for path in paths:
        pending.append(pool.submit(_decode_one, path, c, image_size))
        if len(pending) >= 4 * workers:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for future in pending:
        future.cancel()


def _decode_into(out: np.ndarray, root: str, files: Sequence[str], c: int, image_size: int) -> None:
  paths = [os.path.join(root, f) for f in files]
  decoded = _decoded_in_order(paths, c, image_size)
  shown = progress(zip(paths, decoded, strict=True), len(paths), f"folder {root}: decoding {len(paths)} images")
  for i, (path, image) in enumerate(shown):
    if image.shape != out.shape[1:]:  # the header promised another size (a lying file)
      raise DataConfigError(f"image {path!r} decoded to shape {image.shape}, expected {out.shape[1:]}")
    out[i] = image


def _memory_bytes() -> int:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return 0


def _gib(n: int) -> str:
  """A byte count for messages: '3.2 MiB', '1.50 GiB'."""
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def load_folder(root: str, channels: int = 0, image_size: int = 0, cache: bool = True) -> OwnData:
  """Loads a folder dataset (see the module docstring); decodes once, or reuses the cache."""
  files, labels, class_names = list_folder(root)
  fingerprint = _folder_fingerprint(root, files, channels, image_size)
  path = os.path.join(cache_root(), "own_data", f"folder-{fingerprint[:24]}.npy")
  if cache and os.path.exists(path):
    try:
      image = np.load(path, mmap_mode="r")
      ok = image.dtype == np.uint8 and image.ndim == 4 and image.shape[0] == len(files)
    except (OSError, ValueError) as e:
      ok = False
      log.warning("ignoring unreadable cache %s (%s)", path, e)
    if ok:
      log.info("folder %s: %d images %s from the cache %s", root, len(files), image.shape[1:], path)
      return OwnData(image, labels, class_names, fingerprint)
  shape, c = _probe(root, files, channels, image_size)
  nbytes = len(files) * int(np.prod(shape))
  if cache:
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      free = shutil.disk_usage(os.path.dirname(path)).free
      if free < nbytes + (64 << 20):
        raise OSError(f"{_gib(free)} free, {_gib(nbytes)} needed")
      out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files),) + shape)
      _decode_into(out, root, files, c, image_size)
      out.flush()
      del out
      os.replace(tmp, path)
    except OSError as e:
      log.warning("folder %s: cannot cache decoded images in %s (%s); decoding into memory", root, path, e)
      cache = False
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  if cache:
    log.info("folder %s: cached %s of decoded images in %s", root, _gib(nbytes), path)
    return OwnData(np.load(path, mmap_mode="r"), labels, class_names, fingerprint)
  memory = _memory_bytes()
  if memory and nbytes > memory // 2:
    raise DataConfigError(
      f"decoding data.path {root!r} ({len(files)} images of {shape}) needs {_gib(nbytes)}, more than half "
      f"of this machine's {_gib(memory)}; use data.cache=True (decodes to disk, memory-mapped) with a writable "
      "$GENJAX_CACHE, or a smaller data.image_size"
    )
  out = np.empty((len(files),) + shape, np.uint8)
  _decode_into(out, root, files, c, image_size)
  return OwnData(out, labels, class_names, fingerprint)


# ------------------------------------------------------------------------------ npz


def luma(rgb: np.ndarray) -> np.ndarray:
  """``uint8[..., 3] -> uint8[..., 1]``: ITU-R 601-2 luma exactly as Pillow's RGB -> L."""
  r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def _check_npz_image(path: str, key: str, image: np.ndarray) -> np.ndarray:
  if image.dtype != np.uint8:
    raise DataConfigError(
      f"npz {path!r}: {key!r} has dtype {image.dtype.name}; expected uint8 pixel values 0..255 "
      "(e.g. np.round(x * 255).astype(np.uint8) for floats in [0, 1])"
    )
  if image.ndim == 3:
    image = image[..., None]
  if image.ndim != 4 or image.shape[-1] not in (1, 3):
    raise DataConfigError(
      f"npz {path!r}: {key!r} has shape {list(image.shape)}; expected [N, H, W, C] with C = 1 or 3, or [N, H, W]"
    )
  if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
    raise DataConfigError(f"npz {path!r}: {key!r} has shape {list(image.shape)}; expected at least one image")
  return image


def _check_npz_label(path: str, key: str, label: np.ndarray, n: int, num_names: int) -> np.ndarray:
  if not np.issubdtype(label.dtype, np.integer):
    raise DataConfigError(f"npz {path!r}: {key!r} has dtype {label.dtype.name}; expected integer class labels")
  if label.shape != (n,):
    raise DataConfigError(
      f"npz {path!r}: {key!r} has shape {list(label.shape)}; expected [{n}], one label per image"
    )
  if label.min() < 0 or (num_names and label.max() >= num_names):
    bad = int(label.min()) if label.min() < 0 else int(label.max())
    upper = f"[0, {num_names})" if num_names else ">= 0"
    raise DataConfigError(f"npz {path!r}: {key!r} has the value {bad}; expected labels in {upper}")
  return label.astype(np.int32)


def _convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
  c = image.shape[-1]
  if not channels or channels == c:
    return image
  return luma(image) if channels == 1 else np.repeat(image, 3, axis=-1)


def _resize_all(image: np.ndarray, size: int, what: str) -> np.ndarray:
  out = np.empty((image.shape[0], size, size, image.shape[-1]), np.uint8)
  for i, im in enumerate(progress(image, len(image), what)):
    out[i] = center_crop_resize(im, size)
  return out


def load_npz(path: str, channels: int = 0, image_size: int = 0) -> OwnData:
  """Loads an npz dataset (see the module docstring) into memory."""
  if not path:
    raise DataConfigError("data.path is empty; data.name='npz' needs data.path=FILE.npz")
  if not os.path.exists(path):
    raise DataConfigError(f"data.path {path!r} does not exist; expected an .npz file of arrays")
  if os.path.isdir(path):
    raise DataConfigError(
      f"data.path {path!r} is a directory; data.name='npz' needs an .npz file (or use 'folder')"
    )
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DataConfigError(f"cannot read npz {path!r}: {type(e).__name__}: {e}") from None
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise DataConfigError(
      f"data.path {path!r} holds a single array; expected an .npz archive with an 'image' array"
    )
  with archive:
    keys = set(archive.files)
    single, split = keys & set(_NPZ_SINGLE), keys & set(_NPZ_SPLIT)
    if single and split:
      raise DataConfigError(
        f"npz {path!r} mixes the single form ({sorted(single)}) with the pre-split form ({sorted(split)}); use one"
      )
    if not single and not split:
      raise DataConfigError(
        f"npz {path!r} has no 'image' array (has {sorted(keys)}); expected 'image' uint8[N, H, W, C] or "
        "[N, H, W] (+ optional 'label' int[N]), or 'train_image' and 'test_image'"
      )
    unknown = sorted(keys - set(_NPZ_SINGLE + _NPZ_SPLIT + ("class_names",)))
    if unknown:
      raise DataConfigError(
        f"npz {path!r} has unexpected arrays {unknown}; expected 'image' (+ 'label', 'class_names') or "
        "'train_image'/'test_image' (+ 'train_label'/'test_label', 'class_names')"
      )
    if split and not {"train_image", "test_image"} <= keys:
      raise DataConfigError(
        f"npz {path!r} has {sorted(split)}; the pre-split form needs 'train_image' and 'test_image'"
      )
    if split and (("train_label" in keys) != ("test_label" in keys)):
      raise DataConfigError(
        f"npz {path!r} has {sorted(split)}; give both 'train_label' and 'test_label' or neither"
      )
    if single and "image" not in keys:
      raise DataConfigError(f"npz {path!r} has 'label' but no 'image' array")
    arrays = {}
    for k in sorted(keys):
      try:
        arrays[k] = archive[k]
      except ValueError as e:
        if "allow_pickle" not in str(e):
          raise DataConfigError(f"cannot read array {k!r} of npz {path!r}: {e}") from None
        raise DataConfigError(
          f"npz {path!r}: {k!r} is an object array (pickled Python objects), which genjax does not load; "
          "save numbers or strings (e.g. np.array(names, dtype=str))"
        ) from None
      except (OSError, EOFError) as e:
        raise DataConfigError(f"cannot read array {k!r} of npz {path!r}: {type(e).__name__}: {e}") from None

  names = ()
  if "class_names" in arrays:
    cn = arrays.pop("class_names")
    if cn.dtype.kind not in "US" or cn.ndim != 1:
      raise DataConfigError(
        f"npz {path!r}: 'class_names' has dtype {cn.dtype.name} and shape {list(cn.shape)}; expected a 1-D "
        "string array (np.array(['cat', 'dog']))"
      )
    names = tuple(str(v.decode() if isinstance(v, bytes) else v) for v in cn.tolist())
  prefixes = ("",) if single else ("train_", "test_")
  images, labels = [], []
  for p in prefixes:
    image = _check_npz_image(path, p + "image", arrays[p + "image"])
    images.append(image)
    if p + "label" in arrays:
      labels.append(_check_npz_label(path, p + "label", arrays[p + "label"], image.shape[0], len(names)))
  if names and not labels:
    raise DataConfigError(f"npz {path!r} has 'class_names' but no labels")
  if not image_size and len({im.shape[1:] for im in images}) > 1:
    raise DataConfigError(
      f"npz {path!r}: 'train_image' has images of {images[0].shape[1:]} but 'test_image' of "
      f"{images[1].shape[1:]}; they must match (or set data.image_size > 0)"
    )
  c = channels or max(im.shape[-1] for im in images)
  images = [_convert_channels(im, c) for im in images]
  if image_size:
    images = [
      im if im.shape[1:3] == (image_size, image_size) else _resize_all(im, image_size, f"npz {path}: resizing")
      for im in images
    ]
  label = np.concatenate(labels) if labels else None
  if label is not None and not names:
    names = tuple(str(k) for k in range(int(label.max()) + 1))
  st = os.stat(path)
  fingerprint = _digest(
    dict(
      format=CACHE_FORMAT,
      path=os.path.abspath(path),
      size=st.st_size,
      mtime=st.st_mtime_ns,
      channels=channels,
      image_size=image_size,
    )
  )
  image = images[0] if single else np.concatenate(images)
  presplit = None
  if not single:
    n_train = images[0].shape[0]
    presplit = {
      "train": np.arange(n_train, dtype=np.int64),
      "test": np.arange(n_train, len(image), dtype=np.int64),
    }
  return OwnData(image, label, names, fingerprint, presplit)


# ---------------------------------------------------------------------------- split


def split_indices(
  labels: np.ndarray | None, n: int, test_fraction: float, seed: int, class_names: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
  """The fixed train/test split of N examples: ``(train int64[], test int64[])``, ascending.

  The test split has ``T = round(test_fraction * N)`` examples. Without labels they are
  the first T of ``np.random.default_rng(seed).permutation(N)``. With labels the split
  is stratified: class c (with n_c members) gets ``floor(test_fraction * n_c)`` test
  examples, the T - sum of those left over go one each to the classes with the largest
  remainders (ties to the lower label), and class c's test examples are the first of its
  members (ascending index) shuffled by ``np.random.default_rng([seed, c])``. The split
  depends only on the labels' order and the arguments, not on the training seed.

  Raises:
    DataConfigError: an empty train or test split, or a class left with no training
      example.
  """
  n = int(n)
  t = int(np.floor(test_fraction * n + 0.5))
  if t < 1 or t >= n:
    raise DataConfigError(
      f"data.test_fraction={test_fraction} of {n} images gives {t} test and {n - t} train images; "
      "both splits need at least one image"
    )
  test = np.zeros(n, bool)
  if labels is None:
    test[np.random.default_rng(seed).permutation(n)[:t]] = True
  else:
    classes, counts = np.unique(labels, return_counts=True)
    quota = test_fraction * counts
    take = np.floor(quota).astype(np.int64)
    extra = t - int(take.sum())
    order = np.lexsort((classes, -(quota - take)))  # largest remainder first, then lower label
    take[order[:extra]] += 1
    for c, k, count in zip(classes, take, counts, strict=True):
      if k >= count:
        name = class_names[c] if c < len(class_names) else str(c)
        raise DataConfigError(
          f"data.test_fraction={test_fraction} leaves class {name!r} ({count} images) with no training example; "
          "lower data.test_fraction or add images"
        )
      members = np.flatnonzero(labels == c)
      test[np.random.default_rng([seed, int(c)]).permutation(members)[:k]] = True
  return np.flatnonzero(~test).astype(np.int64), np.flatnonzero(test).astype(np.int64)
