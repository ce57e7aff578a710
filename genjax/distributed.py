"""Multi-process start-up: `jax.distributed` from environment variables, and failing fast.

A multi-process run is N copies of the same command, one per process (per host, or per group of
accelerators), joined by JAX's coordination service. `python -m genjax.launch` starts N local copies
with these variables set; on a cluster set them yourself, or let JAX read the scheduler's own
variables (`initialize_from_env(cluster=True)`, e.g. SLURM's inside `srun`).

  GENJAX_COORDINATOR_ADDRESS  host:port where process 0 serves the coordination service
  GENJAX_NUM_PROCESSES        N
  GENJAX_PROCESS_ID           this process's index, 0 .. N-1
  GENJAX_INIT_TIMEOUT         seconds to wait for every process to connect (default 300)
  GENJAX_HEARTBEAT_TIMEOUT    seconds of silence after which a process counts as dead and every
                              process aborts (default 60)
  GENJAX_SHUTDOWN_TIMEOUT     seconds a finished process waits for the others to finish; a process
                              still running when it expires is aborted too (default 120)

The first three go together (all or none). JAX's own variables still apply: `JAX_LOCAL_DEVICE_IDS`
(the accelerators this process uses), `JAX_NUM_CPU_DEVICES` (CPU devices per process) and
`JAX_CPU_COLLECTIVES_IMPLEMENTATION` (cross-process collectives on CPU; genjax sets 'gloo', the only
one that works without an MPI library, unless the variable says otherwise).

Why fail fast: after `jax.distributed.initialize`, JAX's exit handler waits at a shutdown barrier
for every process. A process that raises therefore does not exit; it waits there while its peers
wait for it in their next collective, until the shutdown timeout aborts them all (exit status 134,
5 minutes with JAX's defaults). `initialize_from_env` installs a `sys.excepthook` that prints the
traceback and leaves at once with `os._exit(1)`; peers blocked in a collective then fail within a
second ("Connection closed by peer"), the others when the heartbeat timeout declares the process
dead, and `genjax.launch` (or `srun --kill-on-bad-exit=1`) stops them immediately.
`exit_fast_on_error()` does the same for `sys.exit(non-zero)`, which no excepthook sees.

Sharing decisions: `broadcast_json`, `gather_json` and `agree` are collectives every process
calls at the same point (main thread), so that all processes restore the same checkpoint and
stop together, each with a message, when one of them fails; `to_host` gathers an array split
over processes before host-side numpy. `GENJAX_CHECKPOINT_TIMEOUT` (seconds, default 1200)
bounds one checkpoint save across processes (`genjax.train.checkpoint_io`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

ENV_COORDINATOR = "GENJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "GENJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "GENJAX_PROCESS_ID"
ENV_INIT_TIMEOUT = "GENJAX_INIT_TIMEOUT"
ENV_HEARTBEAT_TIMEOUT = "GENJAX_HEARTBEAT_TIMEOUT"
ENV_SHUTDOWN_TIMEOUT = "GENJAX_SHUTDOWN_TIMEOUT"
ENV_CPU_COLLECTIVES = "JAX_CPU_COLLECTIVES_IMPLEMENTATION"  # JAX's own; read by jax.config

DEFAULT_INIT_TIMEOUT = 300
DEFAULT_HEARTBEAT_TIMEOUT = 60
DEFAULT_SHUTDOWN_TIMEOUT = 120
CPU_COLLECTIVES = "gloo"

_PROCESS_VARS = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `jax.distributed.initialize` gets.

  `coordinator_address`, `num_processes` and `process_id` are None when JAX should detect them
  from a cluster scheduler (SLURM, Open MPI, Cloud TPU, Kubernetes).
  """

  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  initialization_timeout: int = DEFAULT_INIT_TIMEOUT
  heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
  shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT


