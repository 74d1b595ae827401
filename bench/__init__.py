"""The benchmark suite: `python3 bench/run.py` (see docs/benchmarks.md)."""
