"""The per-op report (`genjax.benchmarks.op_report`): it finds a step's convolutions and matmuls,
tells forward, input-gradient and weight-gradient convolutions apart, and counts their FLOPs
as a hand count and XLA's cost analysis do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from genjax.benchmarks import op_report
from genjax.benchmarks.op_report import ROLES
from tests.helpers import tiny_config

# A fixed roofline so the tests do not spend time measuring one.
ROOF = {"matmul_2048_gflop_s": 100.0, "conv3x3_32px_128ch_fwd_gflop_s": 100.0, "roofline_gflop_s": 100.0}
FAST = {"min_time": 0.0, "min_calls": 1, "time_step": False, "roofline": ROOF}


def _conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_roles_groups_and_hand_counted_flops():
  """Gradient of a 3x3 stride-2 conv (8x8x1 -> 4x4x8) feeding a 3x3 conv (4x4x8 -> 4x4x4) and a Dense."""
  b = 4
  x = jnp.ones((b, 8, 8, 1))
  params = {"w1": jnp.ones((3, 3, 1, 8)), "w2": jnp.ones((3, 3, 8, 4)), "d": jnp.ones((64, 3))}

  def loss(p, x):
    h = jnp.tanh(_conv(x, p["w1"], 2))
    h = jnp.tanh(_conv(h, p["w2"], 1))
    return jnp.sum(jnp.tanh(h.reshape(b, -1) @ p["d"]))

  r = op_report.report_for_function(jax.jit(jax.grad(loss)), (params, x), **FAST)
  layers = {row["layer"]: row["roles"] for row in r["layers"]}
  assert set(layers) == {"conv 3x3/2 8x8x1->4x4x8", "conv 3x3 4x4x8->4x4x4", "dot [4, 64].[64, 3]->[4, 3]"}
  # The first layer's input is data: no input gradient. The others have all three roles.
  assert set(layers["conv 3x3/2 8x8x1->4x4x8"]) == {"fwd", "wgrad"}
  assert set(layers["conv 3x3 4x4x8->4x4x4"]) == {"fwd", "dgrad", "wgrad"}
  assert set(layers["dot [4, 64].[64, 3]->[4, 3]"]) == {"fwd", "dgrad", "wgrad"}
  assert layers["conv 3x3 4x4x8->4x4x4"]["wgrad"]["out"] == [3, 3, 8, 4]
  assert layers["conv 3x3 4x4x8->4x4x4"]["dgrad"]["out"] == [b, 4, 4, 8]
  # Hand counts. 3x3 stride 2 'SAME' on 8 -> 4 pads (0, 1): per dimension 12 kernel-output pairs,
  # of which one reads the padding (output 3, tap 2) -> 11; 11 * 11 positions per example.
  fwd1 = layers["conv 3x3/2 8x8x1->4x4x8"]["fwd"]
  assert fwd1["flops"] == 2 * b * 8 * 1 * 11 * 11
  # 3x3 stride 1 'SAME' on 4x4: per dimension 4 + 3 + 3 = 10 valid pairs (the edge taps lose one each).
  for role in ("fwd", "dgrad", "wgrad"):
    e = layers["conv 3x3 4x4x8->4x4x4"][role]
    assert e["flops"] == 2 * b * 8 * 4 * 10 * 10, role
    assert e["xla_flops"] == e["flops"], role  # XLA's cost analysis of the op compiled alone
    assert e["ms"] > 0 and e["count"] == 1
  assert layers["dot [4, 64].[64, 3]->[4, 3]"]["fwd"]["flops"] == 2 * b * 64 * 3
  assert r["flop_count_mismatches"] == []
  assert r["jaxpr_convolutions"] == 5 and r["jaxpr_dots"] == 3


def test_scan_bodies_count_per_iteration_and_flag_the_loop():
  w = jnp.ones((3, 3, 2, 2))

  def f(x):
    def body(h, _):
      return _conv(h, w, 1), None

    return lax.scan(body, x, None, length=3)[0]

  r = op_report.report_for_function(jax.jit(f), (jnp.ones((1, 5, 5, 2)),), **FAST)
  (row,) = r["layers"]
  assert row["roles"]["fwd"]["count"] == 3 and row["roles"]["fwd"]["in_loop"]


def test_report_on_a_tiny_config_finds_every_conv_of_the_step():
  """The conv VAE at 8x8: two stride-2 encoder convs and the decoder's output conv (its transposed
  convolutions run as matmuls at these widths, see `genjax.nn.conv_transpose`)."""
  r = op_report.report_for_config(tiny_config("vae", "tiny,conv"), batch_size=8, **FAST)
  convs = {row["layer"]: row["roles"] for row in r["layers"] if row["kind"] == "conv"}
  assert set(convs) == {"conv 3x3/2 8x8x1->4x4x8", "conv 3x3/2 4x4x8->2x2x16", "conv 3x3 8x8x8->8x8x1"}, convs
  assert set(convs["conv 3x3/2 8x8x1->4x4x8"]) == {"fwd", "wgrad"}  # its input is the data
  assert set(convs["conv 3x3 8x8x8->8x8x1"]) == set(convs["conv 3x3/2 4x4x8->2x2x16"]) == set(ROLES)
  assert r["jaxpr_convolutions"] == 8 and r["batch_size"] == 8
  assert r["flop_count_mismatches"] == []
  assert any(row["kind"] == "dot" and "wgrad" in row["roles"] for row in r["layers"])
  text = op_report.format_report(r)
  assert "conv 3x3/2 4x4x8->2x2x16" in text and "wgrad ms" in text


def test_trace_reports_every_thunk_by_category_with_its_jax_op():
  """`--trace`: a profiler trace of the compiled step gives each HLO thunk's time, summed into
  library convolutions/matmuls and element-wise work, and names the jax op behind the slowest."""
  t = op_report.trace_for_config(tiny_config("vae", "tiny,conv"), batch_size=8, steps=2)
  cats = t["by_category_ms"]
  assert cats["library (conv/dot)"] > 0 and cats["elementwise (loop fusions, copies)"] > 0, cats
  assert abs(sum(cats.values()) - t["thunk_ms_per_step"]) < 1e-6 and t["batch_size"] == 8
  assert t["slowest"] and all(r["ms"] >= s["ms"] for r, s in zip(t["slowest"], t["slowest"][1:], strict=False))
  assert any("conv_general_dilated" in r["op"] or "dot_general" in r["op"] for r in t["slowest"])
  text = op_report.format_trace(t)
  assert "library (conv/dot)" in text and "slowest thunks" in text


def test_fused_coupling_kernels_are_listed_with_their_flops():
  """RealNVP's fused coupling-net kernels (`genjax.nn.coupling_net`): XLA's cost analysis does not
  see a custom call's FLOPs, so the report counts them from the shapes, forward and backward."""
  from genjax.nn import coupling_net

  b, h, w, c, f, o = 2, 8, 8, 1, 16, 2
  x = jnp.ones((b, h, w, c))
  params = (jnp.ones((3, 3, c, f)), jnp.ones((f,)), jnp.ones((3, 3, f, o)), jnp.ones((o,)))
  loss = lambda p, x: jnp.sum(coupling_net.conv_net(x, *p) ** 2)  # noqa: E731
  r = op_report.report_for_function(jax.jit(jax.grad(loss)), (params, x), **FAST)
  fused = [row for row in r["layers"] if row["kind"] == "fused"]
  if coupling_net.kernel_status() != "loaded":
    assert fused == [] and r["jaxpr_fused"] == 0
    return
  (row,) = fused
  n, k = b * h * w, 9 * c
  assert row["layer"] == f"fused net {k}->{f}->{9 * o} x{n} px"
  assert row["roles"]["fwd"]["flops"] == 2 * n * (k * f + f * 9 * o)
  assert row["roles"]["bwd"]["flops"] == 2 * n * (3 * k * f + 2 * f * 9 * o)
  assert row["roles"]["bwd"]["ms"] > 0 and r["jaxpr_fused"] == 2
  assert r["flop_count_mismatches"] == []
  assert "bwd:" in op_report.format_report(r)


