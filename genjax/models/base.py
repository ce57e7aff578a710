"""The family contract: what every model family implements, and the registry that finds it.

A family is one object built from `(config, info)`: the whole config (it reads its own
sections, declared as frozen dataclasses, see `genjax.schema`) and the dataset's
`DatasetInfo`. It exposes pure functions of explicit parameters and keys. The trainer,
the launch scripts, the evaluators and the benchmarks call only this contract; they
never ask which family they hold.

Required (abstract):

* `init(key, batch) -> (params, model_state)`. `model_state` holds variables not
  trained by gradient (batch-norm statistics); it travels through the step as a
  returned value and is `{}` for families without any.
* `loss(params, model_state, batch, key) -> (scalar, (metrics, model_state))`: the
  training objective, differentiated w.r.t. `params` by the default `update`.
* `evaluate(params, model_state, batch, key, **options) -> {name: [B]}`: per-example
  metrics (averaged over a split by the caller); includes `best_metric`.
* `generate(params, model_state, key, num, labels=None)`: `num` fresh samples with the
  family's `sampling` settings, in data space: `uint8[num, H, W, C]` for image data,
  `float32[num, D]` for vector data (labels `int32[num]` for conditional models; by
  default they cycle through the classes).
* class attributes `Model` (the `model` section's schema) and `best_mode`, and
  `best_metric` (an `evaluate` key that picks the best checkpoint, lower or higher is
  better by `best_mode`).

Given (override where the family needs to):

* `Sampling`, `EvalOptions`, `OptimOptions`: schemas of the family's `sampling`
  section and of its extra keys in the `eval` and `optim` sections (`NoOptions`).
* `update(tx, params, opt_state, model_state, batch, key)`: one optimizer update from
  the gradient of `loss`; `make_optimizer(optim, num_steps)`: `genjax.optim`'s. The GAN
  overrides both (two players, k discriminator updates per step).
* `sample_grid(params, model_state, key, batch, num) -> Figure`: what the train loop
  draws periodically (default: `generate`).
* `figures() -> {kind: fn(params, model_state, key, source, options) -> Figure}`: the
  kinds `experiments.sample --kind=...` can draw (default: `samples`).
* `final_evaluation() -> Evaluation`: the options `experiments.evaluate` passes to
  `evaluate`, and how many examples it scores (default: all, no options).
* `reference_metrics(train, test) -> dict`: baselines that need no parameters (the
  autoencoder's PCA); `sample_statistics(params, model_state, samples) -> dict`:
  family-specific statistics of generated samples (the GAN's D vs D*).

Families return data, never pictures: a `Figure` holds images, points or a density
grid, and `genjax.eval.render` draws every kind with one set of rules.

Precision (every family): the `model` section's `dtype` (the compute dtype of the
networks: 'float32', 'bfloat16' or 'float16') and `param_dtype` ('float32'), parsed by
the base class into `self.precision` (`Precision`); `self.compute_dtype` and
`self.param_dtype` are the JAX dtypes to pass to the networks. Parameters, gradients,
optimizer state and EMA stay float32; a family casts its networks' outputs to float32
(`to_float32`) before any loss, likelihood or log-determinant, so every objective is
accumulated in float32.

A family registers itself with `@register` in its module `genjax/models/<name>.py`;
`genjax.models.get_family(config, info)` finds it by `config.model.family`.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax import checks, optim
from genjax.schema import ConfigError, parse, require

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]

#: Points drawn for a picture of vector samples (`sample_grid` and the `samples` figure of toys).
PICTURE_POINTS = 2000


#: The compute dtypes `model.dtype` may name.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Precision:
  """The `model` section's keys every family shares: the networks' compute and parameter dtypes.

  `dtype` is what matrix products, convolutions and activations run in; `param_dtype` is
  what parameters (and so gradients, optimizer state and EMA) are stored in: float32 only,
  as mixed precision keeps the master weights in float32.
  """

  dtype: Literal["float32", "bfloat16", "float16"]
  param_dtype: Literal["float32"]


def to_float32(tree: Any) -> Any:
  """Every floating-point leaf of `tree` as float32 (network outputs before a loss or a likelihood);
  float32 leaves are returned as they are."""

  def cast(x):
    return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.float32 else x

  return jax.tree.map(cast, tree)


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """A config section (or part of one) with no keys."""


@flax.struct.dataclass
class Figure:
  """A picture's data as a family returns it; `genjax.eval.render.render` draws it.

  kind 'images': `data` uint8[N, H, W, C], tiled `ncol` to a row (0 = a square grid).
  kind 'points': `data` float32[N, D] (D = 1: a histogram, D = 2: a scatter picture),
    optionally coloured by `labels` int32[N].
  kind 'pairs': `data` uint8[N, 2, H, W, C]: inputs and what the model made of them
    (reconstructions, completions), drawn with each input directly above its output.
  kind 'density': `data` float32[S, S], the log-density at the cell centres of the
    square `[extent[0], extent[1]]^2`; row i is the i-th y value, ascending.
  A Figure is a pytree (its arrays are leaves), so it can be returned from `jax.jit`.
  """

  data: jax.Array
  labels: jax.Array | None = None
  kind: str = flax.struct.field(pytree_node=False, default="images")
  ncol: int = flax.struct.field(pytree_node=False, default=0)
  extent: tuple[float, float] | None = flax.struct.field(pytree_node=False, default=None)

  @classmethod
  def images(cls, images: jax.Array, ncol: int = 0) -> Figure:
    return cls(data=images, kind="images", ncol=ncol)

  @classmethod
  def pairs(cls, inputs: jax.Array, outputs: jax.Array) -> Figure:
    """`inputs` and `outputs` `uint8[N, H, W, C]`, each input to be drawn above its output."""
    return cls(data=jnp.stack([jnp.asarray(inputs), jnp.asarray(outputs)], axis=1), kind="pairs")

  @classmethod
  def points(cls, points: jax.Array, labels: jax.Array | None = None) -> Figure:
    return cls(data=points, labels=labels, kind="points")

  @classmethod
  def density(cls, log_p: jax.Array, extent: tuple[float, float]) -> Figure:
    return cls(data=log_p, kind="density", extent=(float(extent[0]), float(extent[1])))


@dataclasses.dataclass(frozen=True)
class FigureOptions:
  """What `experiments.sample` asks of a figure.

  `label` None means every class in turn (conditional models); `spherical` picks
  spherical interpolation of codes; `extent` is the interval or square that pictures of
  vector data cover (`genjax.eval.render.extent` of the data); `seed` drives host-side
  choices (which test examples a figure shows). Sampling settings (temperature,
  guidance, sampler) are the family's `sampling` config section.
  """

  num: int = 64
  label: int | None = None
  spherical: bool = False
  extent: tuple[float, float] = (-4.0, 4.0)
  seed: int = 0

  def __post_init__(self):
    require(self.num > 0, "num", self.num, "a positive integer")
    require(self.extent[1] > self.extent[0], "extent", self.extent, "lo < hi")


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """How `experiments.evaluate` scores a checkpoint.

  `options` are passed to `evaluate(..., **options)`; `max_examples` > 0 scores only
  that many examples of the split (a fixed, class-balanced selection), for bounds that
  cost many network calls per example; `batch_size` > 0 overrides `eval.batch_size`.
  """

  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  max_examples: int = 0
  batch_size: int = 0


FigureFn = Callable[[Any, Any, jax.Array, Any, FigureOptions], Figure]


class Family(abc.ABC):
  """The contract between a model family and everything else (see the module docstring)."""

  #: The name `config.model.family` gives: the family's module name, set by `register`.
  name: ClassVar[str] = ""
  #: Schemas of the config the family reads.
  Model: ClassVar[type]
  Sampling: ClassVar[type] = NoOptions
  EvalOptions: ClassVar[type] = NoOptions
  OptimOptions: ClassVar[type] = NoOptions
  #: The `evaluate` key that picks the best checkpoint, and whether lower ('min') is better.
  best_metric: str
  best_mode: Literal["min", "max"] = "min"
  #: Whether the model takes class labels (`batch['label']`, `generate(..., labels)`).
  conditional: bool = False

  def __init__(self, config: Any, info: Any):
    """Parses the family's config sections; subclasses then build their networks."""
    self.info = info
    precision = _field_names(Precision)
    self.model_config = parse(self.Model, config.model, "model", others=("family",) + precision)
    self.precision = parse(Precision, {k: v for k, v in config.model.items() if k in precision}, "model")
    self.compute_dtype = jnp.dtype(self.precision.dtype)
    self.param_dtype = jnp.dtype(self.precision.param_dtype)
    self.sampling_config = parse(self.Sampling, config.sampling, "sampling")
    self.eval_config = parse(self.EvalOptions, _pick(config.eval, self.EvalOptions), "eval")
    self.optim_config = parse(optim.OptimConfig, config.optim, "optim", others=_field_names(self.OptimOptions))
    self.optim_options = parse(self.OptimOptions, _pick(config.optim, self.OptimOptions), "optim")

  @classmethod
  def conv_widths(cls, model: Any) -> list[int]:
    """The channel widths of the convolutions this family's networks run on images, from the raw
    `model` config section (before JAX starts: `genjax.xla_flags` picks XLA:CPU flags from the
    widest). Default: none."""
    return []

  @classmethod
  def config_keys(cls, section: str) -> tuple[str, ...]:
    """The keys this family reads from a shared section ('eval' or 'optim') beyond the base ones."""
    schema = {"eval": cls.EvalOptions, "optim": cls.OptimOptions}[section]
    return _field_names(schema)

  # ------------------------------------------------------------------ data

  @property
  def images(self) -> bool:
    """Whether the family models image data (`uint8[B, H, W, C]`) rather than vectors (`float32[B, D]`)."""
    return self.info.kind == "image"

  @property
  def shape(self) -> tuple[int, ...]:
    """The per-example data shape: `(H, W, C)` or `(D,)`."""
    return tuple(self.info.shape)

  @property
  def num_classes(self) -> int:
    return int(self.info.num_classes)

  def check_batch(self, batch: Batch, need_labels: bool = False) -> None:
    """Raises a one-line ValueError unless `batch` fits the dataset: key, shape and dtype
    (at trace time), and for concrete arrays values (labels in range, finite vectors)."""
    key = "image" if self.images else "x"
    if not isinstance(batch, Mapping) or key not in batch:
      have = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
      raise ValueError(f"the batch needs {key!r} for dataset {self.info.name!r}; got {have}")
    x = batch[key]
    want = np.uint8 if self.images else np.float32
    if x.dtype != want:
      raise ValueError(f"batch[{key!r}] has dtype {x.dtype}; {self.info.name!r} data are {np.dtype(want).name}")
    if tuple(x.shape[1:]) != self.shape or x.ndim != len(self.shape) + 1:
      raise ValueError(
        f"batch[{key!r}] has shape {tuple(x.shape)}; {self.info.name!r} data need "
        f"[B, {', '.join(map(str, self.shape))}]"
      )
    if not self.images:
      checks.check_finite(f"batch[{key!r}]", x)
    if need_labels:
      if "label" not in batch:
        raise ValueError(f"this conditional model needs batch['label'] int32[B]; got keys {sorted(batch)}")
      label = batch["label"]
      if label.shape != (x.shape[0],) or not jnp.issubdtype(label.dtype, jnp.integer):
        raise ValueError(f"batch['label'] must be int32[{x.shape[0]}], got {label.dtype}{tuple(label.shape)}")
      checks.check_range("batch['label']", label, 0, self.num_classes - 1)

  def default_labels(self, num: int, labels: jax.Array | None) -> jax.Array:
    """`labels` as int32[num], or the classes in turn (0, 1, ..., K-1, 0, ...) when None."""
    if labels is None:
      return jnp.arange(num, dtype=jnp.int32) % max(self.num_classes, 1)
    labels = jnp.asarray(labels, jnp.int32)
    if labels.shape != (num,):
      raise ValueError(f"labels must be int32[{num}], got shape {labels.shape}")
    checks.check_range("labels", labels, 0, self.num_classes - 1)
    return labels

  # ------------------------------------------------------------------ the contract

  @abc.abstractmethod
  def init(self, key: jax.Array, batch: Batch) -> tuple[Any, Any]:
    """`(params, model_state)` for inputs shaped like `batch`."""

  @abc.abstractmethod
  def loss(
    self, params: Any, model_state: Any, batch: Batch, key: jax.Array
  ) -> tuple[jax.Array, tuple[Metrics, Any]]:
    """The training objective: `(scalar loss, (scalar metrics, new model_state))`."""

  @abc.abstractmethod
  def evaluate(self, params: Any, model_state: Any, batch: Batch, key: jax.Array, **options: Any) -> Metrics:
    """Per-example metrics, each `[B]`, including `best_metric`."""

  @abc.abstractmethod
  def generate(
    self, params: Any, model_state: Any, key: jax.Array, num: int, labels: jax.Array | None = None
  ) -> jax.Array:
    """`num` fresh samples: `uint8[num, H, W, C]` images or `float32[num, D]` vectors."""

  # ------------------------------------------------------------------ training (defaults)

  def batch_multiple(self) -> int:
    """The global batch must be a multiple of this times the device count (the GAN: its k D minibatches)."""
    return 1

  def make_optimizer(self, num_steps: int) -> optax.GradientTransformation:
    """The optimizer of the `optim` section, its schedule over `num_steps` updates."""
    return optim.make_optimizer(self.optim_config, num_steps)

  def update(
    self,
    tx: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    model_state: Any,
    batch: Batch,
    key: jax.Array,
  ) -> tuple[Any, Any, Any, Metrics]:
    """One optimizer update: `(params, opt_state, model_state, metrics)` after a gradient step on `loss`.

    The metrics are the loss's plus `loss` and `grad_norm` (the global gradient norm).
    """
    (loss, (metrics, model_state)), grads = jax.value_and_grad(self.loss, has_aux=True)(
      params, model_state, batch, key
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, model_state, dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))

  # ------------------------------------------------------------------ pictures (defaults)

  def sample_grid(self, params: Any, model_state: Any, key: jax.Array, batch: Batch, num: int) -> Figure:
    """The train loop's periodic picture: `num` samples (vector data: `PICTURE_POINTS` of them).

    `batch` holds `num` test examples (a class-balanced choice) for families that show
    inputs beside their outputs.
    """
    if self.images:
      return Figure.images(self.generate(params, model_state, key, num))
    return Figure.points(self.generate(params, model_state, key, PICTURE_POINTS))

  def figures(self) -> dict[str, FigureFn]:
    """The kinds of `experiments.sample --kind=...`: name -> `fn(params, model_state, key, source, options)`."""
    return {"samples": self.figure_samples}

  def figure_samples(
    self, params: Any, model_state: Any, key: jax.Array, source: Any, options: FigureOptions
  ) -> Figure:
    """`options.num` samples (vector data: a picture of at least `PICTURE_POINTS`); a
    conditional model draws class `options.label`, or one class per column."""
    del source
    num = options.num if self.images else max(options.num, PICTURE_POINTS)
    labels = None if options.label is None else jnp.full((num,), options.label, jnp.int32)
    # one compiled program: op by op, RealNVP's tiny preset compiled 160 one-op programs (6.2 s of 13)
    x = jax.jit(self.generate, static_argnames="num")(params, model_state, key, num, labels=labels)
    if not self.images:
      return Figure.points(x)
    cycle = self.num_classes if self.conditional and options.label is None else 0
    return Figure.images(x, ncol=cycle)

  # ------------------------------------------------------------------ evaluation (defaults)

  def final_evaluation(self) -> Evaluation:
    """What `experiments.evaluate` computes (default: `evaluate` without options on the whole split)."""
    return Evaluation()

  def reference_metrics(self, train: Any, test: Any) -> dict[str, float]:
    """Baselines computed from the data alone, reported beside the model's metrics (default: none)."""
    del train, test
    return {}

  def sample_statistics(self, params: Any, model_state: Any, samples: np.ndarray) -> dict[str, float]:
    """Family-specific statistics of `generate`'s samples, beside the generic ones (default: none)."""
    del params, model_state, samples
    return {}


