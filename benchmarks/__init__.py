"""Timed comparisons, run as `python -m benchmarks.<name>`; never part of the tests."""