def test_attainable_rate_is_the_roofline_models_bound():
  """A 1x1 conv 64x64x16 -> 64x64x16 (batch 2): 2*8192*16*16 FLOPs over (131072 + 256 + 131072)
  floats moved, so at 10 GB/s its attainable rate is the memory roof times 0.25 FLOP/byte; a
  wide matmul's is the compute roof."""
  roof = dict(ROOF, stream_gb_s=10.0)
  op = op_report.Op(
    "conv", "fwd", None, {}, ((2, 64, 64, 16), "float32"), ((1, 1, 16, 16), "float32"),
    ((2, 64, 64, 16), "float32"), 2 * 8192 * 16 * 16,
  )  # fmt: skip
  nbytes = 4 * (131072 + 256 + 131072)
  assert op_report.op_bytes(op) == nbytes
  assert abs(op_report.attainable_gflop_s(op.flops, nbytes, roof) - 10.0 * op.flops / nbytes) < 1e-9
  assert op_report.attainable_gflop_s(2 * 2048**3, 3 * 4 * 2048**2, roof) == 100.0
  assert op_report.attainable_gflop_s(op.flops, nbytes, ROOF) == 100.0  # no memory roof measured: the compute one


def test_phase_input_gradient_is_its_layers_dgrad():
  """A strided conv through `conv_grads.conv` (input gradient by phases): one layer row with the
  three roles, the phase dgrad counted with the FLOPs of XLA's input gradient."""
  from genjax.nn import conv_grads

  x, w = jnp.ones((2, 8, 8, 32)), jnp.ones((3, 3, 32, 8))
  pads = ((0, 1), (0, 1))

  def loss(w, x, conv):
    return jnp.sum(jnp.tanh(conv(x, w, (2, 2), pads)))

  xla = lambda x, w, s, p: lax.conv_general_dilated(x, w, s, p, dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
  both = jax.jit(jax.grad(lambda w, x: loss(w, x, conv_grads.conv) + loss(w, jnp.tanh(x), xla), argnums=(0, 1)))
  r = op_report.report_for_function(both, (w, x), **FAST)
  (row,) = [row for row in r["layers"] if row["layer"] == "conv 3x3/2 8x8x32->4x4x8"]
  assert {"fwd", "dgrad", "dgrad'"} <= set(row["roles"])
  phase = [e for e in row["roles"].values() if e.get("kernel") == "genjax_conv_dgrad"]
  xla_dgrad = [e for k, e in row["roles"].items() if k.startswith("dgrad") and not e.get("kernel")]
  assert len(phase) == 1 and len(xla_dgrad) == 1
  assert phase[0]["flops"] == xla_dgrad[0]["flops"] == xla_dgrad[0]["xla_flops"]
