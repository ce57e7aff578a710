"""Source-tree alias: `python -m benchmarks.peer_compare` runs `genjax.benchmarks.peer_compare`."""

from genjax.benchmarks.peer_compare import main

if __name__ == "__main__":
  main()
