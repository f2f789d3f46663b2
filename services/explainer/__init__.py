"""Explanation worker: a JSON explanation per artifact, grounded in measured evidence."""