def _int_var(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
  raw = env.get(name, "")
  if raw == "":
    return default
  try:
    value = int(raw)
  except ValueError:
    value = None
  if value is None or value < minimum:
    raise ValueError(f"{name}={raw!r} is not an integer >= {minimum}")
  return value


def settings_from_env(environ: Mapping[str, str] | None = None, cluster: bool = False) -> Settings | None:
  """Reads the GENJAX_* variables (see the module docstring).

  Returns None when none of GENJAX_COORDINATOR_ADDRESS / NUM_PROCESSES / PROCESS_ID is set and
  `cluster` is False (a single-process run); with `cluster`, Settings whose process fields are None
  (JAX auto-detects them). Raises ValueError naming the variable for a partial or bad setting.
  """
  env = os.environ if environ is None else environ
  timeouts = dict(
    initialization_timeout=_int_var(env, ENV_INIT_TIMEOUT, DEFAULT_INIT_TIMEOUT, 1),
    heartbeat_timeout=_int_var(env, ENV_HEARTBEAT_TIMEOUT, DEFAULT_HEARTBEAT_TIMEOUT, 1),
    shutdown_timeout=_int_var(env, ENV_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, 1),
  )
  present = [v for v in _PROCESS_VARS if env.get(v, "") != ""]
  if not present:
    return Settings(None, None, None, **timeouts) if cluster else None
  missing = [v for v in _PROCESS_VARS if v not in present]
  if missing:
    raise ValueError(
      f"{', '.join(present)} set but {', '.join(missing)} not; "
      f"a multi-process run needs all of {', '.join(_PROCESS_VARS)}"
    )
  address = env[ENV_COORDINATOR]
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"{ENV_COORDINATOR}={address!r} is not host:port (e.g. localhost:12345 or 10.0.0.1:12345)")
  num = _int_var(env, ENV_NUM_PROCESSES, None, 1)
  pid = _int_var(env, ENV_PROCESS_ID, None, 0)
  if pid >= num:
    raise ValueError(f"{ENV_PROCESS_ID}={pid} is not below {ENV_NUM_PROCESSES}={num}")
  return Settings(address, num, pid, **timeouts)


def initialize_from_env(
  environ: Mapping[str, str] | None = None, cluster: bool = False, fail_fast: bool = True
) -> bool:
  """Joins a multi-process run described by the environment; does nothing for a single process.

  Call it first thing, before any JAX computation or `jax.devices()` (JAX refuses to initialize
  afterwards). With GENJAX_* set it calls `jax.distributed.initialize` with them and the timeouts,
  with cluster auto-detection off; with `cluster=True` and no GENJAX_* it lets JAX detect the
  process layout from the scheduler (SLURM, Open MPI, TPU). It sets JAX's CPU collectives to gloo
  (unless JAX_CPU_COLLECTIVES_IMPLEMENTATION says otherwise), so CPU processes can all-reduce, and,
  with `fail_fast`, installs the excepthook described in the module docstring.

  Returns:
    True when this process is part of an initialized `jax.distributed` run (also when it already
    was), False when there is nothing to initialize.
  """
  import jax

  if jax.distributed.is_initialized():
    return True
  settings = settings_from_env(environ, cluster=cluster)
  if settings is None:
    return False
  env = os.environ if environ is None else environ
  if env.get(ENV_CPU_COLLECTIVES, "") == "":
    jax.config.update("jax_cpu_collectives_implementation", CPU_COLLECTIVES)
  kwargs = dict(
    initialization_timeout=settings.initialization_timeout,
    heartbeat_timeout_seconds=settings.heartbeat_timeout,
    shutdown_timeout_seconds=settings.shutdown_timeout,
  )
  if settings.coordinator_address is not None:
    kwargs.update(
      coordinator_address=settings.coordinator_address,
      num_processes=settings.num_processes,
      process_id=settings.process_id,
      cluster_detection_method="deactivate",
    )
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:
    if settings.coordinator_address is not None:
      raise
    raise ValueError(
      f"cannot join a multi-process run: {e} No {ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID} "
      "are set and JAX detected no cluster (SLURM inside srun, Open MPI, Cloud TPU, Kubernetes)"
    ) from e
  if settings.coordinator_address is not None:
    logging.getLogger(__name__).info(
      "jax.distributed: process %d of %d, coordinator %s",
      settings.process_id,
      settings.num_processes,
      settings.coordinator_address,
    )
  else:
    logging.getLogger(__name__).info("jax.distributed: process layout detected from the cluster environment")
  if fail_fast:
    install_fail_fast_excepthook()
  _first_collective()
  return True


def _first_collective() -> None:
  """One tiny collective over every device, right after joining, while the processes are in step.

  The first collective creates the cross-process communicator, and on CPU gloo gives the other
  processes only 30 s to reach it ("Gloo context initialization failed: DEADLINE_EXCEEDED").
  Without this, a program's first collective may come after a long compile that process 0 reads
  from the compilation cache and the others do not (only process 0 writes it), e.g. in
  `experiments.evaluate`. Later collectives reuse the communicator and wait without that limit.
  """
  from jax.experimental import multihost_utils

  multihost_utils.sync_global_devices("genjax.distributed: every process joined")


def _hard_exit(code: int) -> None:
  """Flushes what can be flushed and leaves without running JAX's exit barrier."""
  logging.shutdown()
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()
  os._exit(code)


def _describe_process() -> str:
  import jax

  try:
    return f"process {jax.process_index()} of {jax.process_count()}"
  except Exception:  # noqa: BLE001 - the backend itself may be what failed
    return "a process"


