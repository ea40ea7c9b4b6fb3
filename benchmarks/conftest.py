"""Benchmarks run with the package's defaults (compiled torch halves on CPU), not the test suite's setup."""
