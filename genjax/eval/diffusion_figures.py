"""The DDPM figures of `experiments.sample`: samples, reverse trajectories, interpolations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax.eval.plots import scatter_image

KINDS = ("samples", "trajectory", "interpolation")


def ddpm_figure(
  family,
  params,
  test,
  kind: str,
  num: int,
  key: jax.Array,
  sampler: str = "ancestral",
  ddim_steps: int = 50,
  eta: float = 0.0,
  trajectory_every: int = 0,
  interp_t: int = 500,
) -> tuple[np.ndarray, int | None]:
  """`(uint8[N, H, W, C], ncol)` for `experiments.sample --kind=...` with a `DDPMFamily`.

  samples: `num` samples (vector data: one scatter picture of `num` points).
  trajectory: `num` ancestral chains (rows), the state every `trajectory_every` steps
    (default T/10) from left (noisy) to right (x_0), pixels clipped to [-1, 1].
  interpolation: `num // 10` rows (at least 1): test image a, 8 decodings of `x_t`
    (t = `interp_t`) interpolated from a to b, test image b.
  """
  if kind not in KINDS:
    raise ValueError(f"--kind={kind} is not available for DDPM; expected one of {KINDS}")
  if kind == "samples":
    sample = jax.jit(family.sample, static_argnames=("num", "sampler", "ddim_steps", "eta"))
    x = family.to_data(sample(params, key, num=num, sampler=sampler, ddim_steps=ddim_steps, eta=eta))
    if not family.images:
      r = float(family.cfg.plot_range)
      return np.asarray(scatter_image(x[:, :2], -r, r))[None], 1
    return np.asarray(x), None
  if not family.images:
    raise ValueError(f"--kind={kind} needs image data")
  if kind == "trajectory":
    every = trajectory_every or max(family.num_timesteps // 10, 1)
    sample = jax.jit(family.sample, static_argnames=("num", "sampler", "trajectory_every"))
    _, traj = sample(params, key, num=num, sampler="ancestral", trajectory_every=every)  # [S, num, ...]
    traj = family.to_data(jnp.clip(traj, -1.0, 1.0))
    steps = traj.shape[0]
    return np.asarray(jnp.swapaxes(traj, 0, 1).reshape((-1,) + family.shape)), steps
  rows = max(num // 10, 1)
  images = test[np.arange(2 * rows) % len(test)]["image"]
  interp = jax.jit(family.interpolate, static_argnames=("t", "num"))
  out = []
  for r in range(rows):
    a, b = images[2 * r], images[2 * r + 1]
    mid = np.asarray(interp(params, jax.random.fold_in(key, r), a, b, t=interp_t, num=10))[1:-1]
    out.extend([a, *mid, b])
  return np.stack(out), 10
