"""`genjax.xla_flags`: a user's XLA_FLAGS are never changed; the choice is a deterministic function
of the config and the measured table; a parent process's choice is re-made for a child's config."""

from __future__ import annotations

import pytest

from genjax import xla_flags
from tests.helpers import tiny_config

# A made-up measurement table: narrow steps lose with Eigen convolutions, wide ones gain.
TABLE = [
  ("narrow", 16, {"default": 10.0, "eigen_convs": 11.0}),
  ("mid", 32, {"default": 10.0, "eigen_convs": 9.0}),
  ("wide", 512, {"default": 10.0, "eigen_convs": 7.0}),
  ("mlp", 0, {"default": 10.0, "eigen_convs": 12.0}),
]


def test_threshold_is_the_narrowest_width_from_which_every_case_gains():
  assert xla_flags.eigen_threshold(TABLE) == 32
  # A wide case that lost stops the threshold above it.
  assert xla_flags.eigen_threshold(TABLE + [("wider_lost", 64, {"default": 1.0, "eigen_convs": 2.0})]) == 512
  assert xla_flags.eigen_threshold([]) is None
  assert xla_flags.eigen_threshold([TABLE[0]]) is None


def test_choice_is_deterministic_and_follows_the_conv_widths(monkeypatch):
  monkeypatch.setattr(xla_flags, "MEASURED", TABLE)
  gan64 = tiny_config("gan", "size64")
  assert xla_flags.widest_conv(gan64) == 512
  first = xla_flags.choose(gan64)
  assert first == xla_flags.choose(tiny_config("gan", "size64")) and first.name == "eigen_convs"
  assert first.flags == xla_flags.EIGEN_CONVS
  assert xla_flags.widest_conv(tiny_config("realnvp", "tiny")) == 8
  assert xla_flags.choose(tiny_config("realnvp", "tiny")).flags == ()
  assert xla_flags.widest_conv(tiny_config("vae", "tiny")) == 0  # the MLP VAE: no convolutions
  assert xla_flags.widest_conv(tiny_config("realnvp", "two_moons")) == 0  # vectors
  assert xla_flags.widest_conv(tiny_config("ddpm", "tiny")) == 16


def _config_of_unknown_family():
  c = tiny_config("vae", "tiny")
  c.model.family = "not_a_family"
  return c


def test_never_overrides_the_users_flags(monkeypatch):
  monkeypatch.setattr(xla_flags, "MEASURED", TABLE)
  lines = []
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_flags.apply(tiny_config("gan", "size64"), environ=env, log=lines.append) is None
  assert env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert len(lines) == 1 and "kept" in lines[0]
  assert xla_flags.current(env)["source"] == "user"


def test_sets_logs_and_remakes_a_parents_choice(monkeypatch):
  monkeypatch.setattr(xla_flags, "MEASURED", TABLE)
  monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
  lines, env = [], {}
  choice = xla_flags.apply(tiny_config("gan", "size64"), environ=env, log=lines.append)
  assert choice.name == "eigen_convs" and env["XLA_FLAGS"] == " ".join(xla_flags.EIGEN_CONVS)
  assert xla_flags.current(env)["source"] == "genjax"
  assert len(lines) == 1 and env["XLA_FLAGS"] in lines[0]
  # A child process inherits the parent's choice; for a narrow config it is dropped, not kept.
  child = dict(env)
  assert xla_flags.apply(tiny_config("realnvp", "tiny"), environ=child, log=lines.append).name == "default"
  assert "XLA_FLAGS" not in child and xla_flags.current(child)["source"] == "none"
  assert xla_flags.apply(_config_of_unknown_family(), environ={}, log=lines.append).flags == ()


def test_opt_out_leaves_xlas_defaults(monkeypatch):
  monkeypatch.setattr(xla_flags, "MEASURED", TABLE)
  env = {"GENJAX_NO_XLA_FLAGS": "1", "GENJAX_XLA_FLAGS": "--a", "XLA_FLAGS": "--a"}  # a parent's choice
  assert xla_flags.apply(tiny_config("gan", "size64"), environ=env, log=lambda _: None) is None
  assert "XLA_FLAGS" not in env


def test_does_nothing_once_the_backend_has_started(monkeypatch):
  import jax

  jax.devices()  # the test session's backend is up
  lines, env = [], {}
  assert xla_flags.apply(tiny_config("gan", "size64"), environ=env, log=lines.append) is None
  assert env == {} and "already started" in lines[0]


@pytest.mark.parametrize("family", ["gan", "ddpm", "realnvp", "vae", "pixelcnn"])
def test_every_image_family_has_a_width_rule(family):
  assert xla_flags.widest_conv(tiny_config(family, "tiny")) is not None


def test_describe_names_the_flags_and_their_source():
  assert xla_flags.describe({}) == "XLA defaults (none set)"
  user = {"XLA_FLAGS": "--a"}
  assert xla_flags.describe(user) == "--a (set by the user)"
  ours = {"XLA_FLAGS": "--b", "GENJAX_XLA_FLAGS": "--b", "GENJAX_XLA_FLAGS_REASON": "widest conv 512"}
  assert xla_flags.describe(ours) == "--b (chosen by genjax: widest conv 512)"
