"""`python scripts/convert_inception_weights.py` in the source tree: the same as `genjax-convert-inception`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genjax.cli.convert_inception_weights import entry  # noqa: E402

if __name__ == "__main__":
  entry()
