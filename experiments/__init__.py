"""Source-tree aliases of the launch scripts in `genjax.cli` (installed: the genjax-* console scripts)."""
