"""``python -m bench``: the benchmark commands (:mod:`bench.cli`)."""

from bench.cli import main

main()
