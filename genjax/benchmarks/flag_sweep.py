"""Whole-step time of benchmark cases under each candidate XLA:CPU flag set: the data behind
`genjax.xla_flags`' rule.

  python -m benchmarks.flag_sweep                      # the suite's conv cases, 3 rounds
  python -m benchmarks.flag_sweep --only=gan --rounds=5

For every case (the step-throughput suite's cases with convolutions) and round, it runs
`benchmarks.step_throughput` once per flag set in `genjax.xla_flags.CANDIDATES`, each in
its own process with `XLA_FLAGS` set explicitly (XLA's defaults with
`GENJAX_NO_XLA_FLAGS=1`), alternating the order from round to round. It prints, per case,
the median step time of each flag set, the case's widest convolution and the ratio, and
lines to paste into `genjax.xla_flags.MEASURED` (the rule is derived from that table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from genjax import xla_flags
from genjax.benchmarks import peer_compare, suite


def _config(spec: str):
  import importlib

  path, _, preset = spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return importlib.import_module(f"genjax.configs.{name}").get_config(preset or None)


def run(config: str, batch: int, flags: tuple[str, ...], steps: int, repeats: int, warmup: int | None) -> dict:
  """One step-throughput process with exactly `flags` as XLA_FLAGS (none: XLA's defaults)."""
  env = dict(os.environ)
  for k in (xla_flags.ENV, xla_flags.MARK, xla_flags.OFF):
    env.pop(k, None)
  if flags:
    env[xla_flags.ENV] = " ".join(flags)
  else:
    env[xla_flags.OFF] = "1"
  return peer_compare.run_genjax(
    config, batch, steps, repeats, None, warmup=2 if warmup is None else warmup, env=env
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--only", default="", help="the cases whose name contains this")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default=None, help="append the records here (JSON lines)")
  args = ap.parse_args()
  cases = []
  for name, config, sizes, devices, _, *caps in suite.CASES:
    if devices or " " in config or args.only not in name:
      continue  # forced devices, or a variant with overrides (bf16, remat) of a case swept as itself
    width = xla_flags.widest_conv(_config(config))
    if not width:
      continue
    caps = caps[0] if caps else {}
    cases.append((name, config, sizes[0], width, caps))
  results = []
  for name, config, batch, width, caps in cases:
    steps, repeats = (
      min(args.steps, caps.get("steps", args.steps)),
      min(args.repeats, caps.get("repeats", args.repeats)),
    )
    times: dict[str, list[float]] = {c: [] for c in xla_flags.CANDIDATES}
    for r in range(args.rounds):
      order = list(xla_flags.CANDIDATES)
      order = order if r % 2 == 0 else order[::-1]
      for cand in order:
        rec = run(config, batch, xla_flags.CANDIDATES[cand], steps, repeats, caps.get("warmup"))
        times[cand].append(rec["step_ms_median"])
      print(f"  {name} round {r + 1}: " + ", ".join(f"{c} {t[-1]:.1f} ms" for c, t in times.items()), flush=True)
    med = {c: statistics.median(t) for c, t in times.items()}
    results.append(
      {
        "case": name,
        "config": config,
        "batch_size": batch,
        "widest_conv": width,
        "step_ms": med,
        "rounds": args.rounds,
        "load_average_1min": os.getloadavg()[0],
      }
    )
  print(
    f"\n{'case':<18}{'widest conv':>12}"
    + "".join(f"{c + ' ms':>18}" for c in xla_flags.CANDIDATES)
    + f"{'ratio':>8}"
  )
  for r in results:
    ms = r["step_ms"]
    print(
      f"{r['case']:<18}{r['widest_conv']:>12}"
      + "".join(f"{ms[c]:>18.1f}" for c in ms)
      + f"{ms['default'] / ms['eigen_convs']:>8.2f}"
    )
  print("\n# for genjax.xla_flags.MEASURED:")
  for r in results:
    ms = ", ".join(f'"{c}": {v:.1f}' for c, v in r["step_ms"].items())
    print(f'  ("{r["case"]}", {r["widest_conv"]}, {{{ms}}}),')
  threshold = xla_flags.eigen_threshold([(r["case"], r["widest_conv"], r["step_ms"]) for r in results])
  print(f"# -> Eigen convolutions from {threshold} channels" if threshold else "# -> no case gains")
  if args.out:
    with open(args.out, "a") as f:
      for r in results:
        f.write(json.dumps(r, sort_keys=True) + "\n")


if __name__ == "__main__":
  main()
