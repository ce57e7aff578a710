"""Times the compiled train step of a config.

  python -m benchmarks.step_throughput --config=configs/vae.py [--steps=50 --repeats=5]
  python -m benchmarks.step_throughput --config=configs/vae.py --batch_sizes=32,128,512

For each batch size it compiles the step once (timed), warms up, then times
`--repeats` blocks of `--steps` steps and reports the median block. Prints a table
and, as its last line, one JSON object per batch size in a list: steps/s,
examples/s, compile seconds, device kind and count, batch size, parameter count, the
networks' compute `dtype` and `param_dtype` (`--config.model.dtype=bfloat16` for mixed precision),
and what it ran with: `xla_flags` (with `xla_flags_source`: 'user', 'genjax' (chosen
by `genjax.xla_flags` for this config) or 'none'), `jax`, `jaxlib`, `cpu`, `cpu_count`,
`malloc` (huge pages, the retaining allocator: `genjax.hugepages`). Where the OS reports
them (`getrusage`), the timed blocks' page faults and user and kernel CPU time per step and
the process's peak resident memory (`page_faults_per_step`, `user_ms_per_step`,
`kernel_ms_per_step`, `max_rss_mb`): where memory that is mapped afresh each step costs.
Data come from the config's dataset, drawn once and reused, so the number measures
the step, not the input pipeline.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import flags

from genjax.cli import common

STEPS = flags.DEFINE_integer("steps", 50, "Steps per timed block.")
REPEATS = flags.DEFINE_integer("repeats", 5, "Timed blocks; the median is reported.")
WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after compiling.")
BATCH_SIZES = flags.DEFINE_list("batch_sizes", [], "Global batch sizes to time (default: the config's).")
OUT = flags.DEFINE_string("out", None, "Also append the JSON records to this file (JSON lines).")


def _usage():
  try:
    import resource
  except ImportError:  # not Unix
    return None
  return resource.getrusage(resource.RUSAGE_SELF)


def _usage_per_step(before, after, n: int) -> dict:
  """Page faults and user / kernel CPU ms per step between two `getrusage`s, and peak RSS (MB)."""
  if before is None or after is None:
    return {}
  return {
    "page_faults_per_step": (after.ru_minflt + after.ru_majflt - before.ru_minflt - before.ru_majflt) / n,
    "user_ms_per_step": 1e3 * (after.ru_utime - before.ru_utime) / n,
    "kernel_ms_per_step": 1e3 * (after.ru_stime - before.ru_stime) / n,
    "max_rss_mb": after.ru_maxrss / 1024,  # Linux reports KiB
  }


def measure(config, batch_size: int, steps: int, repeats: int, warmup: int) -> dict:
  """Times one config's train step at one global batch size; returns the record."""
  import jax
  import numpy as np

  from genjax.benchmarks import environment
  from genjax.train.experiment import Experiment
  from genjax.train.sharding import one_step_in_flight
  from genjax.train.state import param_count

  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.batch_size = batch_size
  exp = Experiment(config)
  state = exp.init_state()
  batch = exp.shard(exp.splits["train"][np.arange(batch_size) % len(exp.splits["train"])])
  step_fn = exp.train_step()
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  sync = one_step_in_flight(exp.mesh)  # as the train loop does (multi-device CPU)
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
    if sync:
      jax.block_until_ready(state.step)
  jax.block_until_ready(state)
  usage0 = _usage()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch)
      if sync:
        jax.block_until_ready(state.step)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - t0) / steps)
  median = statistics.median(times)
  usage = _usage_per_step(usage0, _usage(), steps * repeats)
  memory = None
  try:
    memory = compiled.memory_analysis().temp_size_in_bytes
  except Exception:  # not every backend reports it
    pass
  step_gflop = None
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    step_gflop = float(cost["flops"]) / 1e9
  except Exception:  # not every backend reports it
    pass
  device = jax.devices()[0]
  fused_gflop = 0.0  # genjax's CPU kernels: custom calls, whose FLOPs XLA's cost analysis does not see
  if device.platform == "cpu":
    from genjax.benchmarks.op_report import collect_ops

    ops = collect_ops(jax.make_jaxpr(step_fn)(state, batch))
    fused_gflop = sum(op.flops * op.count for op in ops if op.native) / 1e9
    if step_gflop is not None:
      step_gflop += fused_gflop
  return {
    "config": exp.family.name,
    "dataset": exp.info.name,
    "batch_size": batch_size,
    "steps_per_sec": 1.0 / median,
    "examples_per_sec": batch_size / median,
    "step_ms_median": 1e3 * median,
    "step_ms_min": 1e3 * min(times),
    "compile_seconds": compile_s,
    "device_kind": device.device_kind,
    "platform": device.platform,
    "device_count": exp.mesh.devices.size,
    "param_count": param_count(state.params),
    "temp_bytes": memory,
    "step_gflop": step_gflop,  # XLA's cost analysis of the whole step, plus the fused kernels'
    "fused_gflop": fused_gflop,
    "dtype": str(exp.family.compute_dtype),  # model.dtype: the networks' compute dtype
    "param_dtype": str(exp.family.param_dtype),
    "steps": steps,
    "repeats": repeats,
    "one_step_in_flight": sync,
    **usage,
    **environment.describe(),  # XLA flags (whose), jax / jaxlib versions, CPU model
  }


def main(argv):
  del argv
  config = common.CONFIG.value
  sizes = [int(b) for b in BATCH_SIZES.value] or [config.train.batch_size]
  records = [measure(config, b, STEPS.value, REPEATS.value, WARMUP.value) for b in sizes]
  header = (
    f"{'config':<18}{'dataset':<16}{'devices':>8}{'batch':>7}{'steps/s':>10}{'examples/s':>12}"
    f"{'ms/step':>9}{'compile s':>10}{'params':>10}{'dtype':>10}"
  )
  print(header)
  for r in records:
    print(
      f"{r['config']:<18}{r['dataset']:<16}{r['device_count']:>8}{r['batch_size']:>7}"
      f"{r['steps_per_sec']:>10.1f}{r['examples_per_sec']:>12.0f}{r['step_ms_median']:>9.2f}"
      f"{r['compile_seconds']:>10.2f}{r['param_count']:>10d}{r['dtype']:>10}"
    )
  print(f"device: {records[0]['device_kind']} ({records[0]['platform']}) x{records[0]['device_count']}")
  if OUT.value:
    with open(OUT.value, "a") as f:
      for r in records:
        f.write(json.dumps(r, sort_keys=True) + "\n")
  print(json.dumps(records if len(records) > 1 else records[0], sort_keys=True))


def entry() -> None:
  """The `genjax-bench-step` console script."""
  common.run(main, __name__)


if __name__ == "__main__":
  entry()
