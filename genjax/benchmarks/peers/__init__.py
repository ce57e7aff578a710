"""PyTorch peer timing scripts (run with a Python that has torch; never imported by genjax or its tests)."""
