"""The mode-collapse study's statistics on sample sets whose answer is known (the learning itself is
measured by `experiments.mode_collapse_study`, too slow for tests)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.cli.mode_collapse_study import study_row
from genjax.train.experiment import Experiment
from genjax.train.sharding import make_mesh
from tests.helpers import tiny_config


class _FixedFamily:
  """A stand-in for a trained family: `generate` puts `left_share` of every chunk at N(-4, 0.5^2), the
  rest at N(4, 0.5^2); no family statistics of its own."""

  def __init__(self, left_share: float, info):
    self.left_share, self.info, self.images = left_share, info, False

  def generate(self, params, model_state, key, num):
    del params, model_state
    centre = jnp.where(jnp.arange(num) < round(self.left_share * num), -4.0, 4.0)
    return (centre + 0.5 * jax.random.normal(key, (num,)))[:, None]

  def sample_statistics(self, params, model_state, samples):
    return {}


@pytest.mark.parametrize(
  "left_share, fractions, covered", [(0.3, (0.3, 0.7), 2), (0.0, (0.0, 1.0), 1), (0.1, (0.1, 0.9), 1)]
)
def test_mode_fractions_coverage_and_collapse(left_share, fractions, covered):
  exp = Experiment(tiny_config("gan_toy", "tiny,bimodal_far"), mesh=make_mesh(1))
  family = _FixedFamily(left_share, exp.info)
  row = study_row(family, None, {}, exp.splits, jax.random.key(0), 1000)
  # Nearest-mode shares are exact (the modes are 16 std apart); 10% at a mode is below the
  # coverage threshold N / K / 4 = 12.5%, so that run counts as collapsed too.
  np.testing.assert_allclose(row["mode_fractions"], fractions)
  assert row["modes_covered"] == covered and row["collapsed"] == (covered < 2)
  assert 0.98 < row["high_quality_fraction"] <= 1.0  # within 3 std: 99.73% expected
  assert "d_gap_mean" not in row
