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
  family: Family, tx: optax.GradientTransformation, ema_decay: float, mesh: Mesh, ema_warmup: bool = True
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns `step(state, batch) -> (state, metrics)`, compiled as one program.

  Loss, gradients, the optimizer update, the EMA and the metrics all run inside one
  `jax.jit`. The batch is split over the mesh's 'data' axis and the state replicated,
  so XLA inserts the gradient all-reduce. The step's key is `fold_in(run_key, step)`,
  so the noise is the same on any number of devices and after a resume. The input
  state is donated.
  """
  check_ema_decay(ema_decay)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    key = state.step_key()

    def loss_fn(params):
      return family.loss(params, state.model_state, batch, key)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      ema_params=ema_update(state.ema_params, params, ema_decay_at(state.step, ema_decay, ema_warmup)),
      model_state=model_state,
    )
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
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
