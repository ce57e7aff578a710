"""`python -m experiments.sample` in the source tree: the same as `python -m genjax.cli.sample`."""

from genjax.cli.sample import entry

if __name__ == "__main__":
  entry()