def _report_and_exit(exc_type, exc, tb) -> None:
  code = 130 if issubclass(exc_type, KeyboardInterrupt) else 1
  traceback.print_exception(exc_type, exc, tb)
  sys.stderr.write(
    f"genjax.distributed: {_describe_process()} failed with {exc_type.__name__}; exiting now "
    f"(status {code}) instead of waiting for the others at JAX's shutdown barrier\n"
  )
  _hard_exit(code)


def install_fail_fast_excepthook() -> None:
  """After `jax.distributed.initialize`: an uncaught exception prints its traceback and `os._exit(1)`s.

  Without it, the failing process waits at JAX's shutdown barrier and its peers hang in their
  next collective until the shutdown timeout aborts every process (see the module docstring).
  KeyboardInterrupt exits with status 130.
  """
  previous = sys.excepthook

  def hook(exc_type, exc, tb):
    import jax

    if not jax.distributed.is_initialized():
      previous(exc_type, exc, tb)
      return
    _report_and_exit(exc_type, exc, tb)

  sys.excepthook = hook


@contextlib.contextmanager
def exit_fast_on_error() -> Iterator[None]:
  """Wraps a multi-process program's main: on an error or `sys.exit(non-zero)`, `os._exit` at once.

  Outside an initialized `jax.distributed` run it changes nothing. Inside, an exception prints its
  traceback and exits with status 1 (130 for KeyboardInterrupt), and `sys.exit(code)` with a
  non-zero code prints its message (if any) and exits with that code, all without waiting at JAX's
  shutdown barrier for the other processes. `sys.exit(0)` and normal returns exit normally.
  """
  try:
    yield
  except SystemExit as e:
    import jax

    if not jax.distributed.is_initialized() or e.code is None or e.code == 0:
      raise
    if isinstance(e.code, int):
      code = e.code
    else:
      sys.stderr.write(f"{e.code}\n")
      code = 1
    _hard_exit(code)
  except BaseException as e:  # noqa: BLE001 - every failure must leave quickly
    import jax

    if not jax.distributed.is_initialized():
      raise
    _report_and_exit(type(e), e, e.__traceback__)


# ------------------------------------------------------------------ agreement between processes
#
# Decisions that must be the same on every process (which checkpoint to restore, whether a
# save succeeded everywhere, whether process 0 could open the workdir) are made once and
# shared with these helpers. Each is a collective over every device of every process
# (`jax.experimental.multihost_utils`): call it on every process, at the same point of the
# program, from the main thread. With one process they return at once. A peer that dies
# meanwhile makes the collective fail within a second (gloo: "Connection closed by peer"),
# which they report as a `PeerError`.


class PeerError(RuntimeError):
  """Another process failed (or left the run); the message names it and quotes its error."""


def multiprocess() -> bool:
  """Whether this program runs in more than one process (after `jax.distributed.initialize`)."""
  import jax

  return jax.process_count() > 1


def _encode(value: object) -> bytes:
  import json

  return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _bucket(n: int) -> int:
  """Padded length for n bytes: powers of two from 256, so a few compiled collectives serve every message."""
  size = 256
  while size < n:
    size *= 2
  return size


def _collective(what: str, fn):
  try:
    return fn()
  except (RuntimeError, ValueError) as e:  # a gloo error when a peer died mid-collective
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise PeerError(f"a collective with the other processes failed while {what} ({first})") from e


