"""Task 1 worker: the REAL/FAKE verdict."""
