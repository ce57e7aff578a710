"""Own data: folder and npz datasets, their seeded split and decode cache, and balanced selection."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys

import numpy as np
import pytest
from PIL import Image

from genjax import data
from genjax.configs.default import get_base_config
from genjax.data import own, select, tfds_input
from genjax.data.errors import DataConfigError
from tests.helpers import run_module


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
  path = str(tmp_path / "genjax_cache")
  monkeypatch.setenv("GENJAX_CACHE", path)
  return path


def own_config(name="folder", **overrides):
  cfg = get_base_config().data
  cfg.name = name
  cfg.update(overrides)
  return cfg


def save(path, array, fmt=None, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format=fmt, **kw)


def random_images(n, h=6, w=6, c=None, seed=0):
  rng = np.random.default_rng(seed)
  shape = (n, h, w) if c is None else (n, h, w, c)
  return rng.integers(0, 256, shape, dtype=np.uint8)


def make_class_folder(root, counts, h=6, w=6, seed=0):
  """Class folders of random grey PNGs; returns {image bytes: class name}."""
  expected = {}
  images = random_images(sum(counts.values()), h, w, seed=seed)
  i = 0
  for name, count in counts.items():
    for j in range(count):
      save(os.path.join(root, name, f"img_{j:03d}.png"), images[i])
      expected[images[i][..., None].tobytes()] = name
      i += 1
  return expected


def all_rows(source):
  return source[np.arange(len(source))]


def snapshot(root):
  out = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      p = os.path.join(dirpath, f)
      out[p] = (os.path.getsize(p), os.stat(p).st_mtime_ns)
  return out


# ------------------------------------------------------------------------- folder


def test_folder_with_classes(tmp_path, cache_dir):
  root = str(tmp_path / "pets")
  expected = make_class_folder(root, {"dog": 7, "cat": 5, "bird": 4})
  # Ignored: non-image files, hidden files and folders.
  (tmp_path / "pets" / "README.txt").write_text("not an image")
  save(os.path.join(root, "cat", ".hidden.png"), random_images(1)[0])
  save(os.path.join(root, ".thumbs", "x.png"), random_images(1)[0])
  before = snapshot(root)

  info, splits = data.load_dataset(own_config(path=root, test_fraction=0.25))
  assert info.class_names == ("bird", "cat", "dog") and info.num_classes == 3
  assert info.shape == (6, 6, 1) and info.kind == "image"
  assert (info.num_train, info.num_test) == (12, 4)
  seen = []
  for split in ("train", "test"):
    batch = all_rows(splits[split])
    data.validate_batch(batch, info)
    for image, label in zip(batch["image"], batch["label"], strict=True):
      assert info.class_names[label] == expected[image.tobytes()]
      seen.append(image.tobytes())
  assert sorted(seen) == sorted(expected)  # every image exactly once over the two splits
  assert snapshot(root) == before  # nothing written into the dataset directory
  assert os.listdir(os.path.join(cache_dir, "own_data"))


def test_flat_folder_has_no_labels(tmp_path):
  root = str(tmp_path / "flat")
  images = random_images(10, 5, 7, c=3)
  for i, im in enumerate(images):
    save(os.path.join(root, f"{i}.png"), im)
  info, splits = data.load_dataset(own_config(path=root))
  assert info.num_classes == 0 and info.class_names == ()
  assert info.shape == (5, 7, 3) and (info.num_train, info.num_test) == (9, 1)
  batch = all_rows(splits["train"])
  assert set(batch) == {"image"}
  data.validate_batch(batch, info)
  got = np.concatenate([batch["image"], all_rows(splits["test"])["image"]])
  assert sorted(g.tobytes() for g in got) == sorted(im.tobytes() for im in images)


def test_formats_and_channel_rule(tmp_path):
  root = str(tmp_path / "mixed")
  rng = np.random.default_rng(1)
  grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
  rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  rgba = np.concatenate([rgb, rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)], axis=-1)
  sixteen = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
  save(os.path.join(root, "a_grey.png"), grey)
  save(os.path.join(root, "b_rgba.png"), rgba)
  save(os.path.join(root, "c_grey.bmp"), grey)
  Image.fromarray(sixteen).save(os.path.join(root, "d_16bit.png"))
  # An animated GIF: only the first frame is read.
  frames = [Image.fromarray(grey), Image.fromarray(255 - grey)]
  frames[0].save(os.path.join(root, "e_anim.gif"), save_all=True, append_images=frames[1:])
  save(os.path.join(root, "f_rgb.webp"), rgb, lossless=True)
  save(os.path.join(root, "g_rgb.jpg"), rgb, quality=95)
  expected_grey = {
    "a_grey.png": grey,
    "c_grey.bmp": grey,
    "d_16bit.png": ((sixteen.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8),
    "e_anim.gif": grey,
  }
  files, _, _ = own.list_folder(root)
  assert files == sorted(os.listdir(root))

  # Auto: some images are colour, so C = 3; grey images are repeated, alpha dropped.
  loaded = own.load_folder(root, channels=0, cache=False).image
  assert loaded.shape == (7, 8, 8, 3)
  by_name = dict(zip(files, loaded, strict=True))
  for name, g in expected_grey.items():
    np.testing.assert_array_equal(by_name[name], np.repeat(g[..., None], 3, -1), err_msg=name)
  np.testing.assert_array_equal(by_name["b_rgba.png"], rgb)
  np.testing.assert_array_equal(by_name["f_rgb.webp"], rgb)
  jpeg = np.asarray(
    Image.open(os.path.join(root, "g_rgb.jpg")).convert("RGB")
  )  # lossy: compare to Pillow's decode
  np.testing.assert_array_equal(by_name["g_rgb.jpg"], jpeg)

  # Forced grey: colour images become Pillow's luma, the same formula as own.luma.
  loaded = own.load_folder(root, channels=1, cache=False).image
  by_name = dict(zip(files, loaded[..., 0], strict=True))
  np.testing.assert_array_equal(by_name["b_rgba.png"], np.asarray(Image.fromarray(rgb).convert("L")))
  np.testing.assert_array_equal(by_name["b_rgba.png"], own.luma(rgb)[..., 0])
  for name, g in expected_grey.items():
    np.testing.assert_array_equal(by_name[name], g, err_msg=name)

  # Only grey images (including a palette GIF with grey entries): auto gives C = 1.
  for name in ("b_rgba.png", "f_rgb.webp", "g_rgb.jpg"):
    os.remove(os.path.join(root, name))
  assert own.load_folder(root, cache=False).image.shape == (4, 8, 8, 1)


def test_exif_orientation_is_applied(tmp_path):
  root = str(tmp_path / "photos")
  im = random_images(1, 4, 10, c=3)[0]  # H=4, W=10
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  for i in range(4):
    save(os.path.join(root, f"{i}.jpg"), im, exif=exif.tobytes())
  loaded = own.load_folder(root, cache=False).image
  assert loaded.shape == (4, 10, 4, 3)


def test_image_size_centre_crops_and_resizes(tmp_path):
  root = str(tmp_path / "sizes")
  wide, tall = random_images(1, 12, 20, c=3, seed=1)[0], random_images(1, 30, 9, c=3, seed=2)[0]
  save(os.path.join(root, "a", "wide.png"), wide)
  save(os.path.join(root, "b", "tall.png"), tall)
  save(os.path.join(root, "a", "wide2.png"), wide)
  save(os.path.join(root, "b", "tall2.png"), tall)
  loaded = own.load_folder(root, image_size=8, cache=False).image
  assert loaded.shape == (4, 8, 8, 3)
  np.testing.assert_array_equal(loaded[0], tfds_input.center_crop_resize(wide, 8))
  np.testing.assert_array_equal(loaded[2], tfds_input.center_crop_resize(tall, 8))
  # Centre crop: the 12x12 middle of the 12x20 image, resized.
  np.testing.assert_array_equal(tfds_input.center_crop_resize(wide, 12), wide[:, 4:16])


def test_mixed_sizes_without_image_size_name_two_files(tmp_path):
  root = str(tmp_path / "mixed")
  save(os.path.join(root, "a.png"), random_images(1, 6, 6)[0])
  save(os.path.join(root, "b.png"), random_images(1, 6, 6)[0])
  save(os.path.join(root, "c.png"), random_images(1, 7, 5)[0])
  with pytest.raises(DataConfigError, match=r"'.*a\.png' is 6x6 \(HxW\) but '.*c\.png' is 7x5.*data\.image_size"):
    data.load_dataset(own_config(path=root))


# ------------------------------------------------------------------------- errors


def test_folder_errors_name_the_path(tmp_path):
  def fails(match, **kw):
    with pytest.raises(DataConfigError, match=match):
      data.load_dataset(own_config(**kw))

  missing = str(tmp_path / "nope")
  fails(re.escape(f"data.path {missing!r} does not exist"), path=missing)
  fails("data.path is empty", path="")
  (tmp_path / "file.txt").write_text("x")
  fails(r"is not a directory.*data.name='npz'", path=str(tmp_path / "file.txt"))
  empty = tmp_path / "empty"
  (empty / "sub").mkdir(parents=True)
  (empty / "notes.txt").write_text("x")
  fails(re.escape(f"no images found in data.path {str(empty)!r}"), path=str(empty))

  both = str(tmp_path / "both")
  save(os.path.join(both, "top.png"), random_images(1)[0])
  save(os.path.join(both, "cls", "x.png"), random_images(1)[0])
  fails(r"both images at the top level \(e\.g\. 'top\.png'\) and class subfolders \(e\.g\. 'cls'\)", path=both)

  hollow = str(tmp_path / "hollow")
  make_class_folder(hollow, {"a": 3, "b": 3})
  os.makedirs(os.path.join(hollow, "c_empty"))
  fails(re.escape(f"class folder {os.path.join(hollow, 'c_empty')!r} has no images"), path=hollow)


def test_corrupt_images_are_named(tmp_path):
  root = str(tmp_path / "bad")
  make_class_folder(root, {"a": 3, "b": 3})
  garbage = os.path.join(root, "a", "garbage.png")
  with open(garbage, "wb") as f:
    f.write(b"definitely not a png")
  with pytest.raises(DataConfigError, match=re.escape(f"cannot read image {garbage!r}")):
    data.load_dataset(own_config(path=root))
  os.remove(garbage)

  truncated = os.path.join(root, "b", "truncated.png")
  buf = io.BytesIO()
  Image.fromarray(random_images(1, 64, 64)[0]).save(buf, format="PNG")
  with open(truncated, "wb") as f:
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
  with pytest.raises(DataConfigError, match=re.escape(f"cannot decode image {truncated!r}")):
    data.load_dataset(own_config(path=root, image_size=6))


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("test_fraction", 0.0, "data.test_fraction must be a number in (0, 1), got 0.0"),
    ("test_fraction", 1.0, "data.test_fraction must be a number in (0, 1), got 1.0"),
    ("test_fraction", 1.5, "data.test_fraction must be a number in (0, 1), got 1.5"),
    ("split_seed", -1, "data.split_seed must be an integer >= 0, got -1"),
    ("channels", 2, "data.channels must be 0 (auto), 1 (grey) or 3 (RGB), got 2"),
    ("image_size", -8, "data.image_size must be an integer >= 0 (0 = native), got -8"),
  ],
)
def test_bad_settings(tmp_path, key, value, match):
  root = str(tmp_path / "ok")
  make_class_folder(root, {"a": 3, "b": 3})
  cfg = own_config(path=root)
  cfg[key] = value
  with pytest.raises(DataConfigError, match=re.escape(match)):
    data.load_dataset(cfg)


def test_split_errors(tmp_path):
  root = str(tmp_path / "small")
  make_class_folder(root, {"a_rare": 1, "b_common": 3})
  # 4 images at 0.5: 2 test; quotas 0.5 and 1.5 tie on the remainder, the lower label takes the extra one,
  # which leaves 'a_rare' no train image.
  with pytest.raises(DataConfigError, match=r"leaves class 'a_rare' \(1 images\) with no training example"):
    data.load_dataset(own_config(path=root, test_fraction=0.5))
  with pytest.raises(DataConfigError, match=r"test_fraction=0.1 of 4 images gives 0 test and 4 train images"):
    data.load_dataset(own_config(path=root, test_fraction=0.1))


def test_missing_config_key_is_named(tmp_path):
  import ml_collections

  cfg = ml_collections.ConfigDict(dict(name="folder", image_size=0, path=str(tmp_path)))
  with pytest.raises(DataConfigError, match="the data config has no key 'test_fraction'"):
    data.load_dataset(cfg)


def test_unknown_name_is_a_data_config_error():
  with pytest.raises(DataConfigError, match="unknown dataset name 'folders'.*folder, npz"):
    data.load_dataset(own_config(name="folders"))


# --------------------------------------------------------------------------- npz


def test_npz_single_form(tmp_path):
  image = random_images(20, 5, 5, c=3)
  label = np.repeat(np.arange(4), 5)
  path = str(tmp_path / "d.npz")
  np.savez(path, image=image, label=label.astype(np.int64), class_names=np.array(["w", "x", "y", "z"]))
  info, splits = data.load_dataset(own_config("npz", path=path, test_fraction=0.2))
  assert info.class_names == ("w", "x", "y", "z") and info.shape == (5, 5, 3)
  assert (info.num_train, info.num_test) == (16, 4)
  test = all_rows(splits["test"])
  np.testing.assert_array_equal(np.sort(test["label"]), [0, 1, 2, 3])  # stratified: one per class
  for split in ("train", "test"):
    batch = all_rows(splits[split])
    data.validate_batch(batch, info)
    for im, lab in zip(batch["image"], batch["label"], strict=True):
      (row,) = np.flatnonzero((image == im).all(axis=(1, 2, 3)))
      assert label[row] == lab

  # [N, H, W] -> C = 1; labels without class_names are named by number; channels=3 repeats.
  np.savez(path, image=image[..., 0], label=label)
  info, splits = data.load_dataset(own_config("npz", path=path))
  assert info.shape == (5, 5, 1) and info.class_names == ("0", "1", "2", "3")
  info, splits = data.load_dataset(own_config("npz", path=path, channels=3))
  im = all_rows(splits["train"])["image"]
  assert im.shape[-1] == 3 and (im == im[..., :1]).all()

  # channels=1 reduces colour exactly as Pillow does; image_size crops and resizes.
  np.savez(path, image=image)
  info, splits = data.load_dataset(own_config("npz", path=path, channels=1, image_size=4))
  assert info.num_classes == 0 and info.shape == (4, 4, 1)
  got = own.load_npz(path, channels=1).image
  for k in range(3):
    np.testing.assert_array_equal(got[k, ..., 0], np.asarray(Image.fromarray(image[k]).convert("L")))


def test_npz_pre_split_form(tmp_path):
  train, test = random_images(6, 4, 4, seed=1), random_images(3, 4, 4, seed=2)
  path = str(tmp_path / "s.npz")
  np.savez(path, train_image=train, test_image=test, train_label=[0, 1, 0, 1, 0, 1], test_label=[1, 0, 1])
  info, splits = data.load_dataset(own_config("npz", path=path, test_fraction=0.5))  # test_fraction unused
  assert (info.num_train, info.num_test, info.num_classes) == (6, 3, 2)
  np.testing.assert_array_equal(all_rows(splits["train"])["image"][..., 0], train)
  np.testing.assert_array_equal(all_rows(splits["test"])["image"][..., 0], test)
  np.testing.assert_array_equal(all_rows(splits["test"])["label"], [1, 0, 1])


def test_npz_errors_name_the_problem(tmp_path):
  path = str(tmp_path / "e.npz")
  image = random_images(4, 3, 3)

  def fails(match, **arrays):
    np.savez(path, **arrays)
    with pytest.raises(DataConfigError, match=match):
      data.load_dataset(own_config("npz", path=path, test_fraction=0.25))

  fails(r"has no 'image' array \(has \['pixels'\]\)", pixels=image)
  fails(r"has unexpected arrays \['labels'\]", image=image, labels=[0, 1, 0, 1])
  fails(r"'image' has dtype float32; expected uint8", image=image.astype(np.float32))
  fails(r"'image' has shape \[4, 9\]; expected \[N, H, W, C\]", image=image.reshape(4, 9))
  fails(r"'image' has shape \[4, 3, 3, 4\]; expected .* C = 1 or 3", image=np.zeros((4, 3, 3, 4), np.uint8))
  fails(r"'label' has shape \[3\]; expected \[4\], one label per image", image=image, label=[0, 1, 0])
  fails(r"'label' has dtype float64; expected integer", image=image, label=[0.0, 1.0, 0.0, 1.0])
  fails(r"'label' has the value -1; expected labels in >= 0", image=image, label=[0, -1, 0, 1])
  fails(
    r"'label' has the value 2; expected labels in \[0, 2\)",
    image=image,
    label=[0, 2, 0, 1],
    class_names=["a", "b"],
  )
  fails(r"mixes the single form \(\['image'\]\) with the pre-split form", image=image, train_image=image)
  fails(r"needs 'train_image' and 'test_image'", train_image=image)
  fails(
    r"give both 'train_label' and 'test_label' or neither",
    train_image=image,
    test_image=image,
    train_label=[0] * 4,
  )
  fails(
    r"'class_names' is an object array", image=image, label=[0, 1, 0, 1], class_names=np.array(["a", 1], object)
  )

  fails(
    r"'class_names' has dtype int64 and shape \[2\]; expected a 1-D string array",
    image=image,
    label=[0] * 4,
    class_names=[3, 4],
  )
  fails(
    r"'train_image' has images of \(3, 3, 1\) but 'test_image' of \(2, 2, 1\)",
    train_image=image,
    test_image=image[:, :2, :2],
  )

  np.save(str(tmp_path / "one.npy"), image)
  with pytest.raises(DataConfigError, match="holds a single array"):
    data.load_dataset(own_config("npz", path=str(tmp_path / "one.npy")))
  missing = str(tmp_path / "missing.npz")
  with pytest.raises(DataConfigError, match=re.escape(f"data.path {missing!r} does not exist")):
    data.load_dataset(own_config("npz", path=missing))
  with pytest.raises(DataConfigError, match="is a directory"):
    data.load_dataset(own_config("npz", path=str(tmp_path)))


# ------------------------------------------------------------------------- split


def brute_force_counts(counts, fraction):
  """Largest remainder apportionment of round(fraction * N) test images over classes."""
  t = int(np.floor(fraction * sum(counts) + 0.5))
  quotas = [fraction * c for c in counts]
  take = [int(np.floor(q)) for q in quotas]
  ranked = sorted(range(len(counts)), key=lambda k: (-(quotas[k] - take[k]), k))
  for k in ranked[: t - sum(take)]:
    take[k] += 1
  return take


@pytest.mark.parametrize("seed", range(5))
def test_split_is_stratified_and_deterministic(seed):
  rng = np.random.default_rng(seed)
  counts = rng.integers(3, 40, size=rng.integers(2, 8))
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  fraction = float(rng.uniform(0.05, 0.5))
  train, test = own.split_indices(labels, len(labels), fraction, seed=7)
  assert len(test) == int(np.floor(fraction * len(labels) + 0.5))
  assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
  got = np.bincount(labels[test], minlength=len(counts))
  np.testing.assert_array_equal(got, brute_force_counts(list(counts), fraction))
  assert np.all(np.abs(got - fraction * counts) < 1)
  again = own.split_indices(labels, len(labels), fraction, seed=7)
  np.testing.assert_array_equal(again[1], test)
  other = own.split_indices(labels, len(labels), fraction, seed=8)
  assert not np.array_equal(other[1], test)


def test_unlabelled_split_is_a_seeded_permutation():
  train, test = own.split_indices(None, 50, 0.2, seed=3)
  np.testing.assert_array_equal(test, np.sort(np.random.default_rng(3).permutation(50)[:10]))
  assert len(train) == 40


def test_folder_split_is_fixed_by_split_seed_not_training_seed(tmp_path):
  root = str(tmp_path / "s")
  make_class_folder(root, {"a": 10, "b": 10})

  def test_images(**kw):
    return all_rows(data.load_dataset(own_config(path=root, **kw))[1]["test"])["image"]

  first = test_images(split_seed=0)
  np.testing.assert_array_equal(test_images(split_seed=0), first)
  np.testing.assert_array_equal(test_images(split_seed=0, cache=False), first)
  assert not np.array_equal(test_images(split_seed=1), first)


def test_resume_continues_the_same_batches(tmp_path):
  root = str(tmp_path / "r")
  make_class_folder(root, {"a": 9, "b": 8, "c": 7})
  _, splits = data.load_dataset(own_config(path=root))
  it = data.BatchIterator(splits["train"], 8, seed=3)
  stream = [next(it) for _ in range(6)]  # crosses epoch boundaries (21 train images)
  _, splits = data.load_dataset(own_config(path=root))  # a new process: reloaded from the cache
  resumed = data.BatchIterator(splits["train"], 8, seed=3, position=3 * 8)
  for want in stream[3:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  it.close()
  resumed.close()


# ------------------------------------------------------------------------- cache


def test_decode_cache_is_reused_and_invalidated(tmp_path, monkeypatch, cache_dir):
  root = str(tmp_path / "c")
  make_class_folder(root, {"a": 4, "b": 4})
  first = own.load_folder(root)
  assert isinstance(first.image, np.memmap) and not first.image.flags.writeable
  files = os.listdir(os.path.join(cache_dir, "own_data"))
  assert len(files) == 1 and files[0].endswith(".npy")

  decoded = []
  real_decode = own.decode_image
  monkeypatch.setattr(own, "decode_image", lambda *a: decoded.append(a[0]) or real_decode(*a))
  np.testing.assert_array_equal(own.load_folder(root).image, first.image)
  assert decoded == []  # served from the cache

  changed = os.path.join(root, "b", "img_000.png")
  new = random_images(1, seed=99)[0]
  save(changed, new)
  os.utime(changed, ns=(1, 10**18))  # a different mtime for sure
  again = own.load_folder(root)
  assert len(decoded) == 8 and again.fingerprint != first.fingerprint
  np.testing.assert_array_equal(again.image[4, ..., 0], new)

  decoded.clear()
  own.load_folder(root, cache=False)
  own.load_folder(root, cache=False)
  assert len(decoded) == 16  # no cache: decoded every time
  assert len(os.listdir(os.path.join(cache_dir, "own_data"))) == 2


def test_unwritable_cache_falls_back_to_memory(tmp_path, monkeypatch, caplog):
  root = str(tmp_path / "u")
  make_class_folder(root, {"a": 3, "b": 3})
  blocker = tmp_path / "blocker"
  blocker.write_text("a file where the cache directory should be")
  monkeypatch.setenv("GENJAX_CACHE", str(blocker))
  with caplog.at_level(logging.WARNING, logger="genjax"):
    loaded = own.load_folder(root)
  assert not isinstance(loaded.image, np.memmap) and loaded.image.shape == (6, 6, 6, 1)
  assert "cannot cache decoded images" in caplog.text


def test_cache_keys_differ_between_folders(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  make_class_folder(a, {"x": 5, "y": 5}, seed=1)
  make_class_folder(b, {"x": 5, "y": 5}, seed=2)
  info_a = data.load_dataset(own_config(path=a))[0]
  info_b = data.load_dataset(own_config(path=b))[0]
  assert info_a.name == info_b.name == "folder" and info_a.shape == info_b.shape
  assert info_a.cache_key != info_b.cache_key and info_a.cache_key.startswith("folder-")
  assert data.load_dataset(own_config(path=a, split_seed=1))[0].cache_key != info_a.cache_key


def test_feature_classifier_cache_file_is_per_folder():
  """The Frechet feature classifier is cached by cache_key, so one folder's is never used for another's."""
  from genjax.eval.feature_classifier import ClassifierSettings, _cache_path

  cfg = ClassifierSettings()
  a = data.DatasetInfo("folder", "image", (8, 8, 1), 2, 9, 1, cache_key="folder-aaaa")
  b = data.DatasetInfo("folder", "image", (8, 8, 1), 2, 9, 1, cache_key="folder-bbbb")
  assert _cache_path(cfg, a) != _cache_path(cfg, b)
  assert os.path.basename(_cache_path(cfg, a)).startswith("folder-aaaa_8x8x1_")


# ---------------------------------------------------------------------- progress


def test_progress_is_logged_when_not_a_terminal(tmp_path, monkeypatch, caplog):
  monkeypatch.setattr(own, "PROGRESS_MIN_ITEMS", 20)
  root = str(tmp_path / "p")
  make_class_folder(root, {"a": 20, "b": 20})
  with caplog.at_level(logging.INFO, logger="genjax"):
    own.load_folder(root)
  lines = [r.getMessage() for r in caplog.records if "decoding 40 images" in r.getMessage()]
  assert [line.split(": ")[-1].split(" (")[0] for line in lines[:-1]] == [f"{k}/40" for k in range(4, 40, 4)]
  assert re.search(r"40 done in [0-9.]+ s$", lines[-1])


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(own, "PROGRESS_MIN_ITEMS", 20)
  monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
  assert list(own.progress(range(30), 30, "decoding things")) == list(range(30))
  assert "decoding things" in capsys.readouterr().err  # tqdm's bar


# ------------------------------------------------------------------ array source


def test_array_source_rows():
  arrays = {"image": np.arange(10)[:, None], "label": np.arange(10) * 2}
  src = data.ArraySource(arrays, rows=np.array([7, 2, 5]))
  assert len(src) == 3
  np.testing.assert_array_equal(src[np.array([2, 0])]["label"], [10, 14])
  with pytest.raises(ValueError, match=r"rows must be int\[M\] in \[0, 10\)"):
    data.ArraySource(arrays, rows=np.array([3, 10]))


# ----------------------------------------------------------------- balanced choice


def test_balanced_indices_round_robin():
  labels = np.array([2, 0, 0, 1, 0, 2, 0, 1, 0])  # class sizes 5, 2, 2
  idx = select.balanced_indices(labels, 9, seed=0)
  assert idx.dtype == np.int64 and sorted(idx) == list(range(9))
  np.testing.assert_array_equal(labels[idx], [0, 1, 2, 0, 1, 2, 0, 0, 0])
  # Within a class: the seeded permutation of its members in ascending order.
  members0 = np.random.default_rng([0, 0]).permutation(np.flatnonzero(labels == 0))
  np.testing.assert_array_equal(idx[labels[idx] == 0], members0)
  np.testing.assert_array_equal(select.balanced_indices(labels, 9, seed=0), idx)
  assert not np.array_equal(select.balanced_indices(labels, 9, seed=1), idx)
  np.testing.assert_array_equal(select.balanced_indices(labels, 4, seed=0), idx[:4])
  np.testing.assert_array_equal(select.balanced_indices(labels, 20, seed=0), np.tile(idx, 3)[:20])


def test_balanced_indices_counts_on_label_ordered_data():
  labels = np.repeat(np.arange(10), 50)  # "the first 16" would all be class 0
  idx = select.balanced_indices(labels, 16, seed=5)
  counts = np.bincount(labels[idx], minlength=10)
  assert counts.max() - counts.min() <= 1 and set(labels[idx[:10]]) == set(range(10))
  assert len(set(idx)) == 16


def test_balanced_indices_unlabelled_and_errors():
  np.testing.assert_array_equal(
    select.balanced_indices(None, 4, seed=2, num_examples=10), np.random.default_rng(2).permutation(10)[:4]
  )
  assert select.balanced_indices(np.array([1, 1]), 0, seed=0).shape == (0,)
  with pytest.raises(ValueError, match="pass num_examples"):
    select.balanced_indices(None, 3, seed=0)
  with pytest.raises(ValueError, match="num must be >= 0, got -1"):
    select.balanced_indices(np.array([0]), -1, seed=0)
  with pytest.raises(ValueError, match="labels must be int"):
    select.balanced_indices(np.array([0.5]), 1, seed=0)
  with pytest.raises(ValueError, match="cannot choose 2 indices from 0 examples"):
    select.balanced_indices(None, 2, seed=0, num_examples=0)
  with pytest.raises(ValueError, match="num_examples=3 but labels has 2"):
    select.balanced_indices(np.array([0, 1]), 1, seed=0, num_examples=3)


# --------------------------------------------------------------------------- CLI


def write_digit_folder(root, n=200):
  digits = data.load_digits_8x8()["train"]
  for i, (im, lab) in enumerate(zip(digits["image"][:n], digits["label"][:n], strict=True)):
    save(os.path.join(root, f"digit_{lab}", f"{i:04d}.png"), im[..., 0])


def test_cli_trains_resumes_and_evaluates_on_a_folder(tmp_path, cache_dir):
  images, workdir = str(tmp_path / "digits"), str(tmp_path / "run")
  write_digit_folder(images)
  before = snapshot(images)
  cfg = [
    "--config=configs/vae.py:tiny",
    f"--workdir={workdir}",
    "--config.data.name=folder",
    f"--config.data.path={images}",
  ]
  env = {"GENJAX_CACHE": cache_dir}
  p = run_module("experiments.train", *cfg, "--config.train.num_steps=10", env=env)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "180 train / 20 test images of (8, 8, 1), 10 classes (0=digit_0, 1=digit_1" in p.stderr
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"]["path"] == images

  p = run_module("experiments.train", *cfg, "--config.train.num_steps=20", env=env)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "from the cache" in p.stderr and "resuming from step 10 (data position 320)" in p.stderr

  p = run_module("experiments.evaluate", *cfg, env=env)
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert result["step"] == 20 and result["dataset"] == "folder"
  assert 0 < result["bits_per_dim"] < 8 and result["iwae"] >= result["elbo"] - 1.0
  assert snapshot(images) == before


def test_cli_reports_a_bad_folder_in_one_line(tmp_path):
  missing = str(tmp_path / "nowhere")
  p = run_module(
    "experiments.train",
    "--config=configs/vae.py:tiny",
    f"--workdir={tmp_path}/run",
    "--config.data.name=folder",
    f"--config.data.path={missing}",
  )
  assert p.returncode == 2  # a bad config value is a usage error
  assert f"error: data.path {missing!r} does not exist; expected a directory of images" in p.stderr
  assert "Traceback" not in p.stderr


@pytest.mark.slow
def test_cli_ddpm_on_a_colour_folder_with_resizing(tmp_path, cache_dir):
  """Another family, colour images, and image_size: 10x12 RGB digits centre-cropped and resized to 8x8."""
  images, workdir = str(tmp_path / "digits"), str(tmp_path / "run")
  digits = data.load_digits_8x8()["train"]
  tint = np.array([1.0, 0.6, 0.3])
  for i, (im, lab) in enumerate(zip(digits["image"][:100], digits["label"][:100], strict=True)):
    rgb = np.round(np.pad(im, ((1, 1), (2, 2), (0, 0))) * tint).astype(np.uint8)
    save(os.path.join(images, f"digit_{lab}", f"{i:04d}.png"), rgb)
  cfg = [
    "--config=configs/ddpm.py:tiny",
    f"--workdir={workdir}",
    "--config.data.name=folder",
    f"--config.data.path={images}",
    "--config.data.image_size=8",
  ]
  env = {"GENJAX_CACHE": cache_dir}
  p = run_module("experiments.train", *cfg, "--config.train.num_steps=10", env=env)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "90 train / 10 test images of (8, 8, 3), 10 classes" in p.stderr
  p = run_module("experiments.train", *cfg, "--config.train.num_steps=20", env=env)
  assert p.returncode == 0 and "resuming from step 10" in p.stderr, p.stderr[-3000:]
  assert os.path.exists(os.path.join(workdir, "checkpoints", "20"))
