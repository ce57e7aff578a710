"""Model families behind one contract (`genjax.models.base.Family`), found by name.

`get_family(config, info)` builds the family `config.model.family` names: the class
that module `genjax/models/<name>.py` registered with `@register`. Adding a family
means adding its module (plus its config and tests); nothing here changes.
"""

from __future__ import annotations

from typing import Any

from genjax.models.base import (
  Evaluation,
  Family,
  Figure,
  FigureOptions,
  Precision,
  family_class,
  register,
  registered,
)


def get_family(config: Any, info: Any) -> Family:
  """The family `config.model.family` names, built for the dataset `info` describes."""
  return family_class(config.model.family)(config, info)


__all__ = [
  "Evaluation",
  "Family",
  "Figure",
  "FigureOptions",
  "Precision",
  "family_class",
  "get_family",
  "register",
  "registered",
]
