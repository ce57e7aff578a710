"""The config a run saved in its workdir, as a config file: `--config=<this file>:<workdir>`.

`experiments.evaluate` and `experiments.sample` add it themselves when `--config` is not
given, so a trained run is evaluated with exactly the config it was trained with, and
`--config.<key>=<value>` overrides still apply on top. Shared keys added to
`genjax/configs/default.py` since the run was saved (e.g. `train.profile_steps`) take their
defaults, and model keys added since (`genjax.train.workdir.ADDED_KEYS`: `model.dtype`,
`model.param_dtype`, `model.remat`, the guidance keys, ... where the family declares them) the value that does what
the run did, so an older run stays readable.
"""


def get_config(workdir: str | None = None):
  import ml_collections

  from genjax import models
  from genjax.configs.default import get_base_config
  from genjax.schema import fields
  from genjax.train.workdir import ADDED_KEYS, config_from_saved, flatten_config, load_saved_config

  if not workdir:
    raise ValueError("the saved-config file needs the workdir after a colon: _saved.py:<workdir>")
  saved = load_saved_config(workdir)
  if saved is None:
    raise ValueError(f"no config.json in {workdir}: nothing was trained there yet (or pass --config)")
  config = config_from_saved(saved)
  shared = flatten_config(get_base_config().to_dict())
  family = models.family_class(config.model.family)
  declared = {f"model.{k}" for k in fields(family.Model) + fields(models.Precision)}
  declared |= {f"sampling.{k}" for k in fields(family.Sampling)}
  shared.update({k: v for k, v in ADDED_KEYS.items() if k in declared})
  for key, value in shared.items():
    *parents, name = key.split(".")
    node = config
    for p in parents:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    if name not in node:
      node[name] = value
  return config
