"""Starts N local processes of one command as a `jax.distributed` run, and stops them together.

  python -m genjax.launch --processes=2 [--devices_per_process=K] [--port=P] [--timeout=S] \\
      -- python -m experiments.train --config=configs/vae.py:tiny --workdir=runs/vae2

Process i gets the environment of the launcher plus
  GENJAX_COORDINATOR_ADDRESS=localhost:P  (P: --port, or a free port)
  GENJAX_NUM_PROCESSES=N, GENJAX_PROCESS_ID=i
  JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo  (unless already set)
  PYTHONUNBUFFERED=1
and with --devices_per_process=K also
  JAX_NUM_CPU_DEVICES=K                    (K CPU devices per process)
  JAX_LOCAL_DEVICE_IDS=iK,...,iK+K-1       (this process's GPUs, on a multi-GPU machine)
which `genjax.distributed.initialize_from_env()` turns into `jax.distributed.initialize(...)`.

Every output line of process i is printed as `[rank i] line` (stdout to stdout, stderr to stderr).
When a process exits with a non-zero status or is killed, the launcher prints one line naming it,
gives the others --grace seconds to finish on their own, kills them (SIGKILL: JAX processes treat
SIGTERM as a preemption notice and keep running) and exits with that status (128 + signal number
for a signal). --timeout bounds the whole run (exit status 124). Ctrl-C sends SIGINT to every
process, then kills what is left after --grace seconds (exit status 130; SIGTERM and SIGHUP
likewise, 143 and 129).

Each process runs in its own process group, so a command that starts children (`bash -c ...`) is
stopped as a whole, and (on Linux) is killed if the launcher itself dies.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

PREFIX = "genjax.launch"
POLL_S = 0.05


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):
    sys.stderr.write(f"{PREFIX}: error: {message} (see python -m genjax.launch --help)\n")
    sys.exit(2)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Parses `[options] -- command...`; exits with status 2 and a one-line message on bad input."""
  argv = list(argv)
  if "--" in argv:
    cut = argv.index("--")
    options, command = argv[:cut], argv[cut + 1 :]
  else:
    options, command = argv, []
  parser = _Parser(
    prog="python -m genjax.launch",
    usage="python -m genjax.launch --processes=N [--devices_per_process=K] [--port=P] [--timeout=S] "
    "[--grace=G] -- command [args...]",
    description="Run N local processes of a command as one jax.distributed job.",
    epilog="Example: python -m genjax.launch --processes=2 -- python -m experiments.train "
    "--config=configs/vae.py:tiny --workdir=runs/vae2",
  )
  parser.add_argument("--processes", type=int, required=True, help="number of processes N (>= 1)")
  parser.add_argument(
    "--devices_per_process",
    type=int,
    default=0,
    help="K CPU devices per process (JAX_NUM_CPU_DEVICES) and GPUs iK..iK+K-1 for process i "
    "(JAX_LOCAL_DEVICE_IDS); 0 (default) leaves JAX's defaults",
  )
  parser.add_argument("--port", type=int, default=0, help="coordinator port on localhost (0: pick a free one)")
  parser.add_argument("--timeout", type=float, default=0, help="kill every process after S seconds (0: no limit)")
  parser.add_argument(
    "--grace", type=float, default=2.0, help="seconds the other processes get to exit after one fails (default 2)"
  )
  args = parser.parse_args(options)
  if args.processes < 1:
    parser.error(f"--processes={args.processes}: need at least 1")
  if args.devices_per_process < 0:
    parser.error(f"--devices_per_process={args.devices_per_process}: need 0 (JAX's default) or more")
  if not 0 <= args.port < 65536:
    parser.error(f"--port={args.port}: need a TCP port in 1..65535 (0: pick a free one)")
  if args.timeout < 0 or args.grace < 0:
    parser.error(f"--timeout={args.timeout} --grace={args.grace}: need seconds >= 0")
  if not command:
    parser.error("no command; put it after --, e.g. -- python -m experiments.train ...")
  args.command = command
  return args


