"""Converts pytorch-fid's FID Inception-v3 weights (`pt_inception-2015-12-05-*.pth`, a torch
state dict) into the `.npz` that `genjax.eval.inception.load_weights` reads.

  python -m scripts.convert_inception_weights --pth=pt_inception-2015-12-05-6726825d.pth \
      --npz=fid_inception.npz

Nothing is downloaded: obtain the `.pth` yourself (pytorch-fid's release assets). Needs
`torch` only to unpickle the file (imported lazily). Conv weights are transposed OIHW -> HWIO,
batch norm `weight/bias/running_mean/running_var` become `bn/scale`, `bn/bias`, `bn/mean`,
`bn/var`; the 1008-way fc head and `num_batches_tracked` are dropped; every key and shape is
checked against the Flax module before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from absl import app, flags

from genjax.eval import inception

PTH = flags.DEFINE_string("pth", None, "pytorch-fid's pt_inception-2015-12-05-*.pth (a torch state dict).")
NPZ = flags.DEFINE_string("npz", None, "Where to write the .npz for eval.inception_weights.")


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of the torch state dict at `path` as float32 numpy arrays (needs torch)."""
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      "reading a .pth needs PyTorch (pip install torch, CPU build is enough) in the environment "
      "that runs this converter; genjax itself never needs it"
    ) from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, Mapping):
    raise TypeError(f"{path!r} holds a {type(state).__name__}, expected a state dict (name -> tensor)")
  return {k: v.detach().cpu().float().numpy() for k, v in state.items() if hasattr(v, "detach")}


def convert(state_dict: Mapping[str, np.ndarray], output: str) -> dict[str, np.ndarray]:
  """Maps `state_dict` (numpy, torch names and layouts) to the Flax `.npz` at `output`; returns it."""
  flat = inception.from_torch_state_dict(state_dict)
  with open(output, "wb") as f:
    np.savez(f, **flat)
  return flat


def main(argv):
  del argv
  if not PTH.value or not NPZ.value:
    raise app.UsageError("give --pth=<pt_inception-2015-12-05-*.pth> and --npz=<.npz>")
  flat = convert(load_torch_state_dict(PTH.value), NPZ.value)
  print(
    f"wrote {NPZ.value}: {len(flat)} arrays, "
    f"{sum(v.size for k, v in flat.items() if k.startswith('params/'))} parameters"
  )


def entry() -> None:
  """The `genjax-convert-inception` console script."""
  app.run(main)


if __name__ == "__main__":
  entry()
