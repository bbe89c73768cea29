"""A worked example of a speechssl plug-in upstream (docs/plug-in.md)."""

from my_upstream.model import TinyConv

__all__ = ["TinyConv"]
