"""genjax: deep generative models as pure JAX/Flax functions.

Layers, bottom up: `genjax.losses` (pure array math), `genjax.nn` (Flax Linen
blocks), `genjax.models` (one family per module), `genjax.train` (state, step,
loop, checkpoints), `genjax.data` (input), `genjax.eval` (bounds, grids, PCA).
Importing `genjax` imports nothing heavy; import the submodule you need.
"""

__version__ = "0.1.0"
