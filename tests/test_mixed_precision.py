"""Mixed precision (`model.dtype`, `model.param_dtype`) and the rematerialised U-Net (`model.remat`).

For every family's tiny config: a bfloat16 loss is float32, close to the float32 loss of the same
parameters, batch and key, and the network really computes in bfloat16; a bfloat16 train step keeps
parameters, optimizer state and EMA in float32. (That float32 is unchanged by the knob is checked by
the rest of the suite: every family's float32 numbers were bit-identical before and after it.)
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.schema import ConfigError
from genjax.train.experiment import Experiment
from genjax.train.sharding import make_mesh
from tests.helpers import run_cli_cases, tiny_config

#: (config, preset): one per family and network kind (MLP and conv autoencoders, DCGAN and MLP GAN,
#: gated PixelCNN, multi-scale RealNVP, the U-Net of DDPM and flow matching).
CASES = [
  ("vae", "tiny"),
  ("vae", "conv,tiny"),
  ("gan", "tiny"),
  ("gan_toy", "tiny"),
  ("pixelcnn", "tiny"),
  ("realnvp", "tiny"),
  ("ddpm", "tiny"),
  ("flow_matching", "tiny"),
]

#: Relative tolerance of the bfloat16 loss against the float32 one (same parameters, batch, key).
#: bfloat16 keeps 8 bits of mantissa (relative rounding 2**-9 = 2e-3 per operation); with float32
#: accumulation and float32 losses the measured differences on these tiny configs are 2e-5 to 5e-4
#: (see the README's "Mixed precision"), so 2e-2 leaves well over an order of magnitude of margin while
#: still catching a loss computed in bfloat16 end to end or a wrong cast.
RTOL = 2e-2


def _perturbed(params, key):
  """Parameters with every leaf moved by noise: zero-initialised output layers (U-Net, flows) would
  otherwise make both dtypes' losses trivially equal."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
    tree, [p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)]
  )


def _dtypes(tree) -> set[str]:
  return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.parametrize("name,preset", CASES)
def test_bf16_loss_is_close_to_fp32_and_the_state_stays_fp32(name, preset):
  config = tiny_config(name, preset)
  exp32 = Experiment(config, mesh=make_mesh(1))
  config16 = tiny_config(name, preset, **{"model.dtype": "bfloat16"})
  exp16 = Experiment(config16, mesh=make_mesh(1))
  fam32, fam16 = exp32.family, exp16.family
  assert fam16.compute_dtype == jnp.bfloat16 and fam16.param_dtype == jnp.float32
  state = exp32.init_state()
  params = _perturbed(state.params, jax.random.key(7))
  batch = exp32.splits["test"][np.arange(8 * fam32.batch_multiple()) % len(exp32.splits["test"])]
  key = jax.random.key(3)
  loss32, _ = jax.jit(fam32.loss)(params, state.model_state, batch, key)
  loss16_fn = jax.jit(fam16.loss)
  loss16, (metrics16, _) = loss16_fn(params, state.model_state, batch, key)
  assert loss16.dtype == jnp.float32 and all(m.dtype == jnp.float32 for m in metrics16.values())
  assert np.isfinite(float(loss16))
  rel = abs(float(loss16) - float(loss32)) / max(abs(float(loss32)), 1e-6)
  assert rel < RTOL, (name, preset, float(loss32), float(loss16), rel)
  assert rel > 0, "the bfloat16 loss equals the float32 one: is the network running in bfloat16?"
  assert "bf16" in loss16_fn.lower(params, state.model_state, batch, key).as_text()
  # One bfloat16 train step: parameters, optimizer state, EMA and model state stay float32.
  state16 = exp16.init_state()
  assert _dtypes(state16.params) == {"float32"}
  state16, metrics = exp16.train_step()(state16, exp16.shard(exp16.example_batch()))
  assert np.isfinite(float(metrics["loss"])) and metrics["loss"].dtype == jnp.float32
  for part in (state16.params, state16.opt_state, state16.ema_params, state16.model_state):
    assert _dtypes(part) <= {"float32"}, (name, _dtypes(part))
  print(f"{name}:{preset} fp32 {float(loss32):.6f} bf16 {float(loss16):.6f} rel {rel:.2e}")


def test_remat_gives_the_same_loss_and_gradients():
  """`model.remat=True` recomputes the U-Net's blocks in the backward pass: same values, same parameter tree."""
  config = tiny_config("ddpm", "tiny", **{"model.dropout": 0.1})
  exp = Experiment(config, mesh=make_mesh(1))
  exp_remat = Experiment(tiny_config("ddpm", "tiny", **{"model.dropout": 0.1, "model.remat": True}), make_mesh(1))
  state = exp.init_state()
  params = _perturbed(state.params, jax.random.key(1))
  assert jax.tree.structure(exp_remat.abstract_state().params) == jax.tree.structure(params)
  batch = exp.splits["test"][np.arange(8)]
  key = jax.random.key(2)

  def value_and_grad(family):
    return jax.jit(jax.value_and_grad(lambda p: family.loss(p, {}, batch, key)[0]))(params)

  (loss, grads), (loss_r, grads_r) = value_and_grad(exp.family), value_and_grad(exp_remat.family)
  np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
  for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r), strict=True):
    np.testing.assert_allclose(np.asarray(g_r), np.asarray(g), rtol=1e-4, atol=1e-6)


def test_bad_dtypes_are_one_line_config_errors():
  with pytest.raises(
    ConfigError, match=r"^model.dtype='int8' is not valid: expected one of 'float32', 'bfloat16'"
  ):
    Experiment(tiny_config("vae", "tiny", **{"model.dtype": "int8"}), mesh=make_mesh(1))
  with pytest.raises(ConfigError, match=r"^model.param_dtype='bfloat16' is not valid: expected one of 'float32'$"):
    Experiment(tiny_config("ddpm", "tiny", **{"model.param_dtype": "bfloat16"}), mesh=make_mesh(1))
  cases = [["--config=configs/vae.py:tiny", "--workdir=/nonexistent/run", "--config.model.dtype=int8"]]
  (p,) = run_cli_cases("genjax.cli.train", cases)
  lines = p.stderr.strip().splitlines()
  assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
  assert lines[0].startswith("error: model.dtype='int8' is not valid: expected one of"), lines


def test_a_run_saved_before_the_precision_keys_is_read_and_resumed_as_float32(tmp_path):
  from genjax.configs import _saved
  from genjax.train.workdir import check_resume, commit_config

  config = tiny_config("ddpm", "tiny")
  saved = json.loads(config.to_json_best_effort())
  for key in ("dtype", "param_dtype", "remat"):
    del saved["model"][key]
  commit_config(str(tmp_path), json.dumps(saved))
  got = _saved.get_config(str(tmp_path))
  assert got.model.to_dict() == config.model.to_dict()
  Experiment(got, mesh=make_mesh(1))  # builds: every declared key is there
  assert check_resume(saved, config) == []  # absent = the old behaviour: float32, no remat
  assert check_resume(saved, tiny_config("ddpm", "tiny", **{"model.dtype": "bfloat16"})) == ["model.dtype"]
  # A family without a U-Net gets no model.remat.
  vae = tiny_config("vae", "tiny")
  saved = json.loads(vae.to_json_best_effort())
  del saved["model"]["dtype"], saved["model"]["param_dtype"]
  (tmp_path / "vae").mkdir()
  commit_config(str(tmp_path / "vae"), json.dumps(saved))
  assert _saved.get_config(str(tmp_path / "vae")).model.to_dict() == vae.model.to_dict()
