"""Model families. `get_family(model_config, info)` builds the one a config names."""

from __future__ import annotations

from typing import Any

from genjax.models.base import Family

FAMILIES = ("autoencoder", "pixelcnn", "gan", "realnvp", "ddpm")


def get_family(model_config: Any, info: Any) -> Family:
  """Builds the family named by `model_config.family` for a dataset described by `info`."""
  name = model_config.family
  if name == "autoencoder":
    from genjax.models.autoencoder import AutoencoderFamily

    return AutoencoderFamily(model_config, info)
  if name == "pixelcnn":
    from genjax.models.pixelcnn import PixelCNNFamily

    return PixelCNNFamily(model_config, info)
  if name == "realnvp":
    from genjax.models.realnvp import RealNVPFamily

    return RealNVPFamily(model_config, info)
  if name == "gan":
    from genjax.models.gan import GANFamily

    return GANFamily(model_config, info)
  if name == "ddpm":
    from genjax.models.ddpm import DDPMFamily

    return DDPMFamily(model_config, info)
  raise ValueError(f"unknown model family {name!r}; expected one of {FAMILIES}")


__all__ = ["FAMILIES", "Family", "get_family"]
