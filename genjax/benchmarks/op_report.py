"""Per-op report of a config's compiled train step: where the step's time goes.

  python -m benchmarks.op_report --config=configs/gan.py:size64
  python -m benchmarks.op_report --config=configs/ddpm.py --batch_size=64 --notime_step
  python -m benchmarks.op_report --config=configs/pixelcnn.py:peer --trace=3

What it does:

1. Traces the config's train step (`Experiment.train_step()`, the program the trainer
   runs) to its jaxpr and collects every convolution (`conv_general_dilated`) and
   matmul (`dot_general`), inside nested jaxprs too (a `lax.scan` body counts
   `length` times per step), with shapes, dtypes and dimension numbers, and genjax's
   fused CPU kernels (`genjax.nn.coupling_net`: a coupling net's forward, `fwd`, and its
   whole backward pass, `bwd`) and its weight-gradient kernel (`genjax.nn.conv_grads`, listed
   as its layer's `wgrad`), whose FLOPs XLA's cost analysis does not see; a strided
   convolution's input gradient by phases (`conv_grads`) is its layer's `dgrad`, timed as
   the phase convolutions it lowers to.
2. Classifies each convolution by its dimension numbers (genjax's layers are NHWC
   activations and HWIO kernels): `fwd` (the layer's own convolution), `dgrad` (the
   input gradient: the kernel's I and O axes swapped) and `wgrad` (the weight
   gradient: the activations' batch axis is the contracted feature axis). A matmul
   whose operands both contract their leading (example) axis is a `wgrad`; one whose
   kernel operand contracts its trailing axes a `dgrad`; batched matmuls (attention)
   are `bmm`. The three roles of one layer are grouped into one row by the layer's
   (input, kernel, output) shapes.
3. Counts each op's FLOPs from its shapes as XLA's cost analysis does (multiply-adds
   at input positions that are neither padding nor dilation holes, times 2) and
   cross-checks the count against `compiled.cost_analysis()` of the op compiled on
   its own; the step's own cost analysis is reported next to the ops' total.
4. Times each distinct op as its own jitted function (the same primitive with the
   same parameters, shapes and dtypes, on random inputs), median of repeated calls,
   and reports ms and GFLOP/s next to the machine's measured roofline (a large
   matmul and a large well-shaped 3x3 convolution, measured in the same process), and
   next to the op's attainable rate in the roofline model: the lower of that roof and
   the memory bandwidth (a streaming `2 a` over 64 MiB, same process) times the op's
   FLOPs per byte it must move (operands read once, output written once). An op far
   below the compute roof but near its attainable rate is memory bound: only fusing it
   with its neighbours, not a better kernel for it alone, would make it faster.
   Ops found inside a loop body (`scan`/`while`) are marked: XLA:CPU may lay them
   out differently there than on their own.
5. Optionally times the whole compiled step, so the ops' summed time can be compared
   with it (the rest is elementwise work, normalization, the optimizer, copies).

With `--trace=N` it instead traces N executions of the compiled step with `jax.profiler`
and reports the time of every HLO thunk XLA:CPU ran, summed per step by category
(library convolutions and matmuls, element-wise loop fusions and copies, ...) and for
the slowest thunks with the jax op each came from: where the rest of a step's time
goes (this is how the transposes before the PixelCNN's weight gradients were found).

Prints a table and, as its last line, one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

from genjax.cli import common

# The share of the roofline below which an op is listed as slow (the target).
SLOW_FRACTION = 0.30
ROLES = ("fwd", "dgrad", "wgrad")


# --------------------------------------------------------------------------- FLOPs


def _valid_positions(
  in_size: int, out_size: int, k_size: int, stride: int, pad_lo: int, base_dil: int, win_dil: int
) -> int:
  """Kernel-output position pairs of one spatial dimension that read a real input element.

  Input index `o * stride - pad_lo + k * win_dil` of the base-dilated input counts when
  it falls on an element (a multiple of `base_dil`, inside the input), as in XLA's
  `HloCostAnalysis::GetConvolutionFlops`.
  """
  count = 0
  for k in range(k_size):
    for o in range(out_size):
      u = o * stride - pad_lo + k * win_dil
      if u % base_dil:
        continue
      i = u // base_dil
      if 0 <= i < in_size:
        count += 1
  return count


def conv_flops(lhs_shape: Sequence[int], rhs_shape: Sequence[int], out_shape: Sequence[int], params: dict) -> int:
  """FLOPs (2 per multiply-add) of a `conv_general_dilated` with jaxpr `params`, counted as XLA does."""
  lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
  strides = params["window_strides"]
  padding = params["padding"]
  lhs_dil = params["lhs_dilation"] or (1,) * len(strides)
  rhs_dil = params["rhs_dilation"] or (1,) * len(strides)
  positions = 1
  for d in range(len(strides)):
    positions *= _valid_positions(
      lhs_shape[lhs_spec[2 + d]],
      out_shape[out_spec[2 + d]],
      rhs_shape[rhs_spec[2 + d]],
      strides[d],
      padding[d][0],
      lhs_dil[d],
      rhs_dil[d],
    )
  in_features = lhs_shape[lhs_spec[1]] // params["feature_group_count"]
  batch = lhs_shape[lhs_spec[0]] // params["batch_group_count"]
  return 2 * in_features * out_shape[out_spec[1]] * batch * positions


def dot_flops(lhs_shape: Sequence[int], out_shape: Sequence[int], params: dict) -> int:
  """FLOPs of a `dot_general`: 2 x output elements x the contracted size."""
  (lhs_contract, _), _ = params["dimension_numbers"]
  return 2 * math.prod(out_shape) * math.prod(lhs_shape[d] for d in lhs_contract)


# --------------------------------------------------------------------------- ops of a jaxpr


@dataclasses.dataclass
class Op:
  """One distinct convolution or matmul of the step (identical ones are counted together)."""

  kind: str  # 'conv' | 'dot' | 'fused'
  role: str  # 'fwd' | 'dgrad' | 'wgrad' | 'bmm' | 'other' | 'bwd' (a fused kernel's backward pass)
  primitive: Any
  params: dict
  lhs: tuple[tuple[int, ...], str]  # (shape, dtype)
  rhs: tuple[tuple[int, ...], str]
  out: tuple[tuple[int, ...], str]
  flops: int  # per execution
  count: int = 0  # executions per step
  in_loop: bool = False
  ms: float | None = None  # median time of one execution
  xla_flops: float | None = None  # XLA's cost analysis of the op compiled alone
  ins: tuple = ()  # a fused kernel's inputs, (shape, dtype) each
  native: bool = False  # one of genjax's CPU kernels (a custom call: XLA's cost analysis sees no FLOPs)
  phases: bool = False  # a strided convolution's input gradient by phase convolutions (conv_grads.dgrad_p)

  @property
  def gflop_s(self) -> float | None:
    return None if not self.ms else self.flops / self.ms / 1e6

  def layer_key(self) -> tuple:
    """(input, kernel, output) shapes of the layer this op belongs to, the same for its three roles."""
    lhs, rhs, out = self.lhs[0], self.rhs[0], self.out[0]
    if self.kind == "fused":
      return ("fused", self.ins[0][0], self.ins[1][0], self.ins[3][0])
    if self.kind == "conv":
      if self.role == "dgrad":
        return ("conv", out, rhs, lhs)
      if self.role == "wgrad":
        return ("conv", lhs, out, rhs)
      return ("conv", lhs, rhs, out)
    size = math.prod
    if self.role == "wgrad":
      return ("dot", size(out), tuple(sorted((size(lhs), size(rhs)))))
    if self.role in ("fwd", "dgrad"):
      return ("dot", size(rhs), tuple(sorted((size(lhs), size(out)))))
    return ("dot", self.role, lhs, rhs, out)

  def describe(self) -> str:
    """A short description of the layer, from the forward op's point of view."""
    lhs, rhs, out = self.lhs[0], self.rhs[0], self.out[0]
    if self.kind == "fused":
      (k, n), (_, f), _, (_, o) = (a[0] for a in self.ins[:4])
      return f"fused net {k}->{f}->{o} x{n} px"
    if self.kind == "conv":
      p = self.params
      window = "x".join(str(rhs[d]) for d in p["dimension_numbers"][1][2:])
      stride = max(p["window_strides"])
      tag = "tconv" if max(p["lhs_dilation"] or (1,)) > 1 else "conv"
      stride_txt = f"/{max(p['lhs_dilation'])}" if tag == "tconv" else (f"/{stride}" if stride > 1 else "")
      fmt = lambda s: "x".join(map(str, s[1:]))
      return f"{tag} {window}{stride_txt} {fmt(lhs)}->{fmt(out)}"
    return f"{self.role if self.role == 'bmm' else 'dot'} {list(lhs)}.{list(rhs)}->{list(out)}"


