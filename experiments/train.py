"""`python -m experiments.train` in the source tree: the same as `python -m genjax.cli.train`."""

from genjax.cli.train import entry

if __name__ == "__main__":
  entry()
