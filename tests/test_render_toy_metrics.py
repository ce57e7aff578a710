"""The renderer (genjax.eval.render) and the toy-sample statistics against hand-checked cases."""

import numpy as np
import pytest

from genjax.data import toy
from genjax.eval import render, toy_metrics
from genjax.models import Figure


def test_scatter_image_puts_points_in_the_right_cells():
  img = np.asarray(render.scatter_image(np.array([[-0.9, 0.9], [0.9, -0.9], [5.0, 0.0]]), -1.0, 1.0, size=4))
  assert img.shape == (4, 4, 1) and img.dtype == np.uint8
  dark = np.argwhere(img[..., 0] < 255)
  assert sorted(map(tuple, dark)) == [(0, 0), (3, 3)]  # top-left (x<0, y>0) and bottom-right; (5, 0) dropped


def test_histogram_image_bar_heights():
  img = np.asarray(render.histogram_image(np.array([0.1, 0.1, 0.6]), 0.0, 1.0, size=2))
  assert img[..., 0].tolist() == [[0, 255], [0, 0]]  # bin 0 twice as tall as bin 1


def test_scatter_colours_cells_by_majority_label():
  points = np.array([[-0.9, 0.9], [-0.9, 0.9], [-0.9, 0.9], [0.9, -0.9]])
  img = render.scatter_image(points, -1.0, 1.0, size=2, labels=np.array([3, 3, 1, 0]))
  assert img.shape == (2, 2, 3)
  top_left, bottom_right, empty = img[0, 0].astype(int), img[1, 1].astype(int), img[0, 1]
  assert empty.tolist() == [255, 255, 255]
  # The densest cell is drawn in its majority label's colour (label 3), the other in label 0's, lighter.
  assert top_left.tolist() == render.PALETTE[3].tolist()
  assert np.all(bottom_right >= render.PALETTE[0]) and bottom_right.tolist() != [255, 255, 255]


def test_extent_is_one_rule_for_every_picture():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(10000, 2))
  lo, hi = render.extent(x)
  q_lo, q_hi = np.quantile(x, [0.005, 0.995])
  np.testing.assert_allclose([lo, hi], [q_lo - 0.25 * (q_hi - q_lo), q_hi + 0.25 * (q_hi - q_lo)])
  assert render.extent(x + 10.0)[0] > 5.0  # follows the data


def test_pairs_put_each_input_above_its_output():
  inputs = np.stack([np.full((2, 2, 1), i, np.uint8) for i in range(5)])
  outputs = inputs + 100
  tiles, ncol = render.render(Figure.pairs(inputs, outputs))
  assert ncol == 3  # ceil(sqrt(5)) pairs per row
  values = tiles[:, 0, 0, 0].tolist()
  # Row 1: inputs 0..2; row 2: their outputs; row 3: inputs 3, 4 and a blank; row 4: outputs.
  assert values == [0, 1, 2, 100, 101, 102, 3, 4, 255, 103, 104, 255]
  grid = render.image_grid(tiles, ncol)
  assert grid.shape == (4 * 3 + 1, 3 * 3 + 1, 1)


def test_density_figure_is_dark_where_dense():
  log_p = np.log(np.array([[1.0, 0.1], [0.5, 1e-9]]))  # row 0 = the smallest y
  tiles, _ = render.render(Figure.density(log_p, (-1.0, 1.0)))
  shade = tiles[0, ..., 0]
  # Top row of the picture is the largest y (input row 1); the densest cell is black.
  assert shade[1, 0] == 0 and shade[0, 1] == 255 and 0 < shade[0, 0] < shade[1, 1]


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
