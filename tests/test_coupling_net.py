"""`genjax.nn.coupling_net`: the fused CPU kernel of a coupling net is the same function as
its XLA form (values, every gradient, forward mode, vmap), deterministic, and RealNVP's
nets use it with unchanged parameters."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.nn import conv2d, coupling_net, flows, native


def _expected_status() -> bool:
  """Whether this machine should have the kernel: x86-64 Linux with AVX2 and FMA and the C++
  compiler Python's build uses (CI's machine; the build is optional elsewhere)."""
  cxx = (sysconfig.get_config_var("CXX") or "c++").split()[0]
  return (
    platform.machine() == "x86_64"
    and native.cpu_has_avx2_fma()
    and shutil.which(cxx) is not None
    and os.environ.get("GENJAX_NO_FUSED_KERNELS", "") in ("", "0")
  )


def test_kernel_is_built_and_loaded_where_it_can_be():
  status = coupling_net.kernel_status()
  if _expected_status():
    assert status == "loaded", status
  else:
    assert status != "loaded" and status  # says why


needs_kernel = pytest.mark.skipif(not _expected_status(), reason="the fused kernel needs x86-64 with AVX2+FMA")


def _pixel_args(k, f, o, n, seed=0):
  ks = jax.random.split(jax.random.key(seed), 5)
  p = jax.random.normal(ks[0], (k, n))
  w1 = jax.random.normal(ks[1], (k, f)) / np.sqrt(k)
  b1 = 0.3 * jax.random.normal(ks[2], (f,))
  w2 = jax.random.normal(ks[3], (f, o)) / np.sqrt(f)
  ct = jax.random.normal(ks[4], (o, n))
  return (p, w1, b1, w2), ct


@needs_kernel
@pytest.mark.parametrize(
  "k,f,o,n",
  [
    (9, 64, 18, 4096),  # two full chunks of 2048 pixels
    (18, 64, 36, 2048 + 128 * 3 + 37),  # a partial chunk and a partial tile
    (9, 13, 7, 100),  # less than one tile; widths that fill no micro-tile
    (4, 5, 1, 129),
  ],
)
def test_kernel_matches_xla_in_values_and_all_gradients(k, f, o, n):
  args, ct = _pixel_args(k, f, o, n)
  want, vjp_want = jax.vjp(coupling_net.pixel_net_reference, *args)
  got, vjp_got = jax.jit(lambda *a: jax.vjp(coupling_net.pixel_net, *a))(*args)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, w in zip(vjp_got(ct), vjp_want(ct), strict=True):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * scale)


@needs_kernel
def test_kernel_runs_in_the_compiled_program_and_is_deterministic():
  args, ct = _pixel_args(9, 64, 18, 5000, seed=1)
  step = jax.jit(jax.grad(lambda *a: jnp.vdot(coupling_net.pixel_net(*a), ct), argnums=(0, 1, 2, 3)))
  hlo = step.lower(*args).compile().as_text()
  assert coupling_net._BWD_TARGET in hlo  # the backward pass runs the kernel
  first = step(*args)
  for a, b in zip(first, step(*args), strict=True):
    np.testing.assert_array_equal(a, b)  # chunked partial sums: no dependence on scheduling
  both = jax.jit(lambda *a: jax.value_and_grad(lambda *b: jnp.vdot(coupling_net.pixel_net(*b), ct))(*a))
  assert coupling_net._FWD_TARGET in both.lower(*args).compile().as_text()


def _conv_args(b, h, w, c, f, o, seed=0):
  ks = jax.random.split(jax.random.key(seed), 6)
  x = jax.random.normal(ks[0], (b, h, w, c))
  k1 = jax.random.normal(ks[1], (3, 3, c, f)) / 3
  b1 = 0.1 * jax.random.normal(ks[2], (f,))
  k2 = jax.random.normal(ks[3], (3, 3, f, o)) / 8
  b2 = jax.random.normal(ks[4], (o,))
  return (x, k1, b1, k2, b2), jax.random.normal(ks[5], (b, h, w, o))


def _conv_reference(x, k1, b1, k2, b2):
  return conv2d.conv2d(jax.nn.relu(conv2d.conv2d(x, k1, bias=b1)), k2, bias=b2)


@needs_kernel
@pytest.mark.parametrize("shape", [(2, 8, 8, 1, 16, 2), (3, 7, 5, 2, 64, 4)])
def test_conv_net_is_the_two_convolutions(shape):
  args, ct = _conv_args(*shape)

  @functools.partial(jax.jit, static_argnums=0)
  def value_and_grads(fn):
    return fn(*args), jax.grad(lambda *a: jnp.vdot(fn(*a), ct), argnums=tuple(range(5)))(*args)

  (got, got_grads), (want, want_grads) = value_and_grads(coupling_net.conv_net), value_and_grads(_conv_reference)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, w in zip(got_grads, want_grads, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(w))))


@needs_kernel
def test_forward_mode_vmap_and_per_example_gradients():
  args, _ = _conv_args(2, 4, 3, 2, 8, 4, seed=2)
  x, rest = args[0], args[1:]
  fused = lambda v: coupling_net.conv_net(v, *rest)  # noqa: E731
  ref = lambda v: _conv_reference(v, *rest)  # noqa: E731
  cube = lambda fn: lambda v: (fn(v) ** 3).sum()  # noqa: E731  (a loss with a non-zero Hessian)
  tangent = jnp.ones_like(x)

  @functools.partial(jax.jit, static_argnums=0)
  def derivatives(fn):
    return {
      "jacfwd": jax.jacfwd(fn)(x),
      "jacrev": jax.jacrev(fn)(x),
      "vmap": jax.vmap(lambda v: fn(v[None])[0])(x),
      "per_example": jax.vmap(jax.grad(lambda v: cube(fn)(v[None])))(x),
      "hessian": jax.hessian(cube(fn))(x),
      "hvp": jax.jvp(jax.grad(cube(fn)), (x,), (tangent,))[1],  # forward over reverse, no vmap
    }

  got, want = derivatives(fused), derivatives(ref)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)


@needs_kernel
def test_right_on_a_data_parallel_mesh():
  """Sharded over the conftest's 4 host devices (XLA gathers the custom call's operands: correct, not fast)."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
  args, ct = _conv_args(4, 6, 5, 1, 16, 2, seed=3)
  data = NamedSharding(mesh, PartitionSpec("data"))
  x, ct_sharded = jax.device_put(args[0], data), jax.device_put(ct, data)

  def value_and_grads(fn, x, ct):
    return jax.value_and_grad(lambda *a: jnp.vdot(fn(*a), ct), argnums=(0, 1, 2, 3, 4))(x, *args[1:])

  got = jax.jit(functools.partial(value_and_grads, coupling_net.conv_net))(x, ct_sharded)
  want = value_and_grads(_conv_reference, args[0], ct)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(w))))


