"""The ``precompute`` command line."""