def broadcast_json(value: object, source: int = 0, what: str = "sharing a decision") -> object:
  """`value` (anything `json.dumps` takes) of process `source`, on every process.

  A collective (see above); the other processes' `value` is ignored. Returns the JSON
  round trip (tuples come back as lists) on every process, also with one process.
  """
  import json

  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  if not multiprocess():
    return json.loads(_encode(value))
  me = jax.process_index() == source
  data = _encode(value) if me else b""

  def run():
    n = int(multihost_utils.broadcast_one_to_all(np.array([len(data)], np.int32), is_source=me)[0])
    buf = np.zeros(_bucket(n), np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    return bytes(multihost_utils.broadcast_one_to_all(buf, is_source=me)[:n])

  return json.loads(_collective(what, run))


def gather_json(value: object, what: str = "sharing a result") -> list:
  """Every process's `value` (JSON-able), in process order, on every process. A collective (see above)."""
  import json

  import numpy as np
  from jax.experimental import multihost_utils

  data = _encode(value)
  if not multiprocess():
    return [json.loads(data)]

  def run():
    lengths = multihost_utils.process_allgather(np.array([len(data)], np.int32)).reshape(-1)
    buf = np.zeros(_bucket(int(lengths.max())), np.uint8)
    buf[: len(data)] = np.frombuffer(data, np.uint8)
    rows = multihost_utils.process_allgather(buf)
    return [bytes(rows[i, : int(n)]) for i, n in enumerate(lengths)]

  return [json.loads(b) for b in _collective(what, run)]


def one_line(error: BaseException) -> str:
  """`Type: first line of the message` (at most 500 characters)."""
  text = (str(error).strip().splitlines() or [""])[0][:500]
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def agree(error: BaseException | None, what: str) -> None:
  """Stops every process if `error` is set on any of them. A collective (see above).

  Every process passes its own outcome of the step described by `what` (e.g. "opening the
  checkpoint directory"): None for success, or the exception it caught. If any failed,
  that process raises its own exception again, and every other process raises a
  `PeerError` naming the first failing process and quoting its error in one line, so
  every process stops with the same message instead of waiting for the failed one.
  """
  import jax

  if not multiprocess():
    if error is not None:
      raise error
    return
  outcomes = gather_json(None if error is None else one_line(error), what=what)
  if error is not None:
    raise error
  failed = [(i, m) for i, m in enumerate(outcomes) if m is not None]
  if failed:
    i, message = failed[0]
    more = f" (and {len(failed) - 1} more process(es))" if len(failed) > 1 else ""
    raise PeerError(f"process {i} of {jax.process_count()} failed {what}{more}: {message}")


def to_host(tree: Any) -> Any:
  """numpy copies of the array leaves of `tree`, whole and the same on every process.

  A global array split over several processes (neither fully addressable nor fully
  replicated) is gathered with `process_allgather`, a collective: in a multi-process run
  call this on every process, before any process-0-only use of the values. Other leaves
  are returned as they are.
  """
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  def leaf(x):
    if not isinstance(x, jax.Array):
      return x
    if not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(leaf, tree)


def selfcheck(batch_per_device: int = 4, dim: int = 3) -> dict:
  """All-reduces the gradient of a tiny least-squares model across every device of every process.

  The global batch (`batch_per_device` rows per device, the same on every process from a fixed seed)
  is split as genjax splits batches: process i feeds rows [i * L, (i + 1) * L) through
  `jax.make_array_from_process_local_data` onto a 1-D mesh over `jax.devices()`. The gradient
  of mean((x @ w - y)**2) is compared with its closed form 2/G x^T (x w - y) in float64.

  Returns:
    A JSON-able dict: process, processes, local_devices, global_devices, devices_contiguous (each
    process's devices form one block of the mesh, in process order: what the row split assumes),
    gradient (float[dim]), max_error and ok.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  devices = jax.devices()
  mesh = Mesh(np.asarray(devices), ("data",))
  g = batch_per_device * len(devices)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(g, dim)).astype(np.float32)
  y = rng.normal(size=(g,)).astype(np.float32)
  w = rng.normal(size=(dim,)).astype(np.float32)
  rows = g // jax.process_count()
  lo = jax.process_index() * rows
  batch = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  gx = jax.make_array_from_process_local_data(batch, x[lo : lo + rows])
  gy = jax.make_array_from_process_local_data(batch, y[lo : lo + rows])
  loss = lambda w, x, y: jnp.mean((x @ w - y) ** 2)
  grad = jax.jit(jax.grad(loss), out_shardings=replicated)(jax.device_put(w, replicated), gx, gy)
  got = np.asarray(grad.addressable_data(0), np.float64)
  x64 = x.astype(np.float64)
  want = 2.0 / g * x64.T @ (x64 @ w.astype(np.float64) - y)
  owners = [d.process_index for d in devices]
  error = float(np.max(np.abs(got - want)))
  return dict(
    process=jax.process_index(),
    processes=jax.process_count(),
    local_devices=jax.local_device_count(),
    global_devices=len(devices),
    devices_contiguous=owners == sorted(owners),
    gradient=[float(v) for v in got],
    max_error=error,
    ok=error < 1e-5,
  )


def main(argv: list[str] | None = None) -> None:
  """`python -m genjax.distributed [--cluster]`: join the run, all-reduce, print one JSON line.

  A smoke test of a multi-process setup: under `python -m genjax.launch --processes=N`, or on each
  host of a cluster with GENJAX_* set (or inside `srun` with --cluster). Exit status 1 if the
  all-reduced gradient is wrong.
  """
  import argparse
  import json

  parser = argparse.ArgumentParser(prog="python -m genjax.distributed", description=main.__doc__)
  parser.add_argument(
    "--cluster", action="store_true", help="without GENJAX_* variables, let JAX detect SLURM/Open MPI/TPU"
  )
  args = parser.parse_args(argv)
  with exit_fast_on_error():
    initialize_from_env(cluster=args.cluster)
    result = selfcheck()
    print(json.dumps(result), flush=True)
    if not result["ok"]:
      sys.exit(1)


if __name__ == "__main__":
  main()
