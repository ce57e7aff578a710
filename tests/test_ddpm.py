"""The U-Net and the DDPM family: shapes, batch independence, the paper's size, the bound, the CLI."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genjax.data
from genjax import diffusion, losses
from genjax.configs import ddpm as ddpm_config
from genjax.models import FigureOptions
from genjax.models.base import PICTURE_POINTS
from genjax.models.ddpm import DDPMFamily
from genjax.nn.unet import TimeMLP, UNet, timestep_embedding
from genjax.train.state import param_count
from tests.helpers import run_module, tiny_config


def _shape_of(net, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  t = jax.ShapeDtypeStruct(shape[:1], jnp.int32)
  params = jax.eval_shape(net.init, jax.random.key(0), x, t)
  return jax.eval_shape(net.apply, params, x, t).shape, params


@pytest.mark.parametrize(
  "shape, ch_mult, pad_to, run_at",
  [
    ((2, 28, 28, 1), (1, 2, 2, 2), 32, (32, 32)),  # MNIST, padded to 32 inside the network
    ((2, 28, 28, 1), (1, 2, 2), 0, (28, 28)),  # 3 levels divide 28: no padding needed
    ((2, 32, 32, 3), (1, 2, 2, 2), 0, (32, 32)),
    ((2, 64, 64, 3), (1, 2, 2, 2, 4), 0, (64, 64)),
    ((2, 8, 8, 1), (1, 2), 0, (8, 8)),
  ],
)
def test_unet_output_shape_for_every_supported_input(shape, ch_mult, pad_to, run_at):
  net = UNet(ch=8, ch_mult=ch_mult, num_res_blocks=1, attn_resolutions=(8,), norm_groups=4, pad_to=pad_to)
  assert net.padding(*shape[1:3]) == run_at
  out_shape, _ = _shape_of(net, shape)
  assert out_shape == shape


def test_paper_cifar10_unet_has_35_7m_parameters():
  cfg = ddpm_config.get_config("cifar10").model
  net = UNet(
    ch=cfg.ch,
    ch_mult=cfg.ch_mult,
    num_res_blocks=cfg.num_res_blocks,
    attn_resolutions=cfg.attn_resolutions,
    dropout=cfg.dropout,
    norm_groups=cfg.norm_groups,
  )
  out_shape, params = _shape_of(net, (1, 32, 32, 3))
  assert out_shape == (1, 32, 32, 3)
  assert param_count(params) == 35_746_307  # Ho et al.'s released CIFAR-10 model: 35.7M


def test_unet_batch_elements_are_independent_and_padding_is_cropped():
  net = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(5,), norm_groups=4, dropout=0.0)
  x = jax.random.normal(jax.random.key(0), (3, 10, 10, 1))
  t = jnp.array([0, 5, 9])
  params = net.init(jax.random.key(1), x, t)
  # Zero-initialized output convs would give exactly 0 everywhere; perturb every weight.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(
    tree, [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
  )
  apply = jax.jit(lambda x, t: net.apply(params, x, t))
  out = apply(x, t)
  assert net.padding(10, 10) == (10, 10) and out.shape == x.shape
  x2 = x.at[1:].set(jax.random.normal(jax.random.key(3), (2, 10, 10, 1)))
  out2 = apply(x2, t.at[1:].set(jnp.array([7, 1])))
  np.testing.assert_allclose(np.asarray(out2[0]), np.asarray(out[0]), atol=1e-5)
  assert not np.allclose(np.asarray(out2[1]), np.asarray(out[1]))
  assert not np.allclose(np.asarray(out[0]), np.asarray(apply(x, jnp.array([9, 5, 9]))[0]))  # time matters


def test_timestep_embedding_is_sin_then_cos():
  emb = np.asarray(timestep_embedding(jnp.array([0, 3]), 8))
  freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
  np.testing.assert_allclose(emb[1], np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]), rtol=1e-5)
  np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


def _family(preset="tiny", **overrides):
  cfg = tiny_config("ddpm", preset, **{k if "." in k else f"model.{k}": v for k, v in overrides.items()})
  info, splits = genjax.data.load_dataset(cfg.data)
  return DDPMFamily(cfg, info), splits, cfg


def test_family_bound_is_the_sum_of_its_terms_in_bits_per_dim():
  family, splits, _ = _family()
  batch = splits["test"][np.arange(4)]
  params, _ = family.init(jax.random.key(0), batch)
  full = jax.jit(lambda p, k: family.evaluate(p, {}, batch, k, full_bound=True))(params, jax.random.key(1))
  parts = sum(np.asarray(full[k]) for k in ("prior_bits_per_dim", "kl_bits_per_dim", "decoder_bits_per_dim"))
  np.testing.assert_allclose(np.asarray(full["bits_per_dim"]), parts, rtol=1e-5)
  np.testing.assert_allclose(
    np.asarray(full["bits_per_dim"]), np.asarray(full["nll_bound"]) / (64 * np.log(2.0)), rtol=1e-6
  )
  # The same numbers straight from genjax.diffusion on the [-1, 1] images.
  x0 = jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1.0
  direct = diffusion.full_bound(
    family.schedule,
    family.eps_fn(params),
    jax.random.split(jax.random.key(1))[1],
    x0,
    "fixed_small",
    clip_denoised=True,
  )
  np.testing.assert_allclose(
    np.asarray(full["bits_per_dim"]), np.asarray(losses.bits_per_dim(direct["total"], 64)), rtol=1e-5
  )
  # An untrained network predicts eps = 0 (zero-initialized output): bound well above 8 bits/dim.
  assert np.all(np.asarray(full["bits_per_dim"]) > 8.0)
  cheap = family.evaluate(params, {}, batch, jax.random.key(1))
  assert set(cheap) == {"simple_loss", "nll_bound_estimate", "bits_per_dim_estimate"}
  np.testing.assert_allclose(np.asarray(cheap["simple_loss"]), 1.0, rtol=0.3)  # eps = 0: E[noise^2] = 1


def test_family_sampling_is_deterministic_per_key_and_returns_images():
  family, splits, _ = _family()
  params, _ = family.init(jax.random.key(0), splits["test"][np.arange(2)])
  gen = jax.jit(family.generate, static_argnames="num")
  a, b = gen(params, {}, jax.random.key(5), num=3), gen(params, {}, jax.random.key(5), num=3)
  assert a.shape == (3, 8, 8, 1) and a.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  family4, _, _ = _family(**{"sampling.ddim_steps": 4})
  ddim = family4.sample_model(params, jax.random.key(5), 3, sampler="ddim")
  assert ddim.shape == (3, 8, 8, 1) and float(jnp.max(jnp.abs(ddim))) <= 1.0 + 1e-6  # clipped x0_hat
  with pytest.raises(ValueError, match="model.variance='learned' is not valid"):
    _family(variance="learned")
  with pytest.raises(ValueError, match="sampling.ddim_steps=11 is not valid: expected at most"):
    _family(**{"sampling.ddim_steps": 11})


def test_toy_family_draws_vectors_and_a_scatter_picture():
  family, splits, _ = _family("tiny,toy", num_timesteps=10, mlp_hidden=(16,), **{"sampling.interp_t": 5})
  assert isinstance(family.net, TimeMLP) and not family.images
  batch = splits["train"][np.arange(8)]
  params, _ = family.init(jax.random.key(0), batch)
  loss, (metrics, _) = family.loss(params, {}, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and "simple_loss" in metrics
  x = family.generate(params, {}, jax.random.key(2), 5)
  assert x.shape == (5, 2) and x.dtype == jnp.float32
  grid = family.sample_grid(params, {}, jax.random.key(2), batch, num=4)
  assert grid.kind == "points" and grid.data.shape == (PICTURE_POINTS, 2)
  assert set(family.figures()) == {"samples"}  # trajectories and interpolations are for images
  full = family.evaluate(params, {}, batch, jax.random.key(3), full_bound=True)
  assert "bits_per_dim" not in full and np.all(np.isfinite(np.asarray(full["nll_bound"])))


def test_tiny_preset_trains_evaluates_and_samples_from_the_command_line(tmp_path):
  workdir = str(tmp_path / "run")
  cfg = "--config=configs/ddpm.py:tiny"
  p = run_module(
    "experiments.train",
    cfg,
    f"--workdir={workdir}",
    "--config.train.num_steps=4",
    "--config.train.eval_every=4",
    "--config.train.checkpoint_every=4",
    "--config.train.sample_every=4",
  )
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000004.png"))
  p = run_module("experiments.evaluate", cfg, f"--workdir={workdir}", "--config.eval.bound_examples=20")
  assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(p.stdout.strip().splitlines()[-1])
  assert result["num_examples"] == 20 and result["step"] == 4 and result["full_bound"]
  parts = result["prior_bits_per_dim"] + result["kl_bits_per_dim"] + result["decoder_bits_per_dim"]
  assert result["bits_per_dim"] == pytest.approx(parts, rel=1e-5)
  out = str(tmp_path / "samples.png")
  p = run_module(
    "experiments.sample",
    cfg,
    f"--workdir={workdir}",
    "--kind=samples",
    "--num=10",
    f"--out={out}",
    "--config.sampling.sampler=ddim",
    "--config.sampling.ddim_steps=3",
    "--config.sampling.ddim_eta=1.0",
  )
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.exists(out)


def test_trajectory_and_interpolation_figures():
  family, splits, _ = _family(**{"sampling.trajectory_every": 5})
  test = splits["test"]
  params, _ = family.init(jax.random.key(0), test[np.arange(2)])
  figures = family.figures()
  traj = figures["trajectory"](params, {}, jax.random.key(1), test, FigureOptions(num=2))
  assert traj.data.shape == (4, 8, 8, 1) and traj.ncol == 2 and traj.data.dtype == jnp.uint8
  interp = figures["interpolation"](params, {}, jax.random.key(1), test, FigureOptions(num=10))
  images = np.asarray(interp.data)
  assert images.shape == (10, 8, 8, 1) and interp.ncol == 10
  rng = np.random.default_rng(0)  # the figure's choice of test images (FigureOptions.seed = 0)
  ends = test[rng.choice(len(test), size=2, replace=False)]["image"]
  np.testing.assert_array_equal(images[0], ends[0])  # the endpoints are the images
  np.testing.assert_array_equal(images[-1], ends[1])
  with pytest.raises(ValueError, match="interpolation step"):
    family.interpolate(params, jax.random.key(1), ends[0], ends[1], t=10)
