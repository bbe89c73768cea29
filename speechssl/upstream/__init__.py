"""Upstream models. Importing this package registers every built-in upstream."""

from speechssl.upstream import apc, baselines, hf, torchaudio_models  # noqa: F401
from speechssl.upstream.base import (
    Upstream,
    UpstreamOutput,
    build_upstream,
    register_upstream,
    registered_upstreams,
    upstream_class,
)

__all__ = ["Upstream", "UpstreamOutput", "build_upstream", "register_upstream",
           "registered_upstreams", "upstream_class"]
