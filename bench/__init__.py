"""Benchmark entry points run from the repository root (``python -m bench.load``) and
their results (``bench/results/``). The measurement code is :mod:`services.bench`."""
