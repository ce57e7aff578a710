"""Source-tree aliases of `genjax.benchmarks`."""
