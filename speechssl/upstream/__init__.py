"""Upstream models. Importing this package registers every built-in upstream."""

from speechssl.upstream import (  # noqa: F401
    apc,
    baselines,
    bert,
    cpc,
    data2vec,
    gpt,
    hf,
    hubert,
    mockingjay,
    npc,
    torchaudio_models,
    vq_apc,
    vq_wav2vec,
    vqvae,
    wav2vec,
    wav2vec2,
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
