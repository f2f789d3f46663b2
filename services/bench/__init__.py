"""Benchmarks behind ``aigi bench`` and ``make bench``: measurement code, no printing.

* :mod:`services.bench.classify`: naive loop against the service path (batching,
  inference mode, dynamic int8) on the shipped detector and a full-size ViT-B/16.
* :mod:`services.bench.gradcam`: Grad-CAM cost against one forward, per model/device.
* :mod:`services.bench.queue`: the queue path (gateway → Redis → workers → Postgres)
  against the same stage functions called in one process.
* :mod:`services.bench.scaling`: jobs/s with 1 and 2 workers per stage.
* :mod:`services.bench.loadgen`: an open-loop HTTP load generator (``bench/load.py``).

Speed is measured here and reported, never asserted in tests.
"""
