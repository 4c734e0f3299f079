"""GPU benchmark of the inference server (not a test); results go to bench/RESULTS.md."""