def _rewritten_by_xla(op: Op) -> bool:
  """A matmul that contracts a size-1 axis: XLA turns it into a multiply (1 FLOP per output, not 2)."""
  if op.kind != "dot":
    return False
  (lc, _), _ = op.params["dimension_numbers"]
  return math.prod(op.lhs[0][d] for d in lc) == 1


def conv_role(params: dict) -> str:
  """'fwd', 'dgrad', 'wgrad' or 'other' from a convolution's dimension numbers (NHWC, HWIO layers)."""
  lhs_spec, rhs_spec, _ = params["dimension_numbers"]
  n_spatial = len(lhs_spec) - 2
  if lhs_spec[1] == 0:  # the contracted feature axis is the activations' batch axis
    return "wgrad"
  if rhs_spec[0] == n_spatial + 1 and rhs_spec[1] == n_spatial:  # HWIO as stored
    return "fwd"
  if rhs_spec[0] == n_spatial and rhs_spec[1] == n_spatial + 1:  # HWIO with I and O swapped
    return "dgrad"
  return "other"


def dot_role(params: dict, rhs_ndim: int) -> str:
  """'fwd', 'dgrad', 'wgrad' or 'bmm' for a `dot_general` of a Dense layer or its gradients."""
  (lc, rc), (lb, rb) = params["dimension_numbers"]
  if lb or rb:
    return "bmm"
  if 0 in lc and 0 in rc:
    return "wgrad"
  if tuple(rc) == tuple(range(len(rc))):
    return "fwd"
  if tuple(rc) == tuple(range(rhs_ndim - len(rc), rhs_ndim)):
    return "dgrad"
  return "other"


