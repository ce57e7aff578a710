"""Typed config sections: a frozen dataclass declares a section's keys, types and valid values.

A config file (`genjax/configs/*.py`) is data: an `ml_collections.ConfigDict` whose
sections (`model`, `sampling`, `data`, `optim`, `train`, `checkpoint`, `eval`) hold
plain values. The code that reads a section declares it as a frozen dataclass and
turns the section into an instance with `parse`, once, at start-up:

* every key of the section must be a field (an unknown key is an error naming it and
  listing the valid ones), and every field must be present (a missing key is an
  error); nothing is read with `config.get(key, default)`;
* values are checked against the field's annotation (`int`, `float` (an int is
  accepted), `bool`, `str`, `X | None`, `tuple[int, ...]`, `Literal[...]` for a
  choice);
* the dataclass's `__post_init__` checks ranges with `require(...)`.

Every failure is a `ConfigError` whose one-line message names the full key, the bad
value and what was expected (`model.latent_dim=-3 is not valid: expected a positive
integer`), so a launch script can print it and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class UsageError(ValueError):
  """Bad input from the user (a config value, a flag, a dataset, a workdir): a launch script
  prints `str(error)`, one line, and exits with status 2."""


class ConfigError(UsageError):
  """A missing, unknown or invalid config value; `str(error)` is one line naming the key."""

  def __init__(self, key: str, message: str):
    self.key = key
    self.detail = message
    super().__init__(f"{key}{message}")

  def under(self, prefix: str) -> ConfigError:
    """The same error with `prefix.` in front of its key."""
    return ConfigError(f"{prefix}.{self.key}" if prefix else self.key, self.detail)


def invalid(key: str, value: Any, expected: str) -> ConfigError:
  """`key=value is not valid: expected ...`."""
  return ConfigError(key, f"={_show(value)} is not valid: expected {expected}")


def require(ok: bool, key: str, value: Any, expected: str) -> None:
  """Raises `invalid(key, value, expected)` unless `ok`; for `__post_init__` range checks."""
  if not ok:
    raise invalid(key, value, expected)


def _show(value: Any) -> str:
  if isinstance(value, float) and math.isnan(value):
    return "nan"
  return repr(value)


def _plain(value: Any) -> Any:
  """ConfigDict / FieldReference values -> plain Python values (lists -> tuples)."""
  if hasattr(value, "get") and hasattr(value, "to_dict"):
    return value.to_dict()
  if isinstance(value, list):
    return tuple(value)
  return value


def _check_type(key: str, value: Any, annotation: Any) -> Any:
  """Returns `value` converted to `annotation` (int -> float, list -> tuple), or raises."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin is Literal:
    if value not in args:
      raise invalid(key, value, f"one of {', '.join(map(repr, args))}")
    return value
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _check_type(key, value, arg)
      except ConfigError as e:
        errors.append(e)
    raise errors[0] if errors else invalid(key, value, str(annotation))
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      raise invalid(key, value, f"a tuple of {_type_name(args[0])}")
    value = tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if len(args) != len(value):
      raise invalid(key, value, f"a tuple of {len(args)} values")
    return tuple(_check_type(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
  if annotation is bool:
    if not isinstance(value, bool):
      raise invalid(key, value, "True or False")
    return value
  if annotation is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise invalid(key, value, "an integer")
    return value
  if annotation is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise invalid(key, value, "a number")
    return float(value)
  if annotation is str:
    if not isinstance(value, str):
      raise invalid(key, value, "a string")
    return value
  if annotation is Any:
    return value
  raise TypeError(f"schema field {key} has an unsupported annotation {annotation!r}")


def _type_name(annotation: Any) -> str:
  return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(annotation, str(annotation))


def fields(schema: type) -> tuple[str, ...]:
  """The keys a schema dataclass declares."""
  return tuple(f.name for f in dataclasses.fields(schema))


def parse(schema: type[T], section: Mapping[str, Any] | Any, prefix: str, *, others: Collection[str] = ()) -> T:
  """Validates config section `section` (a ConfigDict or mapping) against `schema`.

  Args:
    schema: a frozen dataclass whose fields are the section's keys.
    section: the section, e.g. `config.model`.
    prefix: the section's name for messages, e.g. `'model'`.
    others: keys of the section that other schemas declare (they are neither parsed
      nor reported as unknown), e.g. the base `eval` keys when a family parses its own
      `eval` keys.
  Returns:
    An instance of `schema`.
  Raises:
    ConfigError: on an unknown or missing key, or an invalid value.
  """
  if section is None:
    raise ConfigError(prefix, " is missing: the config has no such section")
  values = dict(_plain(section)) if not isinstance(section, Mapping) else dict(section)
  values = {k: _plain(v) for k, v in values.items()}
  names = fields(schema)
  unknown = sorted(set(values) - set(names) - set(others))
  if unknown:
    raise ConfigError(
      f"{prefix}.{unknown[0]}",
      f" is not a known key; {prefix} keys are: {', '.join(sorted(set(names) | set(others)))}",
    )
  hints = typing.get_type_hints(schema)
  kwargs = {}
  for name in names:
    key = f"{prefix}.{name}"
    if name not in values:
      raise ConfigError(key, " is missing; declare it in the config file (see genjax/configs/)")
    kwargs[name] = _check_type(key, values[name], hints[name])
  try:
    return schema(**kwargs)
  except ConfigError as e:
    raise e.under(prefix) from None


def check_sections(config: Any, allowed: Collection[str]) -> None:
  """Raises a ConfigError for a top-level key of `config` outside `allowed`."""
  unknown = sorted(set(_plain(config)) - set(allowed))
  if unknown:
    raise ConfigError(unknown[0], f" is not a known config section or key; expected {', '.join(sorted(allowed))}")
