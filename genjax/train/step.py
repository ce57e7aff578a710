"""Train- and eval-step factories: one `jax.jit` program per step, data-parallel over a mesh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from genjax.models.base import Family
from genjax.train import sharding
from genjax.train.state import TrainState, check_ema_decay, ema_decay_at, ema_update


def make_train_step(
  family: Family,
  tx: optax.GradientTransformation,
  ema_decay: float,
  mesh: Mesh,
  ema_warmup: bool = True,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns `step(state, batch) -> (state, metrics)`, compiled as one program.

  The family's `update` (by default: loss, gradients and the optimizer update; the
  GAN's: k discriminator updates and a generator update), the EMA and the metrics all
  run inside one `jax.jit`. The batch is split over the mesh's 'data' axis and the
  state replicated, so XLA inserts the gradient all-reduce. The step's key is
  `fold_in(run_key, step)`, so the noise is the same on any number of devices and
  after a resume. The input state is donated.
  """
  check_ema_decay(ema_decay)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    params, opt_state, model_state, metrics = family.update(
      tx, state.params, state.opt_state, state.model_state, batch, state.step_key()
    )
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      ema_params=ema_update(state.ema_params, params, ema_decay_at(state.step, ema_decay, ema_warmup)),
      model_state=model_state,
    )
    return new_state, metrics

  rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=(0,))


def make_eval_step(family: Family, mesh: Mesh, **options: Any) -> Callable:
  """Returns `eval_step(params, model_state, batch, mask, key) -> {name: sum over unmasked rows}`.

  Per-example metrics are summed over the unmasked rows, so a padded last batch and
  any device count give the exact split mean once the sums are added up.
  """

  def eval_step(params, model_state, batch, mask, key):
    per_example = family.evaluate(params, model_state, batch, key, **options)
    return {k: jnp.sum(v * mask) for k, v in per_example.items()}

  rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(eval_step, in_shardings=(rep, rep, data, data, rep), out_shardings=rep)