def free_port() -> int:
  """A TCP port that was free on localhost a moment ago."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(
  base: Mapping[str, str], process_id: int, num_processes: int, port: int, devices_per_process: int = 0
) -> dict[str, str]:
  """The environment of process `process_id` (see the module docstring)."""
  env = dict(base)
  env.update(
    GENJAX_COORDINATOR_ADDRESS=f"localhost:{port}",
    GENJAX_NUM_PROCESSES=str(num_processes),
    GENJAX_PROCESS_ID=str(process_id),
    PYTHONUNBUFFERED="1",
  )
  env.setdefault("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "gloo")
  if devices_per_process:
    k = devices_per_process
    env["JAX_NUM_CPU_DEVICES"] = str(k)
    env["JAX_LOCAL_DEVICE_IDS"] = ",".join(str(d) for d in range(process_id * k, (process_id + 1) * k))
  return env


def _describe_status(code: int) -> str:
  if code < 0:
    try:
      name = signal.Signals(-code).name
    except ValueError:
      name = f"signal {-code}"
    return f"was killed by {name}"
  return f"exited with status {code}"


def _exit_status(code: int) -> int:
  """A subprocess return code as a shell exit status (128 + n for signal n)."""
  return 128 - code if code < 0 else code


class _Pump(threading.Thread):
  """Copies one child stream to ours line by line, prefixed with the rank."""

  def __init__(self, stream, out, rank: int, lock: threading.Lock):
    super().__init__(daemon=True)
    self.stream, self.out, self.prefix, self.lock = stream, out, f"[rank {rank}] ", lock

  def run(self):
    for raw in iter(self.stream.readline, b""):
      line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
      with self.lock:
        self.out.write(self.prefix + line + "\n")
        self.out.flush()
    self.stream.close()


def _die_with_parent() -> None:
  """In the child, before exec: get SIGKILL if the launcher dies (Linux), so no rank outlives it."""
  try:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
  except (OSError, AttributeError):
    pass  # not Linux: the launcher's own signal handlers still stop the ranks


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  if proc.poll() is None:
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      pass


def _kill_all(procs: Sequence[subprocess.Popen]) -> None:
  for p in procs:
    _signal_group(p, signal.SIGKILL)
  for p in procs:
    p.wait()


def _wait_all(procs: Sequence[subprocess.Popen], seconds: float) -> None:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline and any(p.poll() is None for p in procs):
    time.sleep(POLL_S)


def _message(text: str) -> None:
  sys.stderr.write(f"{PREFIX}: {text}\n")
  sys.stderr.flush()


def launch(
  command: Sequence[str],
  processes: int,
  devices_per_process: int = 0,
  port: int = 0,
  timeout: float = 0,
  grace: float = 2.0,
  env: Mapping[str, str] | None = None,
) -> int:
  """Runs `processes` copies of `command`; returns the exit status (see the module docstring)."""
  port = port or free_port()
  base = os.environ if env is None else env
  lock = threading.Lock()
  procs: list[subprocess.Popen] = []
  threads: list[threading.Thread] = []
  exits: queue.Queue[tuple[int, int]] = queue.Queue()  # (rank, return code) in the order they exit
  interrupted: list[int] = []

  def on_signal(signum, frame):
    if interrupted:  # a second Ctrl-C: stop waiting
      _kill_all(procs)
    interrupted.append(signum)

  def waiter(rank: int, proc: subprocess.Popen):
    exits.put((rank, proc.wait()))

  old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
  try:
    for rank in range(processes):  # all started before any thread (preexec_fn and threads do not mix)
      try:
        proc = subprocess.Popen(
          list(command),
          env=process_env(base, rank, processes, port, devices_per_process),
          stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          start_new_session=True,
          preexec_fn=_die_with_parent,
        )
      except OSError as e:
        _message(f"cannot start {command[0]!r}: {e.strerror or e}")
        return 127
      procs.append(proc)
    for rank, proc in enumerate(procs):
      threads += [
        _Pump(proc.stdout, sys.stdout, rank, lock),
        _Pump(proc.stderr, sys.stderr, rank, lock),
        threading.Thread(target=waiter, args=(rank, proc), daemon=True),
      ]
    for t in threads:
      t.start()
    start = time.monotonic()
    finished = 0
    while True:
      if interrupted:
        signum = interrupted[0]
        _message(f"got {signal.Signals(signum).name}; interrupting all {processes} process(es)")
        for p in procs:
          _signal_group(p, signal.SIGINT)
        _wait_all(procs, grace)
        return 128 + signum
      if timeout and time.monotonic() - start > timeout:
        _message(f"timeout: still running after {timeout:g} s; killing all {processes} process(es)")
        return 124
      try:
        rank, code = exits.get(timeout=POLL_S)
      except queue.Empty:
        continue
      if code != 0:
        others = sum(p.poll() is None for p in procs)
        tail = f"; stopping the other {others} process(es)" if others else ""
        _message(f"rank {rank} {_describe_status(code)}{tail}")
        _wait_all(procs, grace)
        return _exit_status(code)
      finished += 1
      if finished == processes:
        return 0
  finally:
    _kill_all(procs)
    for s, h in old_handlers.items():
      signal.signal(s, h)
    for t in threads:
      t.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  sys.exit(
    launch(
      args.command,
      args.processes,
      devices_per_process=args.devices_per_process,
      port=args.port,
      timeout=args.timeout,
      grace=args.grace,
    )
  )


if __name__ == "__main__":
  main()
