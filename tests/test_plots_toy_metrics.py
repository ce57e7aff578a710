"""The toy-sample pictures and statistics against hand-checked cases."""

import numpy as np
import pytest

from genjax.data import toy
from genjax.eval import plots, toy_metrics


def test_scatter_image_puts_points_in_the_right_cells():
  img = np.asarray(plots.scatter_image(np.array([[-0.9, 0.9], [0.9, -0.9], [5.0, 0.0]]), -1.0, 1.0, size=4))
  assert img.shape == (4, 4, 1) and img.dtype == np.uint8
  dark = np.argwhere(img[..., 0] < 255)
  assert sorted(map(tuple, dark)) == [(0, 0), (3, 3)]  # top-left (x<0, y>0) and bottom-right; (5, 0) dropped


def test_histogram_image_bar_heights():
  img = np.asarray(plots.histogram_image(np.array([0.1, 0.1, 0.6]), 0.0, 1.0, size=2))
  assert img[..., 0].tolist() == [[0, 255], [0, 0]]  # bin 0 twice as tall as bin 1


def test_mode_statistics_sees_collapse():
  spec = toy.TOYS["ring8"]
  rng = np.random.default_rng(0)
  x, _ = spec.sample(rng, 4000)
  full = toy_metrics.mode_statistics(x, spec.modes, spec.mode_std)
  assert full["modes_covered"] == 8 and full["high_quality_fraction"] > 0.98 and full["mode_kl"] < 0.01
  one = spec.modes[:1] + spec.mode_std * rng.standard_normal((4000, 2))
  collapsed = toy_metrics.mode_statistics(one, spec.modes, spec.mode_std)
  assert collapsed["modes_covered"] == 1 and collapsed["mode_kl"] > 2.0
  far = toy_metrics.mode_statistics(x + 10.0, spec.modes, spec.mode_std)
  assert far["high_quality_fraction"] == 0.0 and far["modes_covered"] == 0


def test_energy_distance_is_zero_only_for_equal_distributions():
  rng = np.random.default_rng(1)
  a, b = rng.standard_normal((500, 2)), rng.standard_normal((500, 2))
  assert toy_metrics.energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
  same = toy_metrics.energy_distance(a, b)
  shifted = toy_metrics.energy_distance(a, b + 1.0)
  assert 0 <= same < 0.02 < 0.3 < shifted
  with pytest.raises(ValueError, match="same D"):
    toy_metrics.energy_distance(a, b[:, :1])
