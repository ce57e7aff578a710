"""Step-throughput benchmark suite."""
