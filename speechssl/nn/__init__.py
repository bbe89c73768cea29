"""Layers shared by several upstreams and probes."""
