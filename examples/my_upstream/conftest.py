"""Puts this directory on sys.path so `pytest examples/my_upstream` runs without installing."""
