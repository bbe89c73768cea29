"""Upstream models: one module per paper, each registering its class with
``@register_upstream(name)``; the registry imports them on first lookup."""

from speechssl.upstream.base import (
    Upstream,
    UpstreamOutput,
    build_upstream,
    check_upstream,
    register_upstream,
    registered_upstreams,
    upstream_class,
)

__all__ = ["Upstream", "UpstreamOutput", "build_upstream", "check_upstream",
           "register_upstream", "registered_upstreams", "upstream_class"]
