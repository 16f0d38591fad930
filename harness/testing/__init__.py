"""Real-component helpers for the harness's own tests and benchmarks."""
