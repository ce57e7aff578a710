"""XLA:CPU flags chosen from the config before JAX's backend starts.

XLA reads `XLA_FLAGS` once, when its CPU backend starts, for the whole process; so the
launch scripts and benchmarks call `apply(config)` after parsing the config and before
anything touches a JAX device. It sets flags only when the user has not set `XLA_FLAGS`
(a user's setting is never changed) nor `GENJAX_NO_XLA_FLAGS=1` (XLA's own defaults),
logs its choice in one line, and only chooses
flags that leave results unchanged to float tolerance (they pick which library kernel
runs a convolution, not how it rounds).

The choice is per config, from measurements. This jaxlib sends convolutions with more
than 16 channels to YNNPACK (`individual_convolution` fusions) and the rest to Eigen.
YNNPACK's weight gradients at 16-128 channels are slow (its kernel suits the forward
convolution's shape, not the gradient's huge window and 3x3 output); Eigen's are 1.5-3x
faster, at the cost of slightly slower forward and input-gradient convolutions. Whether
a step gains depends on how much of its time the wide convolutions' weight gradients
take: `MEASURED` holds whole-step times of the benchmark suite's cases with each flag
set (`python -m benchmarks.flag_sweep`), and the rule is derived from it: Eigen
convolutions for a config whose widest convolution has at least `eigen_threshold()`
channels (the narrowest width at which every measured case gained), the default
otherwise. A family declares its convolutions' widths in the contract (`Family.conv_widths`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

ENV = "XLA_FLAGS"
# What genjax itself put in XLA_FLAGS, so a child process (the benchmark suite's cases) can tell
# its parent's choice, which it re-makes for its own config, from a user's setting, which it keeps.
MARK = "GENJAX_XLA_FLAGS"
MARK_REASON = "GENJAX_XLA_FLAGS_REASON"
# Set to 1 to keep genjax from choosing flags (XLA's own defaults; used to measure them).
OFF = "GENJAX_NO_XLA_FLAGS"

# Convolutions on Eigen rather than YNNPACK (the only flag set chosen so far).
EIGEN_CONVS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
CANDIDATES: dict[str, tuple[str, ...]] = {"default": (), "eigen_convs": EIGEN_CONVS}

# Whole-step milliseconds per flag set, medians of interleaved runs of `python -m benchmarks.flag_sweep`
# (2 cores; see the README's benchmark section): (case, widest conv channels, {candidate: ms}).
# Measured 2026-12-01 (jaxlib 0.10.2, 2 cores, load ~1.5), medians of 2 interleaved rounds at the peers'
# batch sizes (README, benchmark section): Eigen gains at 128 and 512 channels, loses at 64 (the flow's
# 1-4-channel couplings run best on YNNPACK), and cannot matter at 16 (YNNPACK takes > 16 only).
MEASURED: list[tuple[str, int, dict[str, float]]] = [
  ("gan_dcgan64_peer", 512, {"default": 1447.0, "eigen_convs": 1307.0}),
  ("ddpm_peer", 128, {"default": 1661.0, "eigen_convs": 1096.0}),
  ("realnvp_peer", 64, {"default": 216.0, "eigen_convs": 288.0}),
  ("pixelcnn_peer", 16, {"default": 1580.0, "eigen_convs": 1553.0}),
]


class Choice(NamedTuple):
  name: str  # a key of CANDIDATES
  flags: tuple[str, ...]
  reason: str


def eigen_threshold(measured: list[tuple[str, int, dict[str, float]]] | None = None) -> int | None:
  """The narrowest conv width from which every measured case ran faster with Eigen convolutions.

  None when no measured case gained (or nothing was measured): then no config gets them.
  """
  measured = MEASURED if measured is None else measured
  gains = sorted((width, t["eigen_convs"] < t["default"]) for _, width, t in measured if width > 0)
  threshold = None
  for width, gained in reversed(gains):  # widest first: extend down while every case gains
    if not gained:
      break
    threshold = width
  return threshold


def widest_conv(config) -> int:
  """The widest convolution (channels) of the config's networks, from the family's `conv_widths`;
  0 without convolutions (vector data, e.g. the 2-D toys, run none)."""
  from genjax.data.toy import TOYS  # numpy only
  from genjax.models.base import family_class  # imports jax, but starts no backend
  from genjax.schema import ConfigError

  if config.data.name in TOYS:
    return 0
  try:
    family = family_class(config.model.family)
  except ConfigError:  # the run reports an unknown family itself, in one line
    return 0
  return max(family.conv_widths(config.model), default=0)


def choose(config) -> Choice:
  """The flag set for `config` (deterministic: a function of the config and `MEASURED` alone)."""
  width = widest_conv(config)
  threshold = eigen_threshold()
  if threshold is not None and width >= threshold:
    return Choice("eigen_convs", EIGEN_CONVS, f"widest conv {width} >= {threshold} channels: Eigen convolutions")
  if threshold is None:
    return Choice("default", (), "no measured case gains from other flags")
  return Choice("default", (), f"widest conv {width} < {threshold} channels: XLA's defaults")


def current(environ: dict | None = None) -> dict:
  """This process's XLA flags: `{'flags', 'source': 'user' | 'genjax' | 'none', 'reason'}`."""
  env = os.environ if environ is None else environ
  flags = env.get(ENV, "")
  if not flags:
    return {"flags": "", "source": "none", "reason": env.get(MARK_REASON)}
  if env.get(MARK) == flags:
    return {"flags": flags, "source": "genjax", "reason": env.get(MARK_REASON)}
  return {"flags": flags, "source": "user", "reason": None}


def describe(environ: dict | None = None) -> str:
  """This process's XLA flags and where they came from, in one line (the trainer logs it at start-up)."""
  info = current(environ)
  source = {"user": "set by the user", "genjax": f"chosen by genjax: {info['reason']}"}
  return f"{info['flags'] or 'XLA defaults'} ({source.get(info['source'], info['reason'] or 'none set')})"


def _backend_started() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # an internal API: assume the worst
    return True


def apply(config, environ: dict | None = None, log: Callable[[str], None] | None = None) -> Choice | None:
  """Chooses and sets `XLA_FLAGS` for `config` unless the user set them; logs one line.

  Returns the choice made, or None when the user's flags were kept or JAX's backend had
  already started (flags set now would not take effect). `environ` defaults to os.environ.
  """
  env = os.environ if environ is None else environ
  log = log or logging.getLogger("genjax").info
  user = env.get(ENV)
  if user and env.get(MARK) != user:
    log(f"XLA_FLAGS set by the user, kept as they are: {user}")
    return None
  if env.get(OFF) == "1":
    for k in (ENV, MARK):
      env.pop(k, None)
    log(f"XLA flags not chosen: {OFF}=1 (XLA's defaults)")
    return None
  if _backend_started():
    log("XLA flags not chosen: JAX's backend had already started (call genjax.xla_flags.apply first)")
    return None
  choice = choose(config)
  flags = " ".join(choice.flags)
  if flags:
    env[ENV] = env[MARK] = flags
  else:  # nothing to set; drop a parent's choice that was made for another config
    for k in (ENV, MARK):
      env.pop(k, None)
  env[MARK_REASON] = choice.reason
  log(f"XLA flags chosen by genjax: {flags or '(none)'} ({choice.reason})")
  return choice
