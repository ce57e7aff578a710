"""Source-tree alias: `python -m benchmarks.step_throughput` runs `genjax.benchmarks.step_throughput`."""

from genjax.benchmarks.step_throughput import entry

if __name__ == "__main__":
  entry()
