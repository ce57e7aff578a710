"""`jax.vmap` over examples equals the batched call, for every public function of
`genjax.losses` and every per-example function of `genjax.diffusion`.

Each module's public functions are enumerated, and a function that is neither covered
by a case here nor listed as exempt (with the reason) fails the coverage test, so a new
public function cannot slip past.

Three kinds of case:
* `batched`: the per-example function under `jax.vmap` equals one call on the whole batch
  (event functions use the same `event_ndims` in both: it counts trailing axes);
* `loop`: random functions (a key per example) and batch-level scalars (a whole batch per
  mapped slice): `jax.vmap` equals a Python loop of single calls;
both in values and, for the differentiable arguments, in gradients of a scalar function
of the output.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from types import ModuleType

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import diffusion, losses

B = 3  # examples (or batches, for the `loop` cases) on the mapped axis


@dataclasses.dataclass(frozen=True)
class Case:
  fn: Callable  # the per-example (or per-batch) call
  args: tuple  # mapped on `in_axes`
  kind: str = "batched"  # or "loop"
  batched: Callable | None = None  # the batched call, if not `fn` itself
  in_axes: int | tuple = 0
  diff: tuple[int, ...] = ()  # argnums whose gradients are compared too


def _rng_arrays(seed):
  rng = np.random.default_rng(seed)
  a = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  u = lambda *s: jnp.asarray(rng.uniform(0.05, 0.95, size=s), jnp.float32)
  bins = lambda *s: jnp.asarray(rng.integers(0, 256, size=s) / 255.0, jnp.float32)
  return rng, a, u, bins


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def _loss_cases() -> dict[str, Case]:
  rng, a, u, bins = _rng_arrays(0)
  critic_w = a(2, 3)
  critic = lambda x: jnp.sum(jnp.tanh(x.reshape(x.shape[0], -1) @ critic_w.reshape(-1, 1)), axis=-1)
  ev = lambda f, n, **kw: lambda *args: f(*args, event_ndims=n, **kw)
  return {
    "gaussian_kl": Case(
      lambda m, lv, m2, lv2: losses.gaussian_kl(m, lv, mean2=m2, logvar2=lv2, event_ndims=1),
      (a(B, 4), a(B, 4), a(B, 4), a(B, 4)),
      diff=(0, 1, 2, 3),
    ),
    "gaussian_log_prob": Case(
      ev(losses.gaussian_log_prob, 2), (a(B, 2, 3), a(B, 2, 3), a(B, 2, 3)), diff=(0, 1, 2)
    ),
    "standard_normal_log_prob": Case(ev(losses.standard_normal_log_prob, 2), (a(B, 2, 3),), diff=(0,)),
    "discretized_gaussian_log_prob": Case(
      ev(losses.discretized_gaussian_log_prob, 2), (bins(B, 2, 3), u(B, 2, 3), a(B, 2, 3) - 6.0), diff=(1, 2)
    ),
    "bernoulli_log_prob": Case(ev(losses.bernoulli_log_prob, 2), (u(B, 2, 3), a(B, 2, 3)), diff=(0, 1)),
    "categorical_log_prob": Case(
      ev(losses.categorical_log_prob, 2), (jnp.asarray(rng.integers(0, 5, (B, 2, 3))), a(B, 2, 3, 5)), diff=(1,)
    ),
    "squared_error": Case(ev(losses.squared_error, 2), (a(B, 2, 3), a(B, 2, 3)), diff=(0, 1)),
    "flow_nll": Case(ev(losses.flow_nll, 1), (a(B, 4), a(B)), diff=(0, 1)),
    "logit_transform": Case(lambda x: losses.logit_transform(x, 0.05, event_ndims=2), (u(B, 2, 3),), diff=(0,)),
    "logit_transform_inverse": Case(lambda y: losses.logit_transform_inverse(y, 0.05), (a(B, 4),), diff=(0,)),
    "elbo": Case(lambda ll, kl: losses.elbo(ll, kl, 0.7), (a(B), a(B)), diff=(0, 1)),
    "iwae_bound": Case(  # per example [K]; batched [K, B] on axis 0
      lambda lw: losses.iwae_bound(lw, axis=0), (a(6, B),), in_axes=1, diff=(0,)
    ),
    "bits_per_dim": Case(lambda n: losses.bits_per_dim(n, 64, bin_width=1 / 256), (a(B),), diff=(0,)),
    "dequantized_bits_per_dim": Case(lambda n: losses.dequantized_bits_per_dim(n, 64), (a(B),), diff=(0,)),
    "reparameterize": Case(
      lambda k, m, lv: losses.reparameterize(k, m, lv, num_samples=2),
      (_keys(B), a(B, 4), a(B, 4)),
      "loop",
      diff=(1, 2),
    ),
    # Batch-level scalars: each mapped slice is one batch of 5 logits.
    "gan_discriminator_loss": Case(losses.gan_discriminator_loss, (a(B, 5), a(B, 5)), "loop", diff=(0, 1)),
    "gan_generator_minimax_loss": Case(losses.gan_generator_minimax_loss, (a(B, 5),), "loop", diff=(0,)),
    "gan_generator_non_saturating_loss": Case(
      losses.gan_generator_non_saturating_loss, (a(B, 5),), "loop", diff=(0,)
    ),
    "gan_hinge_discriminator_loss": Case(
      losses.gan_hinge_discriminator_loss, (a(B, 5), a(B, 5)), "loop", diff=(0, 1)
    ),
    "gan_hinge_generator_loss": Case(losses.gan_hinge_generator_loss, (a(B, 5),), "loop", diff=(0,)),
    "wgan_critic_loss": Case(losses.wgan_critic_loss, (a(B, 5), a(B, 5)), "loop", diff=(0, 1)),
    "wgan_generator_loss": Case(losses.wgan_generator_loss, (a(B, 5),), "loop", diff=(0,)),
    "gradient_penalty": Case(
      lambda r, f, k: losses.gradient_penalty(critic, r, f, k),
      (a(B, 4, 2, 3), a(B, 4, 2, 3), _keys(B, 1)),
      "loop",
      diff=(0, 1),
    ),
  }


LOSS_EXEMPT: dict[str, str] = {}


def _diffusion_cases() -> dict[str, Case]:
  rng, a, u, bins = _rng_arrays(1)
  s = diffusion.get_schedule("linear", 6)
  t = jnp.asarray(rng.integers(0, 6, B), jnp.int32)
  x0 = bins(B, 2, 3) * 2.0 - 1.0
  x0b = bins(B, 2, 2, 3) * 2.0 - 1.0  # B batches of 2 examples
  # A fixed, batch-independent stand-in for the network (eps_fn(x [N, ...], t int[N])).
  eps_fn = lambda x, tt: jnp.tanh(x + 0.1 * tt.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype))
  # ... and for a conditional network (eps_fn(x [N, ...], t int[N], c int[N])).
  cond_eps_fn = lambda x, tt, c: eps_fn(x, tt) * (1.0 + 0.05 * c.reshape((-1,) + (1,) * (x.ndim - 1)))
  return {
    "q_mean_variance": Case(lambda x, tt: diffusion.q_mean_variance(s, x, tt), (x0, t), diff=(0,)),
    "q_sample_from_noise": Case(
      lambda x, tt, n: diffusion.q_sample_from_noise(s, x, tt, n), (x0, t, a(B, 2, 3)), diff=(0, 2)
    ),
    "q_sample": Case(lambda k, x, tt: diffusion.q_sample(s, k, x, tt), (_keys(B), x0, t), "loop", diff=(1,)),
    "q_posterior_mean_variance": Case(
      lambda x, xt, tt: diffusion.q_posterior_mean_variance(s, x, xt, tt), (x0, a(B, 2, 3), t), diff=(0, 1)
    ),
    "predict_x0_from_eps": Case(
      lambda xt, tt, e: diffusion.predict_x0_from_eps(s, xt, tt, e), (a(B, 2, 3), t, a(B, 2, 3)), diff=(0, 2)
    ),
    "predict_eps_from_x0": Case(
      lambda xt, tt, x: diffusion.predict_eps_from_x0(s, xt, tt, x), (a(B, 2, 3), t, x0), diff=(0, 2)
    ),
    "reverse_log_variance": Case(lambda tt, x: diffusion.reverse_log_variance(s, tt, x, "fixed_large"), (t, x0)),
    "p_mean_variance": Case(
      lambda xt, tt, e: diffusion.p_mean_variance(s, xt, tt, e, "fixed_small", clip_denoised=True),
      (a(B, 2, 3), t, a(B, 2, 3)),
      diff=(0, 2),
    ),
    "simple_loss": Case(
      lambda n, e: diffusion.simple_loss(n, e, event_ndims=2), (a(B, 2, 3), a(B, 2, 3)), diff=(0, 1)
    ),
    "prior_kl": Case(lambda x: diffusion.prior_kl(s, x, event_ndims=2), (x0,), diff=(0,)),
    "discretized_decoder_nll": Case(
      lambda x, m, lv: diffusion.discretized_decoder_nll(x, m, lv, event_ndims=2),
      (x0, a(B, 2, 3), a(B, 1, 1) - 5.0),
      diff=(1, 2),
    ),
    "vlb_term": Case(
      lambda x, xt, tt, e: diffusion.vlb_term(s, x, xt, tt, e, "fixed_large", clip_denoised=False, event_ndims=2),
      (x0, a(B, 2, 3), t.at[0].set(0), a(B, 2, 3)),  # one example on the decoder term
      diff=(1, 3),
    ),
    # The bounds and samplers call the network on a batch [N, ...]: each mapped slice is a batch.
    "single_t_bound": Case(
      lambda k, x: diffusion.single_t_bound(s, eps_fn, k, x, clip_denoised=True), (_keys(B, 2), x0b), "loop"
    ),
    "full_bound": Case(
      lambda k, x: diffusion.full_bound(s, eps_fn, k, x, clip_denoised=True), (_keys(B, 3), x0b), "loop"
    ),
    "ancestral_step": Case(
      lambda k, x: diffusion.ancestral_step(s, eps_fn, k, x, 3, clip_denoised=True),
      (_keys(B, 4), a(B, 2, 3)),
      "loop",
      diff=(1,),
    ),
    "ancestral_sample": Case(
      lambda k: diffusion.ancestral_sample(s, eps_fn, k, (2, 3), clip_denoised=True), (_keys(B, 5),), "loop"
    ),
    "ddim_sample": Case(
      lambda k: diffusion.ddim_sample(s, eps_fn, k, (2, 3), num_steps=3, eta=0.5, clip_denoised=True),
      (_keys(B, 6),),
      "loop",
    ),
    "interpolate": Case(
      lambda k, xa, xb: diffusion.interpolate(s, eps_fn, k, xa, xb, 2, jnp.linspace(0, 1, 3), clip_denoised=True),
      (_keys(B, 7), x0, x0[::-1]),
      "loop",
    ),
    "slerp": Case(lambda z0, z1: diffusion.slerp(z0, z1, 0.3), (a(B, 4), a(B, 4)), "loop", diff=(0, 1)),
    "guided_eps_fn": Case(
      lambda x, tt, c: diffusion.guided_eps_fn(cond_eps_fn, c, jnp.full_like(c, 9), 2.0)(x, tt),
      (a(B, 2, 2, 3), jnp.asarray(rng.integers(0, 6, (B, 2)), jnp.int32), jnp.asarray(rng.integers(0, 9, (B, 2)))),
      "loop",
      diff=(0,),
    ),
  }


DIFFUSION_EXEMPT = {
  name: "schedule construction: no examples"
  for name in ("linear_betas", "cosine_betas", "make_schedule", "get_schedule", "ddim_timesteps")
}


def _public_functions(module: ModuleType) -> set[str]:
  return {
    name
    for name, f in vars(module).items()
    if not name.startswith("_") and inspect.isfunction(f) and f.__module__ == module.__name__
  }


LOSS_CASES = _loss_cases()
DIFFUSION_CASES = _diffusion_cases()
# The bounds and samplers compile a loop over the network per case (~5 s of CPU each, cold).
SLOW = {"single_t_bound", "full_bound", "ancestral_step", "ancestral_sample", "ddim_sample", "interpolate"}
ALL = [
  pytest.param(module, name, case, id=f"{module}.{name}", marks=[pytest.mark.slow] if name in SLOW else [])
  for module, cases in (("losses", LOSS_CASES), ("diffusion", DIFFUSION_CASES))
  for name, case in cases.items()
]


@pytest.mark.parametrize(
  "module,cases,exempt", [(losses, LOSS_CASES, LOSS_EXEMPT), (diffusion, DIFFUSION_CASES, DIFFUSION_EXEMPT)]
)
def test_every_public_function_is_covered(module, cases, exempt):
  public = _public_functions(module)
  assert public, module
  missing = public - set(cases) - set(exempt)
  assert not missing, f"{module.__name__}: add a vmap case (or an exemption with its reason) for {sorted(missing)}"
  stale = (set(cases) | set(exempt)) - public
  assert not stale, f"{module.__name__}: cases for functions that no longer exist: {sorted(stale)}"


def _cotangent(out):
  """Fixed random cotangents for every output leaf: a fixed linear function of the output."""
  leaves, tree = jax.tree.flatten(out)
  keys = jax.random.split(jax.random.key(42), len(leaves))
  return jax.tree.unflatten(
    tree, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
  )


def _vjp(f: Callable, diff: tuple[int, ...], args, cot=None):
  """`(f(*args), the vector-Jacobian product wrt args[diff])`, cotangent `cot` (default: `_cotangent`)."""

  def on_diff(*dargs):
    full = list(args)
    for i, d in zip(diff, dargs, strict=True):
      full[i] = d
    return f(*full)

  out, vjp = jax.vjp(on_diff, *(args[i] for i in diff))
  return out, vjp(_cotangent(out) if cot is None else cot)


def _compare(case: Case):
  """`(mapped out, its vjp, reference out, its vjp)` for one case, in one program."""
  in_axes = case.in_axes if isinstance(case.in_axes, tuple) else (case.in_axes,) * len(case.args)
  mapped = jax.vmap(case.fn, in_axes=in_axes)
  stack = lambda *xs: jnp.stack(xs)

  def run(*args):
    if not case.diff:
      got, g_got = mapped(*args), ()
    else:
      got, g_got = _vjp(mapped, case.diff, args)
    if case.kind == "batched":
      reference = case.batched or case.fn
      want, g_want = _vjp(reference, case.diff, args) if case.diff else (reference(*args), ())
      return got, g_got, want, g_want
    # One call per mapped slice; the slices' vjps with their slices of the cotangent
    # stack to the vjp of the mapped function.
    assert in_axes == (0,) * len(args)
    slices = [tuple(x[i] for x in args) for i in range(B)]
    want = jax.tree.map(stack, *[case.fn(*a) for a in slices])
    if not case.diff:
      return got, g_got, want, ()
    cot = _cotangent(want)
    per_slice = [
      _vjp(case.fn, case.diff, a, jax.tree.map(lambda c, i=i: c[i], cot))[1] for i, a in enumerate(slices)
    ]
    return got, g_got, want, jax.tree.map(stack, *per_slice)

  return jax.jit(run)(*case.args)


@pytest.mark.parametrize("module,name,case", ALL)
def test_vmap_equals_batched_call(module, name, case):
  got, g_got, want, g_want = _compare(case)
  chex.assert_trees_all_equal_shapes(got, want)
  chex.assert_tree_all_finite(want)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
  if case.diff:
    chex.assert_tree_all_finite(g_want)
    assert any(np.any(np.asarray(g) != 0) for g in g_want), name
    chex.assert_trees_all_close(g_got, g_want, rtol=1e-5, atol=1e-5)


def test_the_silent_vmap_bug_is_gone():
  """vmap of a per-image log-density gives one number per image (it used to give [64, 784])."""
  x = jnp.asarray(np.random.default_rng(0).random((64, 28, 28, 1)) < 0.5, jnp.float32)
  logits = jnp.zeros_like(x)
  per_image = jax.vmap(lambda xi, li: losses.bernoulli_log_prob(xi, li, event_ndims=3))(x, logits)
  chex.assert_shape(per_image, (64,))
  np.testing.assert_allclose(np.asarray(per_image), -784 * np.log(2.0), rtol=1e-6)


def test_diffusion_timesteps_must_index_the_leading_axes():
  s = diffusion.get_schedule("linear", 6)
  x = jnp.zeros((3, 4))
  with pytest.raises(
    ValueError, match=r"timesteps t \(4,\) must be a scalar or index the leading axes of x \(3, 4\)"
  ):
    diffusion.q_sample_from_noise(s, x, jnp.zeros(4, jnp.int32), x)
  with pytest.raises(ValueError, match=r"timesteps t \(\) must have the batch shape \(3,\)"):
    diffusion.vlb_term(s, x, x, jnp.int32(2), x, clip_denoised=False, event_ndims=1)
  with pytest.raises(TypeError, match="clip_denoised"):
    diffusion.p_mean_variance(s, x, jnp.zeros(3, jnp.int32), x)
