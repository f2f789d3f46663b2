"""The REAL/FAKE detector: model, checkpoints, inference, training and evaluation.

Nothing in this package imports Celery or FastAPI: the workers and the command line
both build on it.
"""
