"""The family contract, checked for every registered family and every preset of every shipped config.

* Every config file in `genjax/configs/` names a registered family, and every family has a
  config (a new family cannot land without one).
* For every preset `P` of every config, `P,tiny` (the preset shrunk for tests) passes the
  contract by abstract evaluation (`jax.eval_shape`: no compile, so every preset is cheap):
  `init`, a finite-shaped scalar `loss` whose gradient tree matches the parameters,
  `evaluate` values of shape `[B]` that include `best_metric` (also with the options of
  `final_evaluation`), `generate` with the documented shape and dtype, a `sample_grid`
  Figure.
* For each config's `tiny` preset the same run for real: finite values, every declared
  figure kind drawn and rendered, a batch of the wrong shape or dtype refused in one
  line, and one train step, save and restore bit-identical.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genjax.configs
from genjax import models
from genjax.eval import render
from genjax.models import Figure, FigureOptions
from genjax.schema import ConfigError
from genjax.train.experiment import Experiment
from genjax.train.sharding import make_mesh
from tests.helpers import assert_trees_equal


def _config_modules() -> dict[str, object]:
  names = [
    m.name for m in pkgutil.iter_modules(genjax.configs.__path__) if m.name != "default" and m.name[0] != "_"
  ]
  return {name: importlib.import_module(f"genjax.configs.{name}") for name in sorted(names)}


CONFIGS = _config_modules()


def _cases() -> list[tuple[str, str]]:
  """(config, preset) pairs: each config's `tiny`, and `P,tiny` for each of its other presets."""
  cases = []
  for name, module in CONFIGS.items():
    cases.append((name, "tiny"))
    cases.extend((name, f"{p},tiny") for p in module.PRESETS if p != "tiny" and "tiny" not in p)
  return cases


def test_every_config_names_a_registered_family_and_every_family_has_a_config():
  families = set(models.registered())
  used = {module.get_config().model.family for module in CONFIGS.values()}
  assert used <= families, used - families
  assert families <= used, f"families without a config: {families - used}"
  with pytest.raises(ConfigError, match=r"model.family='gann' is not a registered family; expected one of .*gan"):
    models.family_class("gann")


def _experiment(name: str, preset: str) -> Experiment:
  return Experiment(CONFIGS[name].get_config(preset), mesh=make_mesh(1))


def _batch(exp: Experiment, n: int) -> dict:
  return exp.splits["test"][np.arange(n) % len(exp.splits["test"])]


def _check_sample(exp: Experiment, x, num: int) -> None:
  if exp.family.images:
    assert x.shape == (num,) + exp.info.shape and x.dtype == jnp.uint8, (x.shape, x.dtype)
  else:
    assert x.shape == (num,) + exp.info.shape and x.dtype == jnp.float32, (x.shape, x.dtype)


@pytest.mark.parametrize("name,preset", _cases())
def test_contract_shapes_for_every_preset(name, preset):
  exp = _experiment(name, preset)
  family, key = exp.family, jax.random.key(0)
  assert family.name == exp.config.model.family and family.best_mode in ("min", "max")
  batch = _batch(exp, 2 * family.batch_multiple())
  params, model_state = jax.eval_shape(family.init, key, batch)
  (loss, (metrics, new_state)), grads = jax.eval_shape(
    jax.value_and_grad(family.loss, has_aux=True), params, model_state, batch, key
  )
  assert loss.shape == () and all(m.shape == () for m in metrics.values())
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert jax.tree.map(lambda a: a.shape, grads) == jax.tree.map(lambda a: a.shape, params)
  assert jax.tree.structure(new_state) == jax.tree.structure(model_state)
  n = jax.tree.leaves(batch)[0].shape[0]
  for options in ({}, dict(family.final_evaluation().options)):
    out = jax.eval_shape(
      lambda p, s, b, k, o=options: family.evaluate(p, s, b, k, **o), params, model_state, batch, key
    )
    assert family.best_metric in out, (family.best_metric, sorted(out))
    assert all(v.shape == (n,) for v in out.values()), {k: v.shape for k, v in out.items()}
  sample = jax.eval_shape(lambda p, s, k: family.generate(p, s, k, 3), params, model_state, key)
  _check_sample(exp, sample, 3)
  grid = jax.eval_shape(
    lambda p, s, k, b: family.sample_grid(p, s, k, b, 4), params, model_state, key, _batch(exp, 4)
  )
  assert isinstance(grid, Figure) and grid.kind in ("images", "pairs", "points", "density")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_contract_values_figures_and_checkpoint_for_tiny(name, tmp_path):
  exp = _experiment(name, "tiny")
  family, key = exp.family, jax.random.key(1)
  state = exp.init_state()
  batch = _batch(exp, 2 * family.batch_multiple())
  loss, (metrics, _) = family.loss(state.params, state.model_state, batch, key)
  assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in metrics.values())
  out = family.evaluate(state.params, state.model_state, batch, key)
  assert all(np.all(np.isfinite(np.asarray(v))) for v in out.values())
  sample = family.generate(state.params, state.model_state, key, 3)
  _check_sample(exp, sample, 3)
  # Every declared figure kind draws and renders.
  test = exp.splits["test"]
  extent = None if family.images else render.extent(_batch(exp, 500)["x"])
  options = FigureOptions(num=4 if family.images else 8, extent=extent or (-4.0, 4.0))
  for kind, draw in family.figures().items():
    figure = draw(state.params, state.model_state, key, test, options)
    tiles, _ = render.render(figure, extent)
    assert tiles.dtype == np.uint8 and tiles.ndim == 4 and tiles.shape[0] >= 1, (kind, tiles.shape)
    picture = render.picture(figure, extent)
    assert picture.ndim == 3 and picture.shape[-1] in (1, 3), kind
  # A batch that is not the dataset's is refused with one line.
  data_key = "image" if family.images else "x"
  wrong = dict(batch)
  wrong[data_key] = np.zeros((2, 3) + exp.info.shape, wrong[data_key].dtype)
  with pytest.raises(ValueError, match=r"has shape \(2, 3, .*need"):
    family.loss(state.params, state.model_state, wrong, key)
  wrong[data_key] = np.zeros(batch[data_key].shape, np.int32 if family.images else np.float64)
  with pytest.raises(ValueError, match="has dtype"):
    family.loss(state.params, state.model_state, wrong, key)
  # One train step, a save and a restore give back the same state, bit for bit.
  step = exp.train_step()
  state, metrics = step(state, exp.shard(exp.example_batch()))
  assert np.isfinite(float(metrics["loss"]))
  ckpt = exp.checkpointer(str(tmp_path), async_save=False)
  ckpt.save(state, data_position=exp.run.train.batch_size)
  restored, meta = ckpt.restore(exp.abstract_state(), 1)
  ckpt.close()
  assert meta["step"] == 1 and meta["data_position"] == exp.run.train.batch_size
  assert_trees_equal(jax.device_get(state), jax.device_get(restored))


