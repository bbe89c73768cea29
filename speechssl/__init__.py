"""speechssl: a SUPERB-style benchmark for self-supervised speech and text representations."""

__version__ = "0.1.0"
