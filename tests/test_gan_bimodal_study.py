"""The bimodal study's statistics on sample sets whose answer is known (the learning itself is
measured by `experiments.gan_bimodal_study`, too slow for tests)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.cli.gan_bimodal_study import study_row
from genjax.train.experiment import Experiment
from genjax.train.sharding import make_mesh
from tests.helpers import tiny_config


def _fixed_family(left_share: float):
  """A stand-in family: `generate` puts `left_share` of every chunk at N(-4, 0.5^2), the rest at N(4, 0.5^2)."""

  def generate(params, model_state, key, num):
    del params, model_state
    centre = jnp.where(jnp.arange(num) < round(left_share * num), -4.0, 4.0)
    return (centre + 0.5 * jax.random.normal(key, (num,)))[:, None]

  return types.SimpleNamespace(generate=generate)  # no `logits`: the D vs D* gap is skipped


@pytest.mark.parametrize(
  "left_share, fractions, covered", [(0.3, (0.3, 0.7), 2), (0.0, (0.0, 1.0), 1), (0.1, (0.1, 0.9), 1)]
)
def test_mode_fractions_coverage_and_collapse(left_share, fractions, covered):
  exp = Experiment(tiny_config("gan_toy", "tiny,bimodal_far"), mesh=make_mesh(1))
  fake = types.SimpleNamespace(
    family=_fixed_family(left_share),
    info=exp.info,
    splits=exp.splits,
    eval_params=lambda s: None,
    sample_key=lambda: jax.random.key(0),
  )
  row = study_row(fake, types.SimpleNamespace(model_state={}), 1000)
  # Nearest-mode shares are exact (the modes are 16 std apart); 10% at a mode is below the
  # coverage threshold N / K / 4 = 12.5%, so that run counts as collapsed too.
  np.testing.assert_allclose(row["mode_fractions"], fractions)
  assert row["modes_covered"] == covered and row["collapsed"] == (covered < 2)
  assert 0.98 < row["high_quality_fraction"] <= 1.0  # within 3 std: 99.73% expected
  assert "d_gap_mean" not in row
