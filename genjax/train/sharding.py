"""Data parallelism over a device mesh with `NamedSharding`.

The mesh has one axis, 'data'. Batches are split along their leading axis over it;
the train state is replicated. The same code runs on 1 CPU, on forced host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`), on GPU/TPU, and across hosts
after `jax.distributed.initialize()` (each host feeds its local part of the batch).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D data mesh over the first `num_devices` devices (0 = all of them)."""
  devices = jax.devices()
  if num_devices < 0 or num_devices > len(devices):
    raise ValueError(
      f"num_devices={num_devices} but {len(devices)} device(s) are available "
      f"({devices[0].platform}); use 0 for all"
    )
  if num_devices:
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def one_step_in_flight(mesh: Mesh) -> bool:
  """Whether to wait for each step before dispatching the next.

  True for CPU meshes of several devices: XLA's CPU all-reduce can deadlock when the
  executions of consecutive steps interleave on a small machine (seen with 4 forced
  host devices on 2 cores: "Expected 4 threads to join the rendezvous, but only 2
  ... arrived"). Accelerators keep asynchronous dispatch.
  """
  return mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str = "batch size") -> None:
  n = mesh.devices.size
  if global_batch_size <= 0 or global_batch_size % n:
    raise ValueError(
      f"{name} {global_batch_size} is not divisible by the {n} devices of the mesh; "
      f"choose a positive multiple of {n}"
    )


def shard_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places this host's part of a global batch on the mesh, split along the batch axis."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in host_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))
