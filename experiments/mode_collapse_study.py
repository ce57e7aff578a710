"""Source-tree alias: `python -m experiments.mode_collapse_study` runs `genjax.cli.mode_collapse_study`."""

from genjax.cli.mode_collapse_study import entry

if __name__ == "__main__":
  entry()
