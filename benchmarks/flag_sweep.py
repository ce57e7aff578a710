"""Source-tree alias: `python -m benchmarks.flag_sweep` runs `genjax.benchmarks.flag_sweep`."""

from genjax.benchmarks.flag_sweep import main

if __name__ == "__main__":
  main()
