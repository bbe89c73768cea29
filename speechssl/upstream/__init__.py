"""Upstream models. Importing this package registers every built-in upstream."""

from speechssl.upstream import (  # noqa: F401
    apc,
    baselines,
    hf,
    mockingjay,
    npc,
    torchaudio_models,
    vq_apc,
    vqvae,
)
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
