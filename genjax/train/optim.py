"""optax optimizers and learning-rate schedules from `config.optim`."""

from __future__ import annotations

from typing import Any

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


def make_schedule(cfg: Any, num_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step.

  cfg fields: learning_rate, schedule, warmup_steps (linear warm-up from 0 for every schedule).
  """
  lr = cfg.learning_rate
  warmup = int(cfg.warmup_steps)
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={cfg.schedule!r} is not valid; expected one of {SCHEDULES}")
  if lr <= 0:
    raise ValueError(f"optim.learning_rate must be positive, got {lr}")
  decay_steps = max(num_steps - warmup, 1)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif cfg.schedule in ("cosine", "warmup_cosine"):
    main = optax.cosine_decay_schedule(lr, decay_steps)
  else:
    main = optax.linear_schedule(lr, 0.0, decay_steps)
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg: Any, num_steps: int) -> optax.GradientTransformation:
  """Gradient clipping (global norm, if `grad_clip > 0`) followed by the optimizer."""
  schedule = make_schedule(cfg, num_steps)
  if cfg.name == "adam":
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  elif cfg.name == "sgd":
    opt = optax.sgd(schedule, momentum=cfg.b1 or None)
  else:
    raise ValueError(f"optim.name={cfg.name!r} is not valid; expected one of {OPTIMIZERS}")
  if cfg.grad_clip and cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt
