"""Benchmarks run on demand (`make bench`), print their figures, and assert targets."""
