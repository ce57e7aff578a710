"""Source-tree alias: `python -m experiments.gan_bimodal_study` runs `genjax.cli.gan_bimodal_study`."""

from genjax.cli.gan_bimodal_study import entry

if __name__ == "__main__":
  entry()
