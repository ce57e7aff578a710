"""The two-player (GAN) train step and its optimizers: one compiled program per step.

A two-player family (`family.two_player = True`, see `genjax.models.gan`) has params
`{'generator': ..., 'discriminator': ...}`, batch-norm statistics
`model_state = {'generator': ..., 'discriminator': ...}` and two objectives,
`discriminator_loss(d_params, g_params, model_state, batch, key)` and
`generator_loss(g_params, d_params, model_state, batch, key)`, each returning
`(loss, (metrics, new statistics of that player))`.

One step = `k = family.d_steps` discriminator updates (a `lax.scan`) then one
generator update, all inside one `jax.jit` with the same shardings as
`genjax.train.step.make_train_step` (state replicated and donated, batch split over
the 'data' axis, so XLA all-reduces the gradients and the batch-norm moments).

Data: the global batch of B examples holds the k discriminator minibatches:
minibatch i is rows i, i + k, i + 2k, ... (B / k rows; this strided split keeps
every minibatch evenly spread over the devices), so each real example is used once
per step. The generator update draws B fresh latents (and, for a conditional model,
takes the whole batch's labels). B must be divisible by k * devices.

Keys: the step key `fold_in(run_key, step)` is split into the discriminator's key
(split again into one key per update) and the generator's key.

The optimizers are `TwoPlayerOptimizer(generator, discriminator)`: the configured
optimizer (`config.optim`) at `optim.learning_rate` for G and at
`optim.disc_learning_rate` for D (0 = the same), D's schedule counted in its own
updates (k per step). Its state is `{'generator': ..., 'discriminator': ...}`, so
`TrainState` is unchanged. The EMA (`train.ema_decay`) covers both players' params.

Logged: `loss_d` and `loss_g` (`loss` is `loss_d`), `d_real` and `d_fake` (mean D(x)
and D(G(z)) over the discriminator's updates), `d_fake_g` (D(G(z)) seen by the
generator update), `grad_norm_g` (so saturation of the minimax loss shows) and
`grad_norm_d`.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from genjax.train import sharding
from genjax.train.optim import make_optimizer
from genjax.train.state import TrainState, check_ema_decay, ema_decay_at, ema_update


class TwoPlayerOptimizer(NamedTuple):
  """One optax transformation per player; `init` gives the `TrainState.opt_state` dict."""

  generator: optax.GradientTransformation
  discriminator: optax.GradientTransformation

  def init(self, params: dict) -> dict:
    return {
      "generator": self.generator.init(params["generator"]),
      "discriminator": self.discriminator.init(params["discriminator"]),
    }


def make_two_player_optimizer(optim_cfg: Any, num_steps: int, d_steps: int) -> TwoPlayerOptimizer:
  """G at `optim.learning_rate`, D at `optim.disc_learning_rate` (0 = same), schedules over their updates."""
  d_lr = optim_cfg.get("disc_learning_rate", 0.0) or optim_cfg.learning_rate
  if d_lr <= 0:
    raise ValueError(f"optim.disc_learning_rate must be positive (or 0 for optim.learning_rate), got {d_lr}")
  fields = optim_cfg.to_dict() if hasattr(optim_cfg, "to_dict") else dict(vars(optim_cfg))
  d_cfg = types.SimpleNamespace(
    **{**fields, "learning_rate": d_lr, "warmup_steps": int(optim_cfg.warmup_steps) * d_steps}
  )
  return TwoPlayerOptimizer(make_optimizer(optim_cfg, num_steps), make_optimizer(d_cfg, num_steps * d_steps))


def split_minibatches(batch: dict, k: int) -> dict:
  """`{name: [B, ...]}` -> `{name: [k, B // k, ...]}`; minibatch i holds rows i, i + k, ..."""

  def split(a):
    if a.shape[0] % k:
      raise ValueError(f"the batch of {a.shape[0]} examples does not split into model.d_steps = {k} minibatches")
    return jnp.swapaxes(a.reshape((a.shape[0] // k, k) + a.shape[1:]), 0, 1)

  return jax.tree.map(split, batch)


def make_two_player_step(
  family: Any, tx: TwoPlayerOptimizer, ema_decay: float, mesh: Mesh, batch_size: int, ema_warmup: bool = True
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns `step(state, batch) -> (state, metrics)`: k D updates, then one G update, one program."""
  check_ema_decay(ema_decay)
  k = int(family.d_steps)
  n = mesh.devices.size
  if batch_size % (k * n):
    raise ValueError(
      f"train.batch_size {batch_size} must be divisible by model.d_steps * devices = {k} * {n}: "
      f"the batch holds the {k} discriminator minibatches, each split over the devices"
    )

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    k_d, k_g = jax.random.split(state.step_key())
    g_params = state.params["generator"]
    g_state = state.model_state["generator"]

    def d_update(carry, xs):
      d_params, d_opt, d_state = carry
      minibatch, key = xs
      model_state = {"generator": g_state, "discriminator": d_state}
      (loss, (metrics, d_state)), grads = jax.value_and_grad(family.discriminator_loss, has_aux=True)(
        d_params, g_params, model_state, minibatch, key
      )
      updates, d_opt = tx.discriminator.update(grads, d_opt, d_params)
      d_params = optax.apply_updates(d_params, updates)
      return (d_params, d_opt, d_state), dict(metrics, loss_d=loss, grad_norm_d=optax.tree.norm(grads))

    carry = (state.params["discriminator"], state.opt_state["discriminator"], state.model_state["discriminator"])
    (d_params, d_opt, d_state), d_metrics = jax.lax.scan(
      d_update, carry, (split_minibatches(batch, k), jax.random.split(k_d, k))
    )
    d_metrics = jax.tree.map(jnp.mean, d_metrics)

    model_state = {"generator": g_state, "discriminator": d_state}
    (loss_g, (g_metrics, g_state)), g_grads = jax.value_and_grad(family.generator_loss, has_aux=True)(
      g_params, d_params, model_state, batch, k_g
    )
    updates, g_opt = tx.generator.update(g_grads, state.opt_state["generator"], g_params)
    g_params = optax.apply_updates(g_params, updates)

    params = {"generator": g_params, "discriminator": d_params}
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state={"generator": g_opt, "discriminator": d_opt},
      ema_params=ema_update(state.ema_params, params, ema_decay_at(state.step, ema_decay, ema_warmup)),
      model_state={"generator": g_state, "discriminator": d_state},
    )
    metrics = dict(
      d_metrics, **g_metrics, loss_g=loss_g, loss=d_metrics["loss_d"], grad_norm_g=optax.tree.norm(g_grads)
    )
    return new_state, metrics

  rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=(0,))
