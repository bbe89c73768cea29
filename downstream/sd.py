"""SD: two-speaker diarization as frame-level multi-label classification (SUPERB, Yang et al.
2021; permutation-invariant training of EEND, Fujita et al. 2019); DER with 0 s collar."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import median_filter
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import Task, random_windows, register_task
from speechssl import metrics
from speechssl.atomic import atomic_write_text
from speechssl.errors import ConfigError, ManifestError
from speechssl.nn.masking import valid_mask
from speechssl.nn.rnn import LSTM


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def frame_labels(segments: list[dict], speakers: list[str], num_frames: int,
                 frame_shift: float) -> np.ndarray:
    """Speaker activity per frame: a frame is active for a speaker when its centre lies in
    one of the speaker's [start, end) segments. -> (num_frames, len(speakers)) bool."""
    centre = (np.arange(num_frames) + 0.5) * frame_shift
    out = np.zeros((num_frames, len(speakers)), dtype=bool)
    col = {s: i for i, s in enumerate(speakers)}
    for seg in segments:
        out[:, col[seg["speaker"]]] |= (centre >= seg["start"]) & (centre < seg["end"])
    return out


def pit_bce(logits: Tensor, labels: Tensor, lengths: Tensor) -> Tensor:
    """Permutation-invariant binary cross-entropy: for each recording the speaker order
    of ``labels`` that gives the lowest mean BCE over its valid frames, averaged over the
    batch. (B, T, S) logits, (B, T, S) 0/1 labels, (B,) lengths -> scalar."""
    B, T, S = logits.shape
    mask = valid_mask(lengths, T).unsqueeze(-1)
    per_perm = []
    for perm in itertools.permutations(range(S)):
        bce = F.binary_cross_entropy_with_logits(logits, labels[..., list(perm)],
                                                 reduction="none")
        per_perm.append((bce * mask).sum((1, 2)) / (lengths.clamp(min=1) * S))
    return torch.stack(per_perm, dim=1).min(dim=1).values.mean()


def postprocess(posteriors: np.ndarray, threshold: float, median: int) -> np.ndarray:
    """Threshold the (T, S) speaker posteriors, then median-filter each speaker's
    activity over ``median`` frames (odd; 1 = none). -> (T, S) bool."""
    active = posteriors > threshold
    if median > 1:
        active = median_filter(active.astype(np.uint8), size=(median, 1), mode="nearest") > 0
    return active


