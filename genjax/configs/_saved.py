"""The config a run saved in its workdir, as a config file: `--config=<this file>:<workdir>`.

`experiments.evaluate` and `experiments.sample` add it themselves when `--config` is not
given, so a trained run is evaluated with exactly the config it was trained with, and
`--config.<key>=<value>` overrides still apply on top.
"""


def get_config(workdir: str | None = None):
  from genjax.train.workdir import config_from_saved, load_saved_config

  if not workdir:
    raise ValueError("the saved-config file needs the workdir after a colon: _saved.py:<workdir>")
  saved = load_saved_config(workdir)
  if saved is None:
    raise ValueError(f"no config.json in {workdir}: nothing was trained there yet (or pass --config)")
  return config_from_saved(saved)
