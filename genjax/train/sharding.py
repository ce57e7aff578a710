"""Data parallelism over a device mesh with `NamedSharding`.

The mesh has one axis, 'data'. Batches are split along their leading axis over it;
the train state is replicated. The same code runs on 1 CPU, on forced host devices
(`JAX_NUM_CPU_DEVICES=N`), on GPU/TPU, and across processes after
`jax.distributed.initialize()` (`genjax.distributed`), where each process feeds its
own rows of every global batch.

With P processes, process i's devices are one contiguous block of the mesh, blocks in
process order: process i's rows [i * B/P, (i + 1) * B/P) of a global batch of B rows
(`genjax.data.BatchIterator`, `eval_batches`) then land on exactly its own devices, in
the order a single process with the same number of devices would place them, so the
global batch and the results are the same as one process's.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def mesh_devices(num_devices: int = 0, devices: list | None = None) -> list:
  """The devices of the data mesh, grouped by process in process order (JAX's order within a process).

  `num_devices` is the mesh's global size: 0 means every device of every process; K > 0
  means K devices, the first K / P of each of the P processes, so K must be a
  multiple of P. Every process must own the same number of mesh devices (each feeds the
  same share of every batch). `devices` defaults to `jax.devices()`.

  Raises ValueError (one line) for a count that does not fit.
  """
  devices = list(jax.devices() if devices is None else devices)
  by_process: dict[int, list] = {}
  for d in sorted(devices, key=lambda d: d.process_index):  # stable: keeps JAX's order within a process
    by_process.setdefault(d.process_index, []).append(d)
  processes, total = len(by_process), len(devices)
  counts = sorted({len(v) for v in by_process.values()})
  where = f"{total} {devices[0].platform} device(s)" + (f" in {processes} processes" if processes > 1 else "")
  if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 0:
    raise ValueError(f"num_devices={num_devices!r} is not valid: expected an integer >= 0 (0 = all {where})")
  if len(counts) > 1:
    per = ", ".join(f"process {p}: {len(v)}" for p, v in sorted(by_process.items()))
    raise ValueError(
      f"the processes own different numbers of devices ({per}); every process must bring the same number "
      f"(set JAX_LOCAL_DEVICE_IDS or JAX_NUM_CPU_DEVICES alike on every process)"
    )
  if num_devices == 0:
    return [d for p in sorted(by_process) for d in by_process[p]]
  if num_devices > total or num_devices % processes:
    if processes == 1:
      raise ValueError(f"num_devices={num_devices} but {where} are available; use 0 for all")
    raise ValueError(
      f"num_devices={num_devices} is not valid with {where}: expected 0 (all) or a multiple of {processes} "
      f"up to {total} (the same number of devices from each process)"
    )
  per_process = num_devices // processes
  return [d for p in sorted(by_process) for d in by_process[p][:per_process]]


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D data mesh over `mesh_devices(num_devices)`: 0 = all devices of all processes,
  K = K devices in all (K / P from each of P processes)."""
  return Mesh(np.asarray(mesh_devices(num_devices), dtype=object), (DATA_AXIS,))


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
