"""Source-tree alias: `python -m benchmarks.op_report` runs `genjax.benchmarks.op_report`."""

from genjax.benchmarks.op_report import entry

if __name__ == "__main__":
  entry()
