"""The shared config sections (`train`, `checkpoint`, `eval`, top-level keys), validated once at start-up.

`validate(config, family_cls)` checks the whole config before anything is built: the
top-level keys, these sections (with the extra `eval`/`optim` keys the family
declares), and returns them typed. The family validates its own `model` and
`sampling` sections (and `optim`) when it is built; the data section is validated by
`genjax.data.load_dataset`. Every problem is a `genjax.schema.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from genjax.schema import ConfigError, check_sections, parse, require

SECTIONS = ("seed", "num_devices", "data", "model", "sampling", "optim", "train", "checkpoint", "eval")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The `train` section: the loop's length and intervals (0 = only at the last step)."""

  batch_size: int  # global batch, split over devices and processes
  num_steps: int
  ema_decay: float  # 0 = the EMA equals the params
  ema_warmup: bool  # decay_t = min(decay, (1 + t) / (10 + t))
  log_every: int
  eval_every: int
  sample_every: int
  checkpoint_every: int
  progress_bar: bool  # a progress bar when stderr is a terminal (log lines otherwise)
  tensorboard: bool
  profile_steps: int  # > 0: a jax.profiler trace of that many steps after the first, in WORKDIR/profile

  def __post_init__(self):
    require(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
    require(self.num_steps >= 0, "num_steps", self.num_steps, "an integer >= 0")
    require(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "a number in [0, 1)")
    require(self.log_every >= 1, "log_every", self.log_every, "an integer >= 1")
    require(self.profile_steps >= 0, "profile_steps", self.profile_steps, "an integer >= 0 (0 = off)")
    intervals = {"eval_every": self.eval_every, "sample_every": self.sample_every}
    intervals["checkpoint_every"] = self.checkpoint_every
    for name, value in intervals.items():
      require(value >= 0, name, value, "an integer >= 0 (0 = only at the last step)")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """The `checkpoint` section."""

  keep: int  # the last N, plus the best by the family's metric

  def __post_init__(self):
    require(self.keep >= 1, "keep", self.keep, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """The shared keys of the `eval` section (a family may declare more: `Family.EvalOptions`)."""

  batch_size: int
  use_ema: bool
  num_samples: int  # examples in each periodic sample picture
  frechet_samples: int  # experiments.evaluate: images for the Frechet distance (0 = off)
  toy_samples: int  # experiments.evaluate: vectors for the toy statistics (0 = off)
  feature_net: Literal["classifier", "inception"]
  inception_weights: str

  def __post_init__(self):
    require(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
    require(self.num_samples > 0, "num_samples", self.num_samples, "a positive integer")
    require(self.frechet_samples >= 0, "frechet_samples", self.frechet_samples, "an integer >= 0 (0 = off)")
    require(self.toy_samples >= 0, "toy_samples", self.toy_samples, "an integer >= 0 (0 = off)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The shared sections of a validated config."""

  seed: int
  num_devices: int
  train: TrainConfig
  checkpoint: CheckpointConfig
  eval: EvalConfig


def validate(config: Any, family_cls: Any) -> RunConfig:
  """Validates the shared sections of `config` for a run of `family_cls`; returns them typed."""
  check_sections(config, SECTIONS)
  for key in ("seed", "num_devices"):
    if key not in config:
      raise ConfigError(key, " is missing; declare it in the config file (see genjax/configs/default.py)")
  seed, num_devices = config.seed, config.num_devices
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ConfigError("seed", f"={seed!r} is not valid: expected an integer")
  if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 0:
    raise ConfigError("num_devices", f"={num_devices!r} is not valid: expected an integer >= 0 (0 = all)")
  return RunConfig(
    seed=seed,
    num_devices=num_devices,
    train=parse(TrainConfig, config.train, "train"),
    checkpoint=parse(CheckpointConfig, config.checkpoint, "checkpoint"),
    eval=parse(EvalConfig, config.eval, "eval", others=family_cls.config_keys("eval")),
  )