def test_family_sections_are_declared_and_validated():
  """Each family's schemas cover exactly the keys its configs declare; a wrong value names its key."""
  for name, module in CONFIGS.items():
    config = module.get_config()
    family_cls = models.family_class(config.model.family)
    model_keys = {f.name for f in dataclasses.fields(family_cls.Model)} | {"family"}
    model_keys |= {f.name for f in dataclasses.fields(models.Precision)}  # dtype, param_dtype: every family
    assert set(config.model.keys()) == model_keys, (name, set(config.model.keys()) ^ model_keys)
    assert set(config.sampling.keys()) == {f.name for f in dataclasses.fields(family_cls.Sampling)}, name
  config = CONFIGS["vae"].get_config("tiny")
  config.model.latent_dim = -3
  with pytest.raises(ConfigError, match=r"^model.latent_dim=-3 is not valid: expected a positive integer$"):
    Experiment(config, mesh=make_mesh(1))
  config = CONFIGS["vae"].get_config("tiny")
  with config.unlocked():
    config.model.extra = 1
  with pytest.raises(ConfigError, match="model.extra is not a known key; model keys are: .*latent_dim"):
    Experiment(config, mesh=make_mesh(1))
  config = CONFIGS["vae"].get_config("tiny")
  del config.sampling["temperature"]
  with pytest.raises(ConfigError, match="sampling.temperature is missing"):
    Experiment(config, mesh=make_mesh(1))


def test_layers_point_one_way_and_nothing_outside_the_families_asks_which_family_it_holds():
  """No family names, `hasattr`/`getattr` or signature probes outside `genjax/models/` and the configs."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  families = models.registered()
  outside = [
    "experiments",
    "benchmarks",
    "genjax/cli",
    "genjax/train",
    "genjax/eval",
    "genjax/benchmarks",
    "genjax/xla_flags.py",
  ]
  for folder in outside:
    path = os.path.join(root, folder)
    walk = os.walk(path) if os.path.isdir(path) else [(os.path.dirname(path), [], [os.path.basename(path)])]
    for dirpath, _, files in walk:
      for f in files:
        if not f.endswith(".py"):
          continue
        text = open(os.path.join(dirpath, f)).read()
        probe = re.search(r"(hasattr|getattr)\(\s*[\w.]*family|inspect\.signature|two_player", text)
        assert probe is None, f"{folder}/{f} asks which family it holds: {probe.group(0)}"
        for family in families:
          assert f'"{family}"' not in text and f"'{family}'" not in text, f"{folder}/{f} names family {family!r}"
  # Lower layers never import higher ones.
  rules = {
    "genjax/losses.py": ("genjax.nn", "genjax.models", "genjax.train", "genjax.eval", "flax"),
    "genjax/diffusion.py": ("genjax.nn", "genjax.models", "genjax.train", "genjax.eval", "flax"),
    "genjax/nn": ("genjax.models", "genjax.train", "genjax.eval", "genjax.cli"),
    "genjax/models": ("genjax.train", "genjax.eval", "genjax.cli", "genjax.configs", "genjax.benchmarks"),
    "genjax/train": ("genjax.cli", "genjax.configs", "genjax.benchmarks"),
    "genjax/eval": ("genjax.train", "genjax.cli", "genjax.configs", "genjax.benchmarks"),
  }
  for path, banned in rules.items():
    full = os.path.join(root, path)
    files = (
      [full] if full.endswith(".py") else [os.path.join(full, f) for f in os.listdir(full) if f.endswith(".py")]
    )
    for f in files:
      text = open(f).read()
      for module in banned:
        assert f"import {module}" not in text and f"from {module}" not in text, f"{f} imports {module}"
