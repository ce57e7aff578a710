"""Evaluation helpers: sample grids, PCA baseline, latent-space tools."""
