"""Training core: state, compiled data-parallel steps, the loop, checkpoints, metrics.

Import submodules directly (`genjax.train.loop`, `genjax.train.checkpoint`, ...).
"""