def _field_names(schema: type) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(schema))


def _pick(section: Any, schema: type) -> dict:
  """The keys of `section` that `schema` declares (a missing one is reported by `parse`)."""
  names = set(_field_names(schema))
  return {k: v for k, v in section.items() if k in names}


# ---------------------------------------------------------------------- the registry

_REGISTRY: dict[str, type[Family]] = {}


def register(cls: type[Family]) -> type[Family]:
  """Class decorator: registers a family under its module's name (`genjax/models/<name>.py`)."""
  name = cls.__module__.rsplit(".", 1)[-1]
  if name in _REGISTRY and _REGISTRY[name] is not cls:
    raise ValueError(
      f"two families register the name {name!r}: {_REGISTRY[name].__qualname__} and {cls.__qualname__}"
    )
  cls.name = name
  _REGISTRY[name] = cls
  return cls


def family_class(name: str) -> type[Family]:
  """The family registered as `name`, importing `genjax.models.<name>` on first use."""
  if name not in _REGISTRY and isinstance(name, str) and name.isidentifier():
    try:
      importlib.import_module(f"genjax.models.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"genjax.models.{name}":
        raise
  if name not in _REGISTRY:
    raise ConfigError(
      "model.family", f"={name!r} is not a registered family; expected one of {', '.join(registered())}"
    )
  return _REGISTRY[name]


def registered() -> tuple[str, ...]:
  """Every family's name: imports each module of `genjax.models` once, so each registers itself."""
  import genjax.models as package

  for module in pkgutil.iter_modules(package.__path__):
    if module.name not in ("base",) and not module.name.startswith("_"):
      importlib.import_module(f"genjax.models.{module.name}")
  return tuple(sorted(_REGISTRY))
