"""optax optimizers and learning-rate schedules from the `optim` config section.

`OptimConfig` declares the section's keys; `make_optimizer(cfg, num_steps)` builds
gradient clipping (global norm, if `grad_clip > 0`) followed by Adam, AdamW or SGD on
the schedule. A family builds its optimizer through `Family.make_optimizer`, which
calls this by default (the GAN builds one per player).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import optax

from genjax.schema import require

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """The `optim` section (see `genjax/configs/default.py` for what each key does)."""

  name: Literal["adam", "adamw", "sgd"]
  learning_rate: float
  schedule: Literal["constant", "cosine", "warmup_cosine", "linear"]
  warmup_steps: int
  schedule_steps: int  # decay horizon; 0 = train.num_steps
  b1: float
  b2: float
  eps: float
  weight_decay: float
  grad_clip: float  # global-norm clipping; 0 = off

  def __post_init__(self):
    require(0 < self.learning_rate < float("inf"), "learning_rate", self.learning_rate, "a positive finite number")
    require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
    require(
      self.schedule_steps >= 0, "schedule_steps", self.schedule_steps, "an integer >= 0 (0 = train.num_steps)"
    )
    require(0 <= self.b1 < 1, "b1", self.b1, "a number in [0, 1)")
    require(0 <= self.b2 < 1, "b2", self.b2, "a number in [0, 1)")
    require(self.eps > 0, "eps", self.eps, "a positive number")
    require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
    require(self.grad_clip >= 0, "grad_clip", self.grad_clip, "a number >= 0 (0 = off)")


def make_schedule(cfg: OptimConfig, num_steps: int) -> optax.Schedule:
  """Learning rate as a function of the update count: a linear warm-up from 0, then the schedule.

  Decaying schedules reach their end after `num_steps` updates (the warm-up included).
  """
  lr, warmup = cfg.learning_rate, int(cfg.warmup_steps)
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


def make_optimizer(cfg: OptimConfig, num_steps: int) -> optax.GradientTransformation:
  """Gradient clipping (global norm, if `grad_clip > 0`) followed by the optimizer, over `num_steps` updates."""
  schedule = make_schedule(cfg, num_steps)
  if cfg.name == "adam":
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  else:
    opt = optax.sgd(schedule, momentum=cfg.b1 or None)
  if cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
  return opt
