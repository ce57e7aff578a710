"""`python -m experiments.evaluate` in the source tree: the same as `python -m genjax.cli.evaluate`."""

from genjax.cli.evaluate import entry

if __name__ == "__main__":
  entry()