def _aval(v) -> tuple[tuple[int, ...], str]:
  return tuple(int(d) for d in v.aval.shape), str(v.aval.dtype)


def _hashable(x):
  if isinstance(x, dict):
    return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
  if isinstance(x, (list, tuple)):
    return tuple(_hashable(v) for v in x)
  try:
    hash(x)
    return x
  except TypeError:
    return repr(x)


def collect_ops(closed_jaxpr) -> list[Op]:
  """The distinct convolutions and matmuls of a (closed) jaxpr, nested jaxprs included, with counts."""
  from jax.extend import core as jcore

  from genjax.nn import conv_grads, coupling_net

  ops: dict[tuple, Op] = {}

  def visit(jaxpr, mult: int, in_loop: bool):
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name in ("conv_general_dilated", "dot_general"):
        lhs, rhs = _aval(eqn.invars[0]), _aval(eqn.invars[1])
        out = _aval(eqn.outvars[0])
        key = (name, lhs, rhs, _hashable(eqn.params))
        if key not in ops:
          if name == "conv_general_dilated":
            kind, role = "conv", conv_role(eqn.params)
            flops = conv_flops(lhs[0], rhs[0], out[0], eqn.params)
          else:
            kind, role = "dot", dot_role(eqn.params, len(rhs[0]))
            flops = dot_flops(lhs[0], out[0], eqn.params)
          ops[key] = Op(kind, role, eqn.primitive, dict(eqn.params), lhs, rhs, out, flops)
        ops[key].count += mult
        ops[key].in_loop |= in_loop
      elif (fused := coupling_net.flops(name, [_aval(v)[0] for v in eqn.invars])) is not None:
        ins = tuple(_aval(v) for v in eqn.invars)
        key = (name, ins)
        if key not in ops:
          role = "bwd" if name.endswith("_bwd") else "fwd"
          ops[key] = Op(
            "fused",
            role,
            eqn.primitive,
            dict(eqn.params),
            ins[0],
            ins[1],
            _aval(eqn.outvars[0]),
            fused,
            ins=ins,
            native=True,
          )
        ops[key].count += mult
        ops[key].in_loop |= in_loop
      elif name == conv_grads.dgrad_p.name:
        # A strided convolution's input gradient by phases (`genjax.nn.conv_grads`): its layer's
        # `dgrad`, with the FLOPs of the input gradient XLA would run (the same multiply-adds).
        ct, kernel = _aval(eqn.invars[0]), _aval(eqn.invars[1])
        x = (tuple(eqn.params["x_shape"]), ct[1])
        key = (name, ct, kernel, _hashable(eqn.params))
        if key not in ops:
          fwd = {
            "dimension_numbers": ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)),
            "window_strides": eqn.params["strides"],
            "padding": eqn.params["pads"],
            "lhs_dilation": None,
            "rhs_dilation": None,
            "feature_group_count": 1,
            "batch_group_count": 1,
          }
          flops = conv_flops(x[0], kernel[0], ct[0], fwd)
          ops[key] = Op("conv", "dgrad", eqn.primitive, dict(eqn.params), ct, kernel, x, flops, phases=True)
        ops[key].count += mult
        ops[key].in_loop |= in_loop
      elif (flops := conv_grads.flops(name, [_aval(v)[0] for v in eqn.invars], eqn.params)) is not None:
        # The weight gradient of a convolution or a dense layer over pixels as genjax's kernel:
        # grouped with its layer's forward and input gradient (a 1x1 one is a dense layer's dot).
        lhs, rhs, out = _aval(eqn.invars[0]), _aval(eqn.invars[1]), _aval(eqn.outvars[0])
        key = (name, lhs, rhs, _hashable(eqn.params))
        if key not in ops:
          p = eqn.params
          kind = "dot" if conv_grads._pointwise(p["kernel_shape"], p["strides"], p["pads"]) else "conv"
          if kind == "dot":  # as the dense layer's `[N, K]^T [N, M]`
            lhs = ((math.prod(lhs[0][:-1]), lhs[0][-1]), lhs[1])
            rhs = ((math.prod(rhs[0][:-1]), rhs[0][-1]), rhs[1])
            out = (out[0][2:], out[1])
          ins = (_aval(eqn.invars[0]), _aval(eqn.invars[1]))
          ops[key] = Op(kind, "wgrad", eqn.primitive, dict(p), lhs, rhs, out, flops, ins=ins, native=True)
        ops[key].count += mult
        ops[key].in_loop |= in_loop
      sub_mult, sub_loop = mult, in_loop
      if name == "scan":
        sub_mult, sub_loop = mult * int(eqn.params["length"]), True
      elif name == "while":
        sub_loop = True  # the trip count is not static: counted once
      for sub in jcore.jaxprs_in_params(eqn.params):
        visit(sub, sub_mult, sub_loop)

  visit(closed_jaxpr.jaxpr, 1, False)
  return list(ops.values())


