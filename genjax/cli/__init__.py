"""Launch scripts: train, evaluate, sample (absl flags + ml-collections config files)."""
