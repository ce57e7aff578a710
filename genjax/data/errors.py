"""The error genjax's data input raises for a bad data setting or bad data files."""


class DataConfigError(ValueError):
  """A data setting or the data it points at is wrong.

  The message is one line that names the offending path or value and says what was
  expected, e.g. ``data.path '/x/imgs' does not exist; expected a directory of images``.
  The launch scripts print it without a traceback.
  """
