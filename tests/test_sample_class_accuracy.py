"""`sample_class_accuracy` of `genjax.eval.sample_metrics.image_statistics` for conditional families.

A stand-in conditional family "generates" real test images of the requested class, so the
statistic must equal the classifier's accuracy on exactly those images; asked for the
wrong classes it must be near zero; unconditional families and other feature networks get
no such statistic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data import load_dataset
from genjax.eval.feature_classifier import ClassifierSettings, load_or_train
from genjax.eval.sample_metrics import SampleStatistics, class_cycle, image_statistics
from tests.helpers import tiny_config


class _StandIn:
  """A family that returns, for labels `c`, the test images of class `c + shift` (mod K) in turn."""

  images = True

  def __init__(self, info, test, conditional=True, shift=0):
    self.info, self.num_classes, self.conditional = info, info.num_classes, conditional
    by_class = [test["image"][test["label"] == c] for c in range(self.num_classes)]
    m = min(len(b) for b in by_class)
    self.table = jnp.asarray(np.stack([b[:m] for b in by_class]))  # [K, M, H, W, C]
    self.shift, self.calls = shift, []

  def generate(self, params, model_state, key, num, labels=None):
    self.calls.append(labels is not None)
    if labels is None:
      labels = jnp.arange(num) % self.num_classes
    index = jnp.arange(num) // self.num_classes % self.table.shape[1]
    return self.table[(labels + self.shift) % self.num_classes, index]

  def sample_statistics(self, params, model_state, samples):
    return {}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  info, splits = load_dataset(tiny_config().data)
  settings = ClassifierSettings(cache_dir=str(tmp_path_factory.mktemp("clf")), num_steps=150, batch_size=64)
  return info, splits, load_or_train(info, splits, settings)


def test_samples_of_the_requested_class_score_the_classifiers_accuracy_on_them(data):
  info, splits, clf = data
  test = splits["test"][np.arange(len(splits["test"]))]
  num = 700  # two generate chunks (500 + 200): labels continue across chunks
  family = _StandIn(info, test)
  options = SampleStatistics(num, jax.random.key(0), clf, {"feature_net": "classifier"})
  out = image_statistics(family, None, {}, splits, options)
  assert family.calls == [True, True]  # labels passed chunk by chunk
  labels = class_cycle(family, num)
  np.testing.assert_array_equal(labels[:12], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
  chunks = [(0, 500), (500, 700)]  # generate_many's chunks (each starts its own cycle of test images)
  images = np.concatenate([family.generate(None, {}, None, b - a, jnp.asarray(labels[a:b])) for a, b in chunks])
  expected = np.mean(np.argmax(np.asarray(clf.logits(images)), axis=-1) == labels)
  assert out["sample_class_accuracy"] == pytest.approx(expected, abs=1e-12)
  assert expected > 0.8  # the classifier is good on real digits (the test of the statistic is not vacuous)
  assert np.isfinite(out["frechet_distance"])
  wrong = image_statistics(_StandIn(info, test, shift=1), None, {}, splits, options)
  assert wrong["sample_class_accuracy"] < 0.1  # every image is of the next class


def test_no_class_accuracy_without_conditioning_or_without_the_classifier(data):
  info, splits, clf = data
  test = splits["test"][np.arange(len(splits["test"]))]
  options = SampleStatistics(50, jax.random.key(0), clf, {"feature_net": "classifier"})
  family = _StandIn(info, test, conditional=False)
  assert "sample_class_accuracy" not in image_statistics(family, None, {}, splits, options)
  assert family.calls == [False]  # an unconditional family is never given labels
  other = SampleStatistics(50, jax.random.key(0), clf.features, {"feature_net": "other"})
  assert "sample_class_accuracy" not in image_statistics(_StandIn(info, test), None, {}, splits, other)