# --------------------------------------------------------------------------- timing


def time_call(
  fn: Callable, args: Sequence, min_time: float = 0.3, min_calls: int = 3, max_calls: int = 50
) -> float:
  """Median seconds of `fn(*args)` (blocked on), after one untimed call; at least `min_calls` calls
  and enough to fill `min_time` seconds (at most `max_calls`)."""
  import jax

  jax.block_until_ready(fn(*args))
  times: list[float] = []
  while len(times) < min_calls or (sum(times) < min_time and len(times) < max_calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _random_inputs(op: Op, seed: int):
  import jax
  import jax.numpy as jnp

  ins = op.ins or (op.lhs, op.rhs)
  keys = jax.random.split(jax.random.key(seed), len(ins))
  return [jax.random.normal(k, shape, jnp.dtype(dtype)) for k, (shape, dtype) in zip(keys, ins, strict=True)]


def time_op(op: Op, min_time: float = 0.3, min_calls: int = 3, seed: int = 0) -> Op:
  """Times `op` alone (fills `op.ms`) and records XLA's FLOP count of it (`op.xla_flops`)."""
  import jax

  fn = jax.jit(lambda *a: op.primitive.bind(*a, **op.params))
  args = _random_inputs(op, seed)
  compiled = fn.lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  op.xla_flops = float(cost.get("flops", -1)) if cost else None
  op.ms = 1e3 * time_call(compiled, args, min_time=min_time, min_calls=min_calls)
  return op


def measure_roofline(min_time: float = 0.5) -> dict:
  """GFLOP/s of a 2048^3 float32 matmul and of a 3x3 convolution forward (32x32x128 -> 128, batch 32),
  and the memory roof: GB/s read plus written by `2 a` over 64 MiB of float32 (above the
  last-level cache of the machines measured here)."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  key = jax.random.key(0)
  n = 2048
  a = jax.random.normal(key, (n, n), jnp.float32)
  matmul = jax.jit(lambda a, b: a @ b)
  t_mm = time_call(matmul, (a, a), min_time=min_time)
  x = jax.random.normal(key, (32, 32, 32, 128), jnp.float32)
  w = jax.random.normal(key, (3, 3, 128, 128), jnp.float32)
  conv = jax.jit(
    lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  )
  t_conv = time_call(conv, (x, w), min_time=min_time)
  big = jax.random.normal(key, (16, 1024, 1024), jnp.float32)
  t_stream = time_call(jax.jit(lambda a: 2 * a), (big,), min_time=min_time)
  mm = 2 * n**3 / t_mm / 1e9
  cv = 2 * 32 * 32 * 32 * 128 * 128 * 9 / t_conv / 1e9
  return {
    "matmul_2048_gflop_s": mm,
    "conv3x3_32px_128ch_fwd_gflop_s": cv,
    "roofline_gflop_s": max(mm, cv),
    "stream_gb_s": 2 * big.size * 4 / t_stream / 1e9,
  }


def op_bytes(op: Op) -> int:
  """Bytes an op must move at least: its operands read once and its output written once."""
  shapes = [op.lhs, op.rhs, op.out] if not op.ins else [*op.ins, op.out]
  return sum(math.prod(shape) * _itemsize(dtype) for shape, dtype in shapes)


def _itemsize(dtype: str) -> int:
  import numpy as np

  return np.dtype(dtype).itemsize if dtype != "bfloat16" else 2


def attainable_gflop_s(flops: int, nbytes: int, roofline: dict) -> float:
  """The roofline model's bound for an op (Williams et al. 2009): the compute roof, or the memory
  roof times the op's arithmetic intensity (FLOPs per byte moved), whichever is lower."""
  peak = roofline["roofline_gflop_s"]
  bw = roofline.get("stream_gb_s")
  return peak if not bw else min(peak, bw * flops / max(nbytes, 1))


# --------------------------------------------------------------------------- the report


@dataclasses.dataclass
class Layer:
  """One layer's ops grouped by role (`fwd`, `dgrad`, `wgrad`; matmuls of attention are `bmm`)."""

  key: tuple
  ops: dict[str, Op]

  @property
  def desc(self) -> str:
    op = self.ops.get("fwd") or next(iter(self.ops.values()))
    return op.describe()

  @property
  def step_ms(self) -> float:
    return sum((op.ms or 0.0) * op.count for op in self.ops.values())


def group_layers(ops: Sequence[Op]) -> list[Layer]:
  layers: dict[tuple, Layer] = {}
  for op in ops:
    layer = layers.setdefault(op.layer_key(), Layer(op.layer_key(), {}))
    role = op.role
    while role in layer.ops:  # two different ops with the same role and shapes: keep both
      role += "'"
    layer.ops[role] = op
  return list(layers.values())


def report_for_function(
  fn: Callable,
  args: Sequence,
  *,
  min_time: float = 0.3,
  min_calls: int = 3,
  time_step: bool = True,
  step_repeats: int = 3,
  roofline: dict | None = None,
  kinds: Sequence[str] = ("conv", "dot", "fused"),
  min_gflop: float = 0.0,
) -> dict:
  """The per-op report of jitted `fn(*args)` (see the module docstring) as a dict.

  `roofline`: a `measure_roofline()` result (measured here if None). Ops with fewer
  than `min_gflop` GFLOP per execution are listed but not timed.
  """
  import jax

  closed = jax.make_jaxpr(fn)(*args)
  ops = [op for op in collect_ops(closed) if op.kind in kinds]
  compiled = fn.lower(*args).compile() if hasattr(fn, "lower") else jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  hlo = compiled.as_text()
  for op in sorted(ops, key=lambda o: -o.flops):
    if op.flops >= min_gflop * 1e9:
      time_op(op, min_time=min_time, min_calls=min_calls)
  roofline = roofline or measure_roofline()
  peak = roofline["roofline_gflop_s"]
  step_s = None
  if time_step:
    state_args = list(args)
    call = compiled
    times = []
    out = call(*state_args)
    jax.block_until_ready(out)
    for _ in range(step_repeats):
      # A donated train state is consumed by each call: feed each step the previous output's state.
      if isinstance(out, tuple) and len(out) == 2 and len(state_args) == 2:
        state_args = [out[0], state_args[1]]
      t0 = time.perf_counter()
      out = call(*state_args)
      jax.block_until_ready(out)
      times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
  layers = group_layers(ops)
  layers.sort(key=lambda layer: -layer.step_ms)
  op_flops = sum(op.flops * op.count for op in ops)
  slow = []
  rows = []
  for layer in layers:
    row = {"layer": layer.desc, "kind": layer.key[0], "roles": {}}
    for role, op in layer.ops.items():
      entry = {
        "lhs": list(op.lhs[0]),
        "rhs": list(op.rhs[0]),
        "out": list(op.out[0]),
        "dtype": op.lhs[1],
        "flops": op.flops,
        "xla_flops": op.xla_flops,
        "gflop": op.flops / 1e9,
        "count": op.count,
        "in_loop": op.in_loop,
        "ms": op.ms,
        "gflop_s": op.gflop_s,
        "fraction_of_roofline": None if op.gflop_s is None else op.gflop_s / peak,
        "bytes": op_bytes(op),
        "attainable_gflop_s": attainable_gflop_s(op.flops, op_bytes(op), roofline),
      }
      entry["fraction_of_attainable"] = None if op.gflop_s is None else op.gflop_s / entry["attainable_gflop_s"]
      if op.native or op.phases:
        entry["kernel"] = op.primitive.name  # genjax's CPU kernel, or the phase form
      elif op.kind == "conv":
        p = op.params
        entry.update(
          window_strides=list(p["window_strides"]),
          padding=[list(x) for x in p["padding"]],
          lhs_dilation=list(p["lhs_dilation"]),
          rhs_dilation=list(p["rhs_dilation"]),
          dimension_numbers=[list(s) for s in p["dimension_numbers"]],
        )
      row["roles"][role] = entry
      if op.kind == "conv" and op.gflop_s is not None and op.gflop_s < SLOW_FRACTION * peak:
        slow.append(
          f"{layer.desc} {role}: {op.gflop_s:.1f} GFLOP/s ({100 * op.gflop_s / peak:.0f}%; "
          f"{100 * entry['fraction_of_attainable']:.0f}% of its attainable "
          f"{entry['attainable_gflop_s']:.0f} GFLOP/s)"
        )
    row["step_ms"] = layer.step_ms
    rows.append(row)
  mismatches = [
    op.describe() + f" {op.role}: {op.flops} vs XLA {op.xla_flops:.0f}"
    for op in ops
    if op.xla_flops is not None and op.xla_flops >= 0 and not _rewritten_by_xla(op) and not op.native
    if abs(op.xla_flops - op.flops) > 1e-6 * max(op.flops, 1)
  ]
  return {
    "roofline": roofline,
    "step_seconds": step_s,
    "step_xla_gflop": float(cost.get("flops", -1)) / 1e9 if cost else None,
    "ops_gflop_per_step": op_flops / 1e9,
    "ops_ms_per_step": sum(layer.step_ms for layer in layers),
    "hlo_convolutions": hlo.count(" convolution("),
    "hlo_dots": hlo.count(" dot("),
    "jaxpr_convolutions": sum(op.count for op in ops if op.kind == "conv"),
    "jaxpr_dots": sum(op.count for op in ops if op.kind == "dot"),
    "jaxpr_fused": sum(op.count for op in ops if op.kind == "fused"),
    "flop_count_mismatches": mismatches,
    "layers": rows,
    "slow_convs": slow,
    "slow_fraction": SLOW_FRACTION,
  }


def _hlo_instructions(hlo: str) -> dict[str, dict]:
  """HLO instruction name -> {'opcode', 'shape', 'kind' (a fusion's kind), 'op_name' (the jax op)}."""
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$", hlo, re.M):
    name, rest = m.group(1), m.group(2)
    shape_end = rest.find(" ") if not rest.startswith("(") else rest.find(") ") + 1
    opcode = re.match(r"\s*([\w-]+)\(", rest[shape_end:])
    kind = re.search(r"kind=(k\w+)", rest)
    op_name = re.search(r'op_name="([^"]+)"', rest)
    out[name] = {
      "opcode": opcode.group(1) if opcode else "?",
      "shape": rest[:shape_end].strip(),
      "kind": kind.group(1) if kind else None,
      "op_name": op_name.group(1) if op_name else "",
    }
  return out


def _category(inst: dict) -> str:
  """A thunk's category: 'library' (convolutions and matmuls: XLA's conv/dot or a YNNPACK
  fusion), 'elementwise' (loop fusions and copies: memory-bound), or its opcode."""
  if inst["opcode"] in ("convolution", "dot") or inst["kind"] == "kCustom":
    return "library (conv/dot)"
  if inst["opcode"] in ("fusion", "copy", "transpose", "concatenate", "pad", "slice", "broadcast", "select"):
    return "elementwise (loop fusions, copies)"
  return inst["opcode"]


def trace_step(fn: Callable, args: Sequence, steps: int = 3, top: int = 15) -> dict:
  """Where a compiled step's time goes, from a `jax.profiler` trace of `steps` executions: the
  time of every HLO thunk XLA:CPU ran (convolutions, matmuls and YNNPACK fusions, loop fusions,
  copies...), summed per step by category and listed for the `top` slowest thunks, with the
  jax op each came from. Thunks run concurrently on the CPU's threads, so their sum may exceed
  the step's wall time."""
  import glob
  import tempfile

  import jax

  compiled = fn.lower(*args).compile() if hasattr(fn, "lower") else jax.jit(fn).lower(*args).compile()
  insts = _hlo_instructions(compiled.as_text())
  state_args = list(args)

  def run():
    nonlocal state_args
    out = compiled(*state_args)
    if isinstance(out, tuple) and len(out) == 2 and len(state_args) == 2:  # a donated state: feed it on
      state_args = [out[0], state_args[1]]
    return out

  jax.block_until_ready(run())
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(steps):
        out = run()
      jax.block_until_ready(out)
    paths = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(paths[0])
    per_thunk: dict[str, float] = {}
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          if event.name in insts:
            per_thunk[event.name] = per_thunk.get(event.name, 0.0) + event.duration_ns / 1e6 / steps
  by_category: dict[str, float] = {}
  for name, ms in per_thunk.items():
    cat = _category(insts[name])
    by_category[cat] = by_category.get(cat, 0.0) + ms
  slowest = sorted(per_thunk.items(), key=lambda kv: -kv[1])[:top]
  return {
    "steps": steps,
    "thunk_ms_per_step": sum(per_thunk.values()),
    "by_category_ms": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
    "slowest": [
      {
        "thunk": n,
        "ms": ms,
        "shape": insts[n]["shape"],
        "category": _category(insts[n]),
        "op": insts[n]["op_name"],
      }
      for n, ms in slowest
    ],
  }


def format_trace(t: dict) -> str:
  lines = [f"trace: thunks {t['thunk_ms_per_step']:.1f} ms/step (summed over threads), by category:"]
  lines += [f"  {ms:9.1f} ms  {cat}" for cat, ms in t["by_category_ms"].items()]
  lines.append("slowest thunks (ms/step, output shape, category, jax op):")
  lines += [
    f"  {r['ms']:9.2f}  {r['shape'][:34]:34s} {r['category'][:11]:11s} {r['op'][-70:]}" for r in t["slowest"]
  ]
  return "\n".join(lines)


def _other_role(role: str, e: dict) -> str:
  rate = "" if e["gflop_s"] is None else f", {e['gflop_s']:.1f} GF/s"
  return f"{role}: {e['ms'] or 0:.2f} ms x{e['count']}{rate}"


def format_report(r: dict) -> str:
  """The report as a text table."""
  peak = r["roofline"]["roofline_gflop_s"]
  stream = r["roofline"].get("stream_gb_s")
  lines = [
    f"roofline: matmul 2048^3 {r['roofline']['matmul_2048_gflop_s']:.1f} GFLOP/s, conv 3x3 32x32x128->128 "
    f"{r['roofline']['conv3x3_32px_128ch_fwd_gflop_s']:.1f} GFLOP/s; reference {peak:.1f} GFLOP/s"
    + ("" if not stream else f"; memory {stream:.1f} GB/s")
  ]
  step = "" if r["step_seconds"] is None else f"step {1e3 * r['step_seconds']:.1f} ms; "
  lines.append(
    f"{step}convs+dots+fused {r['ops_gflop_per_step']:.2f} GFLOP/step (XLA cost analysis of the step: "
    f"{r['step_xla_gflop']:.2f}), their time alone {r['ops_ms_per_step']:.1f} ms/step; "
    f"{r['jaxpr_convolutions']} convs / {r['jaxpr_dots']} dots / {r['jaxpr_fused']} fused kernels per step"
  )
  head = f"{'layer':<40}{'GFLOP':>8}"
  for role in ROLES:
    head += f" | {role + ' ms':>10}{'GF/s':>7}{'%':>5}{'%att':>5}"
  head += f" | {'n f/d/w':>8}{'ms/step':>9}"
  lines += [head, "-" * len(head)]
  for row in r["layers"]:
    roles = row["roles"]
    first = roles.get("fwd") or next(iter(roles.values()))
    line = f"{row['layer'][:39]:<40}{first['gflop']:>8.3f}"
    counts = []
    for role in ROLES:
      e = roles.get(role)
      if e is None or e["ms"] is None:
        line += f" | {'-':>10}{'':>7}{'':>5}{'':>5}"
      else:
        pct = 100 * e["gflop_s"] / peak
        mark = "*" if pct < 100 * SLOW_FRACTION and row["kind"] == "conv" else " "
        form = {"genjax_conv_dgrad": "P"}.get(e.get("kernel"), "K" if e.get("kernel") else " ")
        loop = "L" if e["in_loop"] else form
        att = e.get("fraction_of_attainable")
        att_txt = f"{100 * att:>5.0f}" if att is not None else f"{'':>5}"
        line += f" | {e['ms']:>9.2f}{loop}{e['gflop_s']:>7.1f}{pct:>4.0f}{mark}{att_txt}"
      counts.append(str(e["count"]) if e else "0")
    others = [k for k in roles if k not in ROLES]
    line += f" | {'/'.join(counts):>8}{row['step_ms']:>9.1f}"
    if others:
      line += "  (" + ", ".join(_other_role(k, roles[k]) for k in others) + ")"
    lines.append(line)
  lines.append(
    "%: of the reference (compute) roofline, * below 30%; %att: of the op's attainable rate, "
    "min(compute roof, memory GB/s x FLOP per byte moved); L: the op sits in a loop body in the "
    "step; K: genjax's CPU kernel, P: phase convolutions (genjax.nn.conv_grads)"
  )
  if r["flop_count_mismatches"]:
    lines.append("FLOP counts differing from XLA's: " + "; ".join(r["flop_count_mismatches"]))
  return "\n".join(lines)


def _config_step(config, batch_size: int | None):
  import numpy as np

  from genjax.train.experiment import Experiment

  config = config.copy_and_resolve_references()
  if batch_size:
    with config.unlocked():
      config.train.batch_size = batch_size
  exp = Experiment(config)
  state = exp.init_state()
  b = config.train.batch_size
  batch = exp.shard(exp.splits["train"][np.arange(b) % len(exp.splits["train"])])
  return exp.train_step(), (state, batch), b


def trace_for_config(config, batch_size: int | None = None, steps: int = 3) -> dict:
  """`trace_step` of the config's train step at its batch size (or `batch_size`)."""
  step, args, b = _config_step(config, batch_size)
  t = trace_step(step, args, steps=steps)
  t["batch_size"] = b
  return t


def report_for_config(config, batch_size: int | None = None, **kwargs) -> dict:
  """`report_for_function` of the config's train step at its batch size (or `batch_size`)."""
  step, args, b = _config_step(config, batch_size)
  r = report_for_function(step, args, **kwargs)
  r["batch_size"] = b
  return r


TRACE = flags.DEFINE_integer(
  "trace", 0, "Instead: trace this many steps with jax.profiler and report the time of every HLO thunk."
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Global batch size (0 = the config's).")
MIN_TIME = flags.DEFINE_float("min_time", 0.3, "Seconds of repeated calls per op timing (at least 3 calls).")
TIME_STEP = flags.DEFINE_boolean("time_step", True, "Also time the whole compiled step.")
STEP_REPEATS = flags.DEFINE_integer("step_repeats", 3, "Timed steps (median) when --time_step.")
MIN_GFLOP = flags.DEFINE_float("min_gflop", 0.0, "Ops below this many GFLOP per execution are listed, not timed.")


def main(argv):
  from genjax.benchmarks import environment

  del argv
  if TRACE.value:
    t = trace_for_config(common.CONFIG.value, BATCH_SIZE.value or None, steps=TRACE.value)
    print(format_trace(t))
    print(json.dumps(t, sort_keys=True))
    return
  r = report_for_config(
    common.CONFIG.value,
    BATCH_SIZE.value or None,
    min_time=MIN_TIME.value,
    time_step=TIME_STEP.value,
    step_repeats=STEP_REPEATS.value,
    min_gflop=MIN_GFLOP.value,
  )
  r["config"] = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), None)
  r["environment"] = environment.describe()
  print(format_report(r))
  print(json.dumps(r, sort_keys=True))


def entry() -> None:
  """The `genjax-op-report` console script."""
  common.run(main, __name__)


if __name__ == "__main__":
  entry()
