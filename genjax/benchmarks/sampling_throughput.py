"""Times a family's compiled sampler.

  python -m benchmarks.sampling_throughput --config=configs/pixelcnn.py [--num=16 --repeats=3]

Compiles `family.generate` once for `--num` samples (timed), then reports the median of
`--repeats` timed calls: images/s and seconds per image, as a table line and a JSON
line. Parameters are the fresh initialization: the sampler's cost does not depend on
their values.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import flags

from genjax.cli import common

NUM = flags.DEFINE_integer("num", 16, "Images per sampler call.")
REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls; the median is reported.")


def measure(config, num: int, repeats: int) -> dict:
  import jax

  from genjax.train.experiment import Experiment

  exp = Experiment(config)
  state = exp.init_state()
  generate = jax.jit(exp.family.generate, static_argnames=("num",))
  key = exp.sample_key()
  t0 = time.perf_counter()
  compiled = generate.lower(state.params, state.model_state, key, num=num).compile()
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state.params, state.model_state, jax.random.fold_in(key, i)))
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  device = jax.devices()[0]
  return {
    "config": exp.family.name,
    "dataset": exp.info.name,
    "num": num,
    "images_per_sec": num / median,
    "seconds_per_image": median / num,
    "call_seconds_median": median,
    "compile_seconds": compile_s,
    "device_kind": device.device_kind,
    "platform": device.platform,
    "repeats": repeats,
  }


def main(argv):
  del argv
  r = measure(common.CONFIG.value, NUM.value, REPEATS.value)
  print(
    f"{r['config']:<18}{r['dataset']:<16}{r['num']:>5} images  {r['images_per_sec']:.3f} images/s  "
    f"{r['seconds_per_image']:.3f} s/image  compile {r['compile_seconds']:.1f} s  ({r['device_kind']})"
  )
  print(json.dumps(r, sort_keys=True))


def entry() -> None:
  """The `genjax-bench-sampling` console script."""
  common.run(main, __name__)


if __name__ == "__main__":
  entry()
