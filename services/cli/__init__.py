"""The ``aigi`` command line."""
