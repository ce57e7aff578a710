"""The Frechet distance against closed forms for Gaussians; the offline feature classifier."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from genjax.eval import frechet
from tests.helpers import tiny_config


def _random_spd(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_diagonal_covariances():
  rng = np.random.default_rng(0)
  m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
  a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
  expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(frechet.frechet_distance(m1, np.diag(a), m2, np.diag(b)), expected, rtol=1e-10)


def test_commuting_covariances():
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
  a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
  s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
  np.testing.assert_allclose(
    frechet.frechet_distance(np.zeros(6), s1, np.zeros(6), s2), np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rtol=1e-8
  )


def test_random_pair_matches_scipy_sqrtm():
  rng = np.random.default_rng(2)
  d = 8
  m1, m2, s1, s2 = rng.standard_normal(d), rng.standard_normal(d), _random_spd(rng, d), _random_spd(rng, d)
  expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
  np.testing.assert_allclose(frechet.frechet_distance(m1, s1, m2, s2), expected, rtol=1e-8)
  assert frechet.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)


def test_statistics_and_monte_carlo():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((4000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, -1.0])
  y = rng.standard_normal((4000, 3))
  mean, cov = frechet.feature_statistics(x)
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-4, atol=1e-6)
  closed = 2.0 + (0.0 + 1.0 + (np.sqrt(0.25) - 1) ** 2)  # |mu|^2 + sum (sigma_i - 1)^2
  estimate = frechet.frechet_distance(*frechet.feature_statistics(x), *frechet.feature_statistics(y))
  assert estimate == pytest.approx(closed, abs=0.1)


def test_batched_features_pads_and_crops():
  images = np.arange(7 * 2 * 2 * 1, dtype=np.uint8).reshape(7, 2, 2, 1)
  calls = []

  def features(batch):
    calls.append(len(batch))
    return batch.reshape(len(batch), -1).astype(np.float32)

  out = frechet.batched_features(features, images, batch_size=3)
  np.testing.assert_array_equal(out, images.reshape(7, -1))
  assert calls == [3, 3, 3]  # one compiled shape
  with pytest.raises(ValueError, match="N >= 2"):
    frechet.feature_statistics(np.zeros((1, 3)))


def test_feature_classifier_trains_caches_and_scores(tmp_path):
  from genjax.data import load_dataset
  from genjax.eval.feature_classifier import ClassifierSettings, load_or_train

  info, splits = load_dataset(tiny_config().data)
  cfg = ClassifierSettings(cache_dir=str(tmp_path), num_steps=150, batch_size=64)
  clf = load_or_train(info, splits, cfg)
  assert clf.test_accuracy > 0.8, clf.test_accuracy  # 10 classes: chance is 0.1
  again = load_or_train(info, splits, cfg)  # from the cache
  assert again.path == clf.path and again.test_accuracy == clf.test_accuracy
  images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
  np.testing.assert_array_equal(np.asarray(clf.features(images)), np.asarray(again.features(images)))
  assert clf.features(images).shape == (5, cfg.hidden)
