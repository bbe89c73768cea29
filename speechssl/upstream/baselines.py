"""Hand-crafted feature baselines: fbank, mfcc, spectrogram (Kaldi-compliant, utterance CMVN)."""

from __future__ import annotations

from torch import Tensor

from speechssl.nn.frontend import HOP_SAMPLES, KaldiFrontend
from speechssl.upstream.base import Upstream, UpstreamOutput, register_upstream


class _FeatureBaseline(Upstream):
    """One 'layer': the features themselves. Nothing to pre-train."""

    tuning_modes = ("frozen",)  # no parameters

    kind = "fbank"
    downsample_rate = HOP_SAMPLES

    def __init__(self, num_mel_bins: int = 80, num_ceps: int = 13, deltas: bool = False,
                 normalize: bool = False):
        super().__init__()
        self.frontend = KaldiFrontend(self.kind, num_mel_bins=num_mel_bins, num_ceps=num_ceps,
                                      deltas=deltas, normalize=normalize)

    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        feats, out_lengths = self.frontend(wavs, lengths)
        return UpstreamOutput(hidden_states=[feats], lengths=out_lengths)


@register_upstream("fbank")
class FBank(_FeatureBaseline):
    """80-d log-mel filterbank (the SUPERB baseline)."""

    kind = "fbank"

    def __init__(self, num_mel_bins: int = 80, deltas: bool = False, normalize: bool = False):
        super().__init__(num_mel_bins=num_mel_bins, deltas=deltas, normalize=normalize)


@register_upstream("mfcc")
class MFCC(_FeatureBaseline):
    """13 MFCCs (39 with deltas=true)."""

    kind = "mfcc"

    def __init__(self, num_ceps: int = 13, deltas: bool = False, normalize: bool = False):
        super().__init__(num_ceps=num_ceps, deltas=deltas, normalize=normalize)


@register_upstream("spectrogram")
class Spectrogram(_FeatureBaseline):
    """257-bin log power spectrogram."""

    kind = "spectrogram"

    def __init__(self, normalize: bool = False):
        super().__init__(normalize=normalize)
