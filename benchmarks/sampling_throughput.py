"""Source-tree alias: `python -m benchmarks.sampling_throughput` runs `genjax.benchmarks.sampling_throughput`."""

from genjax.benchmarks.sampling_throughput import entry

if __name__ == "__main__":
  entry()
