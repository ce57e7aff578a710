"""Class-conditional DDPM with classifier-free guidance: the guided epsilon, label dropout,
the conditional bound, the guidance figure, the unconditional model unchanged, the CLI."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genjax.data
from genjax import diffusion
from genjax.models import FigureOptions
from genjax.models.ddpm import GUIDANCE_SCALES, DDPMFamily
from genjax.nn.unet import UNet
from genjax.schema import ConfigError
from genjax.train.state import param_count
from tests.helpers import run_module, tiny_config


def _family(preset="conditional,tiny", **overrides):
  cfg = tiny_config("ddpm", preset, **{k if "." in k else f"model.{k}": v for k, v in overrides.items()})
  info, splits = genjax.data.load_dataset(cfg.data)
  return DDPMFamily(cfg, info), splits


def _init(family, batch):
  """Random parameters of the family's shapes, every weight nonzero (the zero-initialized output
  conv would make eps = 0), drawn on the host: no compile, unlike `family.init`."""
  shapes = jax.eval_shape(family.init, jax.random.key(0), batch)[0]
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def conditional():
  family, splits = _family()
  batch = splits["test"][np.arange(6)]
  return family, splits, batch, _init(family, batch)


def test_unet_label_embedding_adds_only_its_table():
  base = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), norm_groups=4)
  cond = base.clone(num_classes=10)
  x, t = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32)
  p0 = jax.eval_shape(base.init, jax.random.key(0), x, t)["params"]
  p1 = jax.eval_shape(cond.init, jax.random.key(0), x, t, label=t)["params"]
  assert set(p1) - set(p0) == {"label_emb"} and p1["label_emb"]["embedding"].shape == (11, 32)  # K + null, 4 ch
  assert param_count(p1) - param_count(p0) == 11 * 32
  with pytest.raises(ValueError, match="class-conditional network needs label int32\\[2\\], got None"):
    jax.eval_shape(cond.init, jax.random.key(0), x, t)
  with pytest.raises(ValueError, match="unconditional \\(num_classes=0\\) but was given labels"):
    jax.eval_shape(base.init, jax.random.key(0), x, t, label=t)


def test_guided_eps_is_the_formula_from_one_call_on_the_doubled_batch():
  calls = []

  def cond_eps(x, t, c):  # a stand-in network whose value depends on x, t and the condition
    calls.append(x.shape[0])
    return jnp.sin(x) * (c[:, None] + 1.0) + 0.1 * t[:, None]

  x = jax.random.normal(jax.random.key(0), (4, 3))
  t = jnp.array([0, 3, 5, 9])
  c, null = jnp.array([0, 1, 2, 1]), jnp.full((4,), 3)
  for w in (0.5, 3.0):
    calls.clear()
    got = diffusion.guided_eps_fn(cond_eps, c, null, w)(x, t)
    assert calls == [8]  # one network call on [x; x]
    e_c = np.sin(np.asarray(x)) * (np.asarray(c)[:, None] + 1.0) + 0.1 * np.asarray(t)[:, None]
    e_u = np.sin(np.asarray(x)) * 4.0 + 0.1 * np.asarray(t)[:, None]
    np.testing.assert_allclose(np.asarray(got), (1 + w) * e_c - w * e_u, rtol=1e-5, atol=1e-6)
  calls.clear()
  plain = diffusion.guided_eps_fn(cond_eps, c, null, 0.0)(x, t)  # a Python 0: no unconditional half
  assert calls == [4]
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(cond_eps(x, t, c)))
  traced = jax.jit(lambda w: diffusion.guided_eps_fn(cond_eps, c, null, w)(x, t))(0.0)  # the formula at w = 0
  np.testing.assert_allclose(np.asarray(traced), np.asarray(plain), rtol=1e-6)
  with pytest.raises(ValueError, match="guidance scale w must be a finite number >= 0, got -1"):
    diffusion.guided_eps_fn(cond_eps, c, null, -1.0)


def test_family_guidance_zero_is_the_conditional_eps_and_w_follows_the_formula(conditional):
  family, _, batch, params = conditional
  x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1))
  t = jnp.array([0, 2, 4, 6, 8, 9])
  labels = jnp.asarray(batch["label"], jnp.int32)

  @jax.jit
  def eps(params):
    e_c = family.eps_fn(params, labels=labels)(x, t)
    e_u = family.eps_fn(params, labels=jnp.full((6,), family.null_label, jnp.int32))(x, t)
    guided = [family.guided_eps_fn(params, labels, w)(x, t) for w in (0.0, 1.0, 2.5)]
    return e_c, e_u, guided

  e_c, e_u, (g0, g1, g25) = jax.tree.map(np.asarray, eps(params))
  assert family.null_label == 10 and not np.allclose(e_c, e_u, atol=1e-3)
  np.testing.assert_array_equal(g0, e_c)
  np.testing.assert_allclose(g1, 2 * e_c - e_u, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(g25, 3.5 * e_c - 2.5 * e_u, rtol=1e-4, atol=1e-4)


def test_label_dropout_rate_and_the_null_label_in_the_loss():
  family, splits = _family(label_dropout=0.3)
  labels = jnp.asarray(np.arange(20000) % 10, jnp.int32)
  dropped = np.asarray(family.drop_labels(labels, jax.random.key(4)))
  is_null = dropped == family.null_label
  rate, sd = is_null.mean(), np.sqrt(0.3 * 0.7 / labels.size)
  assert abs(rate - 0.3) < 4 * sd, rate  # Monte Carlo: Bernoulli(0.3) per label
  np.testing.assert_array_equal(dropped[~is_null], np.asarray(labels)[~is_null])  # the rest are kept
  np.testing.assert_array_equal(dropped, np.asarray(family.drop_labels(labels, jax.random.key(4))))
  # The loss feeds the dropped labels (the null embedding) to the network, keys drawn from the step key.
  batch = splits["train"][np.arange(16)]
  params = _init(family, batch)
  key = jax.random.key(7)

  @jax.jit
  def losses(params):
    k_t, k_noise, k_drop = jax.random.split(key, 3)
    k_drop, k_label = jax.random.split(k_drop)
    used = family.drop_labels(jnp.asarray(batch["label"]), k_label)
    x0 = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1.0
    t = jax.random.randint(k_t, (16,), 0, family.num_timesteps)
    xt, noise = diffusion.q_sample(family.schedule, k_noise, x0, t)

    def manual(labels):
      eps = family.eps_fn(params, train=True, key=k_drop, labels=labels)(xt, t)
      return jnp.mean(diffusion.simple_loss(noise, eps, event_ndims=3))

    return family.loss(params, {}, batch, key)[0], manual(used), manual(batch["label"]), used

  loss, with_null, with_true, used = jax.tree.map(np.asarray, losses(params))
  assert 0 < np.sum(used == 10) < 16  # this key drops some labels and keeps others
  assert float(loss) == pytest.approx(float(with_null), rel=1e-6)
  assert abs(float(loss) - float(with_true)) > 1e-4  # the dropped labels mattered


def test_conditional_bound_is_given_the_true_label(conditional):
  family, _, batch, params = conditional
  x0 = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1.0
  k_bound = jax.random.split(jax.random.key(3))[1]

  @jax.jit
  def bounds(params):
    def bound(labels):
      eps_fn = family.eps_fn(params, labels=jnp.asarray(labels, jnp.int32))
      return diffusion.full_bound(family.schedule, eps_fn, k_bound, x0, "fixed_small", clip_denoised=True)["total"]

    out = family.evaluate(params, {}, batch, jax.random.key(3), full_bound=True)
    return out["nll_bound"], bound(batch["label"]), bound((batch["label"] + 1) % 10)

  got, true, wrong = jax.tree.map(np.asarray, bounds(params))
  np.testing.assert_allclose(got, true, rtol=1e-5)
  assert not np.allclose(true, wrong, rtol=1e-3)
  with pytest.raises(ValueError, match="conditional model needs batch\\['label'\\]"):
    family.evaluate(params, {}, {"image": batch["image"]}, jax.random.key(3))


def test_unconditional_model_is_unchanged_by_conditioning():
  """The old formulation (no label anywhere), written out: same params and key, same loss and samples."""
  family, splits = _family("tiny")
  assert not family.conditional and "guidance" not in family.figures()
  batch = splits["train"][np.arange(8)]
  params = _init(family, batch)
  assert "label_emb" not in params
  net, key, shape = family.net, jax.random.key(5), (3, 8, 8, 1)

  def old_eps(params, train=False, rng=None):
    return lambda x, t: net.apply({"params": params}, x, t, train, rngs={"dropout": rng} if train else None)

  def old(params):
    k_t, k_noise, k_drop = jax.random.split(key, 3)
    x0 = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1.0
    t = jax.random.randint(k_t, (8,), 0, family.num_timesteps)
    xt, noise = diffusion.q_sample(family.schedule, k_noise, x0, t)
    loss = jnp.mean(diffusion.simple_loss(noise, old_eps(params, True, k_drop)(xt, t), event_ndims=len(shape) - 1))
    return loss, diffusion.ancestral_sample(
      family.schedule, old_eps(params), key, shape, "fixed_small", clip_denoised=True
    )

  def new(params):  # (both samplers take the same eps_fn; DDIM is not run again here)
    return family.loss(params, {}, batch, key)[0], family.sample_model(params, key, 3)

  for a, b in zip(jax.jit(old)(params), jax.jit(new)(params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="unconditional; generate\\(\\) takes no labels"):
    family.generate(params, {}, key, 3, labels=jnp.zeros((3,), jnp.int32))
  with pytest.raises(
    ConfigError, match=r"^sampling.guidance=2.0 is not valid: expected 0 for an unconditional model"
  ):
    _family("tiny", **{"sampling.guidance": 2.0})
  with pytest.raises(ConfigError, match=r"^sampling.guidance=-1.0 is not valid"):
    _family(**{"sampling.guidance": -1.0})


def test_guidance_figure_rows_are_classes_and_columns_share_the_noise(conditional):
  family, splits, _, params = conditional
  draw = family.figures()["guidance"]
  key = jax.random.key(9)
  fig = draw(params, {}, key, splits["test"], FigureOptions(num=4))
  ncol = len(GUIDANCE_SCALES)
  assert fig.ncol == ncol and fig.data.shape == (10 * ncol, 8, 8, 1) and fig.data.dtype == jnp.uint8
  grid = np.asarray(fig.data).reshape(10, ncol, 8, 8, 1)
  # Column j is the sample of classes 0..9 at w_j from the figure's key.
  for j in (0, 3):
    x = jax.jit(
      lambda p, j=j: family.sample_model(p, key, 10, labels=jnp.arange(10), guidance=GUIDANCE_SCALES[j])
    )(params)
    assert np.abs(grid[:, j].astype(int) - np.asarray(family.to_data(x)).astype(int)).max() <= 1
  assert len({grid[:, j].tobytes() for j in range(ncol)}) == ncol  # w changes the picture
  # When every class embedding equals the null one, eps(x, c) = eps(x, null) and w has no
  # effect: the columns agree, so they differ only by w (not by their noise).
  emb = params["label_emb"]["embedding"]
  same = dict(params, label_emb={"embedding": jnp.broadcast_to(emb[-1], emb.shape)})
  flat = np.asarray(draw(same, {}, key, splits["test"], FigureOptions(num=4)).data).reshape(10, ncol, -1)
  assert np.abs(flat.astype(int) - flat[:, :1].astype(int)).max() <= 1
  one = draw(params, {}, key, splits["test"], FigureOptions(num=12, label=3))
  assert one.data.shape == (2 * ncol, 8, 8, 1)  # num // ncol rows of class 3


def test_conditional_generate_cycles_through_the_classes_and_takes_labels(conditional):
  family, _, _, params = conditional
  key = jax.random.key(11)
  gen = jax.jit(family.generate, static_argnames="num")
  default = gen(params, {}, key, num=12)  # its labels: the classes in turn
  cycled = gen(params, {}, key, num=12, labels=jnp.arange(12) % 10)
  np.testing.assert_array_equal(np.asarray(default), np.asarray(cycled))
  threes = gen(params, {}, key, num=12, labels=jnp.full((12,), 3))
  assert threes.shape == (12, 8, 8, 1) and not np.array_equal(np.asarray(threes), np.asarray(default))
  with pytest.raises(ValueError, match="labels must lie in \\[0, 9\\]"):
    family.generate(params, {}, key, 2, labels=jnp.array([0, 10]))


def test_conditional_toy_draws_labelled_points():
  family, splits = _family("toy,conditional,tiny", num_timesteps=10, mlp_hidden=(16,), **{"sampling.interp_t": 5})
  batch = splits["train"][np.arange(8)]
  params = _init(family, batch)
  assert params["label_emb"]["embedding"].shape == (9, 64)  # 8 modes + the null label
  loss, _ = jax.jit(family.loss)(params, {}, batch, jax.random.key(1))
  assert np.isfinite(float(loss))
  grid = jax.jit(family.sample_grid, static_argnames="num")(params, {}, jax.random.key(2), batch, num=4)
  assert grid.kind == "points" and grid.labels is not None and grid.labels.shape == grid.data.shape[:1]


def test_cli_samples_a_class_with_guidance_on_the_tiny_preset(tmp_path):
  """`experiments.sample --label=3 --guidance=3` and `--kind=guidance` on a checkpoint of `conditional,tiny`
  (an untrained one, saved here as the trainer saves it: the command line is what is tested)."""
  from genjax.train.experiment import Experiment
  from genjax.train.sharding import make_mesh

  workdir = str(tmp_path / "run")
  exp = Experiment(tiny_config("ddpm", "conditional,tiny"), mesh=make_mesh(1))
  ckpt = exp.checkpointer(workdir, async_save=False)
  ckpt.save(exp.init_state(), data_position=0)
  ckpt.close()
  from genjax.train.loop import _config_json
  from genjax.train.workdir import commit_config

  commit_config(workdir, _config_json(exp.config))
  cfg = "--config=configs/ddpm.py:conditional,tiny"
  for args in (["--label=3", "--guidance=3", "--num=8"], ["--kind=guidance"]):
    out = str(tmp_path / f"{len(args)}.png")
    p = run_module("experiments.sample", cfg, f"--workdir={workdir}", *args, f"--out={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert os.path.getsize(out) > 0
  p = run_module(
    "experiments.sample", "--config=configs/ddpm.py:tiny", f"--workdir={tmp_path}/none", "--guidance=3"
  )
  assert p.returncode == 2 and "sampling.guidance=3.0 is not valid: expected 0 for an unconditional" in p.stderr
