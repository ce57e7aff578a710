"""The config a run saved in its workdir, as a config file: `--config=<this file>:<workdir>`.

`experiments.evaluate` and `experiments.sample` add it themselves when `--config` is not
given, so a trained run is evaluated with exactly the config it was trained with, and
`--config.<key>=<value>` overrides still apply on top. Shared keys added to
`genjax/configs/default.py` since the run was saved (e.g. `train.profile_steps`) take their
defaults, so an older run stays readable.
"""


def get_config(workdir: str | None = None):
  import ml_collections

  from genjax.configs.default import get_base_config
  from genjax.train.workdir import config_from_saved, flatten_config, load_saved_config

  if not workdir:
    raise ValueError("the saved-config file needs the workdir after a colon: _saved.py:<workdir>")
  saved = load_saved_config(workdir)
  if saved is None:
    raise ValueError(f"no config.json in {workdir}: nothing was trained there yet (or pass --config)")
  config = config_from_saved(saved)
  for key, value in flatten_config(get_base_config().to_dict()).items():
    *parents, name = key.split(".")
    node = config
    for p in parents:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    if name not in node:
      node[name] = value
  return config