def activity_segments(active: np.ndarray, frame_shift: float) -> list[tuple[float, float]]:
    """Runs of active frames of one speaker, (T,) bool -> [(start s, duration s)]."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(s * frame_shift, (e - s) * frame_shift) for s, e in zip(starts, ends, strict=True)]


def rttm_line(file_id: str, start: float, duration: float, speaker: str) -> str:
    return f"SPEAKER {file_id} 1 {start:.3f} {duration:.3f} <NA> <NA> {speaker} <NA> <NA>\n"


class FrameLSTM(nn.Module):
    """One LSTM layer and a linear layer: (B, T, D) -> (B, T, num_speakers) logits."""

    def __init__(self, feature_dim: int, hidden_dim: int, num_speakers: int):
        super().__init__()
        self.lstm = LSTM(feature_dim, hidden_dim, num_layers=1, batch_first=True)
        self.out = nn.Linear(hidden_dim, num_speakers)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        # Unidirectional, so the padding after a sequence never reaches its valid frames: no
        # packing needed (a packed LSTM's backward is ~80x slower on CPU at T = 1000).
        return self.out(self.lstm(x)[0])


@register_task("sd")
class SpeakerDiarization(Task):
    """LibriMix-style diarization of two-speaker mixtures (frame posteriors per speaker).

    The decision threshold and median-filter length are chosen on dev (lowest DER), then
    applied to test; the test hypotheses and references are written as RTTM files.
    Training reads random ``train_chunk_seconds`` windows of longer recordings (s3prl's
    fixed-length chunks; the synthesized mixtures, about 4.5 s, are shorter than 20 s).
    """

    metric = "der"
    higher_is_better = False
    subset = "sd"

    def __init__(self, num_speakers: int = 2, hidden_dim: int = 512,
                 thresholds: tuple = (0.3, 0.4, 0.5, 0.6, 0.7),
                 median_seconds: tuple = (0.0, 0.11, 0.21, 0.51),
                 train_chunk_seconds: float | None = 20.0):
        if not all(_is_number(v) and int(v) == v >= 1 for v in (num_speakers, hidden_dim)):
            raise ConfigError(f"downstream.num_speakers and downstream.hidden_dim must be "
                              f"positive integers, got {num_speakers!r} and {hidden_dim!r}")
        thresholds, median_seconds = list(thresholds), list(median_seconds)
        if not all(_is_number(v) for v in thresholds + median_seconds):
            raise ConfigError(f"downstream.thresholds and downstream.median_seconds must be "
                              f"lists of numbers, got {thresholds!r} and {median_seconds!r}")
        if not thresholds or not all(0 < t < 1 for t in thresholds):
            raise ConfigError(f"downstream.thresholds must be a non-empty list of values in "
                              f"(0, 1), got {thresholds!r}")
        if not median_seconds or not all(m >= 0 for m in median_seconds):
            raise ConfigError(f"downstream.median_seconds must be a non-empty list of "
                              f"values >= 0, got {median_seconds!r}")
        if train_chunk_seconds is not None and not (_is_number(train_chunk_seconds)
                                                    and train_chunk_seconds > 0):
            raise ConfigError(f"downstream.train_chunk_seconds must be a number > 0 or null "
                              f"(whole recordings), got {train_chunk_seconds!r}")
        self.train_chunk_seconds = train_chunk_seconds
        self.num_speakers, self.hidden_dim = int(num_speakers), int(hidden_dim)
        self.thresholds, self.median_seconds = thresholds, median_seconds
        self.post = (0.5, 0.0)  # (threshold, median seconds) until tuned on dev

    def splits(self, corpus) -> dict[str, list[dict]]:
        return {s: corpus.items(self.subset, s) for s in ("train", "dev", "test")}

    def build_probe(self, feature_dim: int) -> nn.Module:
        return FrameLSTM(feature_dim, self.hidden_dim, self.num_speakers)

    def reference(self, item: dict) -> list[dict]:
        """The item's segments, checked: [{start, end, speaker}] with at most
        ``num_speakers`` distinct speakers."""
        where = f"{item.get('_manifest')}:{item.get('_line')}"
        segments = item.get("segments")
        if not isinstance(segments, list):
            raise ManifestError(f"{where}: no 'segments' list")
        for seg in segments:
            if not (isinstance(seg, dict) and isinstance(seg.get("speaker"), str)
                    and all(isinstance(seg.get(k), int | float) for k in ("start", "end"))
                    and seg["start"] < seg["end"]):
                raise ManifestError(f"{where}: bad segment {seg!r}; expected "
                                    f"{{'start': s, 'end': s > start, 'speaker': name}}")
        if len({seg["speaker"] for seg in segments}) > self.num_speakers:
            raise ManifestError(f"{where}: more than {self.num_speakers} speakers "
                                f"(downstream.num_speakers)")
        return segments

    def labels(self, item: dict, num_frames: int) -> np.ndarray:
        """(num_frames, num_speakers) bool activity at the upstream's frame rate."""
        segments = self.reference(item)
        speakers = sorted({seg["speaker"] for seg in segments})
        speakers += [f"<none{i}>" for i in range(self.num_speakers - len(speakers))]
        return frame_labels(segments, speakers, num_frames, self.frame_shift)

    def loss(self, probe, features, lengths, batch) -> Tensor:
        """PIT BCE; in training on a random ``train_chunk_seconds`` window of each recording
        (s3prl's 2000 frames of 10 ms), on whole recordings otherwise."""
        T = features.shape[1]
        labels = torch.from_numpy(np.stack([self.labels(it, T) for it in batch["items"]]))
        labels = labels.to(features)
        if probe.training and self.train_chunk_seconds is not None:
            size = max(1, round(self.train_chunk_seconds / self.frame_shift))
            features, labels, lengths = random_windows(features, labels, lengths, size)
        return pit_bce(probe(features, lengths), labels, lengths)

    def predict(self, probe, features, lengths, batch) -> list[np.ndarray]:
        post = torch.sigmoid(probe(features, lengths).float()).cpu().numpy()
        return [p[:n] for p, n in zip(post, lengths.tolist(), strict=True)]

    def median_frames(self, seconds: float) -> int:
        """An odd number of frames spanning about ``seconds``."""
        return 2 * int(round(seconds / self.frame_shift / 2)) + 1

    def evaluate_split(self, split, predictions, items, out_dir=None) -> dict[str, float]:
        """DER of the (T, S) posteriors; on dev the post-processing is tuned first."""
        refs = [self.labels(it, len(p)) for it, p in zip(items, predictions, strict=True)]

        def der_at(threshold: float, seconds: float) -> float:
            median = self.median_frames(seconds)
            return metrics.der(refs, [postprocess(p, threshold, median) for p in predictions])

        if split == "dev":
            grid = [(der_at(t, m), t, m) for t in self.thresholds for m in self.median_seconds]
            _, *best = min(grid)
            self.post = tuple(best)
        threshold, seconds = self.post
        hyps = [postprocess(p, threshold, self.median_frames(seconds)) for p in predictions]
        if out_dir is not None:
            self.write_rttm(Path(out_dir), split, items, hyps)
        return {"der": metrics.der(refs, hyps), "threshold": threshold, "median_s": seconds}

    def write_rttm(self, out_dir: Path, split: str, items: list[dict],
                   hyps: list[np.ndarray]) -> None:
        """``sd_<split>_hyp.rttm`` (hypothesis speakers named <id>_s<k>) and
        ``sd_<split>_ref.rttm`` (the manifest segments)."""
        hyp_lines, ref_lines = [], []
        for it, act in zip(items, hyps, strict=True):
            for k in range(act.shape[1]):
                for start, dur in activity_segments(act[:, k], self.frame_shift):
                    hyp_lines.append(rttm_line(it["id"], start, dur, f"{it['id']}_s{k}"))
            for seg in self.reference(it):
                ref_lines.append(rttm_line(it["id"], seg["start"], seg["end"] - seg["start"],
                                           seg["speaker"]))
        atomic_write_text(out_dir / f"sd_{split}_hyp.rttm", "".join(hyp_lines))
        atomic_write_text(out_dir / f"sd_{split}_ref.rttm", "".join(ref_lines))
