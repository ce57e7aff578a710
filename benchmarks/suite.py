"""Source-tree alias: `python -m benchmarks.suite` runs `genjax.benchmarks.suite` (`genjax-bench`)."""

from genjax.benchmarks.suite import main

if __name__ == "__main__":
  main()
