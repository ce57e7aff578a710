"""Preparing tfds datasets as array_record and reading them back, without network or TensorFlow.

tfds 4.9.10 needs TensorFlow only to encode numpy images while preparing; a builder that
yields PNG bytes prepares without it. So the dummy builders here (written like any tfds
builder) go through the real preparation, `genjax.data.prepare.prepare`, and the real
array_record reading of `TfdsSource` / `load_dataset`.
"""

from __future__ import annotations

import importlib.util
import io
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from genjax import data
from genjax.data import prepare, tfds_input
from genjax.data.errors import DataConfigError


def dummy_images(seed: int, n: int, shape=(8, 8, 1)) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
  return buf.getvalue()


class GenjaxDummyPng(tfds.core.GeneratorBasedBuilder):
  """12 train / 6 test 8x8 grey images with 3 classes, yielded as PNG bytes."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    features = tfds.features.FeaturesDict(
      {"image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=3)}
    )
    return tfds.core.DatasetInfo(builder=self, features=features)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, 12), "test": self._generate_examples(1, 6)}

  def _generate_examples(self, seed, n):
    for i, image in enumerate(dummy_images(seed, n)):
      yield i, {"image": png(image), "label": i % 3}


class GenjaxDummyNumpy(GenjaxDummyPng):
  """The same, but yielding numpy images, as most tfds builders (mnist, cifar10) do."""

  def _generate_examples(self, seed, n):
    for i, image in enumerate(dummy_images(seed, n)):
      yield i, {"image": image, "label": i % 3}


with tfds.core.registered.skip_registration():

  class FakeMnist(tfds.core.GeneratorBasedBuilder):
    """Writes files laid out exactly as the real `mnist` (name, version, features), from PNG bytes."""

    name = "mnist"
    VERSION = tfds.core.Version("3.0.1")

    def _info(self):
      features = tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
      )
      return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(0, 20), "test": self._generate_examples(1, 10)}

    def _generate_examples(self, seed, n):
      for i, image in enumerate(dummy_images(seed, n, (28, 28, 1))):
        yield i, {"image": png(image), "label": i % 10}


@pytest.fixture
def dummy_specs(monkeypatch):
  """Makes the dummy builders genjax datasets (as if listed in TFDS_DATASETS)."""
  specs = dict(tfds_input.TFDS_DATASETS)
  for name in ("genjax_dummy_png", "genjax_dummy_numpy"):
    specs[name] = tfds_input.TfdsSpec(name, "train", "test", (8, 8, 1), 3)
  monkeypatch.setattr(tfds_input, "TFDS_DATASETS", specs)
  monkeypatch.setattr(prepare, "TFDS_DATASETS", specs)


def find_rows(stored: np.ndarray, images: np.ndarray) -> np.ndarray:
  """The row of `stored` equal to each image (tfds reorders examples when it writes them)."""
  rows = [np.flatnonzero((stored == im).all(axis=(1, 2, 3))) for im in images]
  assert all(len(r) == 1 for r in rows)
  return np.array([r[0] for r in rows])


def test_prepare_writes_array_record_that_genjax_reads(tmp_path, dummy_specs):
  data_dir = str(tmp_path / "tfds")
  path = prepare.prepare("genjax_dummy_png", data_dir=data_dir)
  assert path.startswith(data_dir)
  assert prepare.prepare("genjax_dummy_png", data_dir=data_dir) == path  # already prepared: kept

  cfg = types.SimpleNamespace(name="genjax_dummy_png", data_dir=data_dir, download=False, image_size=0)
  info, splits = data.load_dataset(cfg)
  assert (info.num_train, info.num_test, info.num_classes, info.shape) == (12, 6, 3, (8, 8, 1))
  for split, seed in (("train", 0), ("test", 1)):
    batch = splits[split][np.arange(len(splits[split]))]
    data.validate_batch(batch, info)
    rows = find_rows(dummy_images(seed, len(batch["image"])), batch["image"])  # PNG is lossless: exact
    np.testing.assert_array_equal(batch["label"], rows % 3)
    assert sorted(rows) == list(range(len(rows)))


def test_data_placed_under_data_dir_is_read_as_mnist(tmp_path):
  """array_record files under DIR/mnist/3.0.1 (as copied from another machine) load as 'mnist'."""
  data_dir = str(tmp_path / "tfds")
  FakeMnist(data_dir=data_dir, file_format="array_record").download_and_prepare()
  cfg = types.SimpleNamespace(name="mnist", data_dir=data_dir, download=False, image_size=0)
  info, splits = data.load_dataset(cfg)
  assert (info.num_train, info.num_test, info.shape) == (20, 10, (28, 28, 1))
  batch = splits["test"][np.arange(10)]
  rows = find_rows(dummy_images(1, 10, (28, 28, 1)), batch["image"])
  np.testing.assert_array_equal(batch["label"], rows % 10)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed")
def test_preparing_without_tensorflow_says_what_to_install(tmp_path, dummy_specs):
  with pytest.raises(data.DatasetUnavailableError) as e:
    prepare.prepare("genjax_dummy_numpy", data_dir=str(tmp_path))
  msg = str(e.value)
  assert "'genjax_dummy_numpy' needs TensorFlow" in msg and "pip install 'genjax[prepare]'" in msg
  assert "\n" not in msg

  # The same cause through --config.data.download=True.
  cfg = types.SimpleNamespace(name="genjax_dummy_numpy", data_dir=str(tmp_path / "b"), download=True, image_size=0)
  with pytest.raises(data.DatasetUnavailableError, match=r"needs TensorFlow.*pip install 'genjax\[prepare\]'"):
    data.load_dataset(cfg)


def test_prepare_errors(tmp_path, monkeypatch, capsys):
  with pytest.raises(DataConfigError, match="unknown tfds dataset 'mnistt'; genjax reads celeb_a, cifar10"):
    prepare.prepare("mnistt", data_dir=str(tmp_path))
  assert prepare.main(["mnistt", f"--data_dir={tmp_path}"]) == 1
  assert capsys.readouterr().err.startswith("error: unknown tfds dataset 'mnistt'")

  # Another failure (here: no network) is one line naming the dataset, the directory and the cause.
  def offline(self, *args, **kwargs):
    raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  with pytest.raises(data.DatasetUnavailableError) as e:
    prepare.prepare("mnist", data_dir=str(tmp_path))
  msg = str(e.value)
  assert f"preparing tfds dataset 'mnist' in {tmp_path} failed" in msg and "network access" in msg
  assert "ConnectionError: Failed to resolve" in msg and "\n" not in msg
