"""Benchmarks and load generation, run from the repository root; never installed with
the product (``pyproject.toml`` packages ``common`` and ``services`` only) nor copied
into its images. Results go to ``bench/results/``; the history is ``docs/benchmarks.md``.

* ``python -m bench all|classify|gradcam|queue|scaling|load`` (``make bench``,
  ``make bench-load``): :mod:`bench.cli`.
* :mod:`bench.classify`: naive loop against the service path (batching, inference
  mode, dynamic int8) on the shipped detector and a full-size ViT-B/16.
* :mod:`bench.gradcam`, :mod:`bench.gradcam_timing`: Grad-CAM cost against one forward.
* :mod:`bench.photo`: one 12 MP photograph through the service path.
* :mod:`bench.queue`: the queue path (gateway → Redis → workers → Postgres) against the
  same stage functions called in one process.
* :mod:`bench.scaling`: jobs/s with 1 and 2 workers per stage.
* :mod:`bench.loadgen`: an open-loop HTTP load generator (``python -m bench.load``).
* ``python -m bench.gateway_cpu``, ``python -m bench.edge_overhead``: the gateway's CPU
  per submission, the edge middleware's cost per request.

Speed is measured here and reported, never asserted in tests.
"""