@pytest.mark.parametrize("dtype,fused", [(None, True), (jnp.bfloat16, False)])
def test_resnet_st_without_blocks_uses_it_with_the_same_parameters(monkeypatch, dtype, fused):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))
  net = flows.ResNetST(16, 0, 4, dtype=dtype)
  assert net._fused(x) == (fused and _expected_status())
  params = net.init(jax.random.key(1), x)
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), params)
  loss = lambda p: (net.apply(p, x).astype(jnp.float32) ** 2).sum()  # noqa: E731
  got, got_grad = net.apply(params, x), jax.grad(loss)(params)
  monkeypatch.setattr(coupling_net, "fusable", lambda *a: False)
  assert not net._fused(x)
  unfused = net.init(jax.random.key(1), x)
  assert jax.tree.structure(unfused) == jax.tree.structure(params)
  perturbed = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), unfused)
  for a, b in zip(jax.tree.leaves(perturbed), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)  # the same names, shapes and initial values
  want, want_grad = net.apply(params, x), jax.grad(loss)(params)
  tol = 1e-5 if dtype is None else 0.0
  np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32), atol=tol)
  for g, w in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(w))) if fused else 0.0)


def test_switched_off_by_the_environment(monkeypatch):
  monkeypatch.setenv("GENJAX_NO_FUSED_KERNELS", "1")
  assert native.status.__wrapped__() == "off (GENJAX_NO_FUSED_KERNELS)"
