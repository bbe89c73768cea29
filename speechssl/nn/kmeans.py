"""k-means targets and their quality: Hsu et al., 2021, "HuBERT: Self-Supervised Speech
Representation Learning by Masked Prediction of Hidden Units" (MiniBatchKMeans on MFCC or
on a middle layer; cluster purity and phone-normalised mutual information, section IV-F).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def fit_kmeans(features: np.ndarray, num_clusters: int, seed: int = 0, max_frames: int = 0,
               batch_size: int = 10000, n_init: int = 3, max_iter: int = 100) -> np.ndarray:
    """(N, D) features -> (num_clusters, D) float32 centroids of scikit-learn's
    MiniBatchKMeans (k-means++ init); ``max_frames`` > 0 fits on that many rows drawn with
    ``seed``. Deterministic for a fixed seed."""
    from sklearn.cluster import MiniBatchKMeans

    if features.shape[0] < num_clusters:
        raise ValueError(f"{features.shape[0]} frames are fewer than {num_clusters} clusters")
    if max_frames and features.shape[0] > max_frames:
        rows = np.random.RandomState(seed).choice(features.shape[0], max_frames, replace=False)
        features = features[np.sort(rows)]
    km = MiniBatchKMeans(n_clusters=num_clusters, init="k-means++", batch_size=batch_size,
                         n_init=n_init, max_iter=max_iter, random_state=seed,
                         reassignment_ratio=0.0, max_no_improvement=100)
    km.fit(features.astype(np.float32))
    return km.cluster_centers_.astype(np.float32)


def assign(features: Tensor, centroids: Tensor) -> Tensor:
    """(..., D) features, (K, D) centroids -> (...) index of the nearest centroid."""
    flat = features.reshape(-1, features.shape[-1]).to(centroids.dtype)
    d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ centroids.t() + centroids.pow(2).sum(1)
    return d.argmin(1).view(features.shape[:-1])


def cluster_quality(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Frame labels (N,) and cluster ids (N,) -> purity (E_k max_y P(y | k)), PNMI
    (I(y; k) / H(y)), cluster perplexity (exp of the entropy of cluster usage) and the
    number of clusters used. PNMI is 0 when the labels have a single class."""
    _, y = np.unique(labels, return_inverse=True)
    _, k = np.unique(clusters, return_inverse=True)
    joint = np.zeros((y.max() + 1, k.max() + 1))
    np.add.at(joint, (y, k), 1.0)
    p = joint / joint.sum()
    py, pk = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(py, pk)[nz])).sum())
    hy = float(-(py[py > 0] * np.log(py[py > 0])).sum())
    hk = float(-(pk[pk > 0] * np.log(pk[pk > 0])).sum())
    return {"purity": float(p.max(0).sum()), "pnmi": mi / hy if hy > 0 else 0.0,
            "perplexity": float(np.exp(hk)), "clusters_used": int((pk > 0).sum())}


def phone_frames(alignment: list, num_frames: int, hop: int = 160, window: int = 400,
                 sample_rate: int = 16000, silence: str = "sil") -> np.ndarray:
    """Phone segments ``[[phone, start_s, end_s], ...]`` (sorted, as in the synthetic
    corpus's manifests) -> (num_frames,) labels: the phone whose segment holds the centre
    of the frame (frame t spans samples ``[t * hop, t * hop + window)``), else ``silence``."""
    centres = (np.arange(num_frames) * hop + window / 2) / sample_rate
    if not alignment:
        return np.full(num_frames, silence, dtype=object)
    phones = np.array([p for p, _, _ in alignment], dtype=object)
    starts = np.array([s for _, s, _ in alignment], dtype=np.float64)
    ends = np.array([e for _, _, e in alignment], dtype=np.float64)
    k = np.searchsorted(starts, centres, side="right") - 1  # last segment starting <= centre
    inside = (k >= 0) & (centres < ends[np.maximum(k, 0)])
    return np.where(inside, phones[np.maximum(k, 0)], silence)


def speech_frames(wav: Tensor, num_frames: int, hop: int = 160, window: int = 400,
                  floor_db: float = 35.0) -> np.ndarray:
    """(S,) waveform -> (num_frames,) bool speech/silence labels from frame energy: a frame
    is speech when its energy is within ``floor_db`` of the utterance's loudest frame: labels
    any corpus allows, aligned or not."""
    wav = wav.float()
    if wav.numel() < window:
        wav = torch.nn.functional.pad(wav, (0, window - wav.numel()))
    frames = wav.unfold(0, window, hop)
    energy_db = 10 * torch.log10(frames.pow(2).mean(-1) + 1e-10)
    speech = (energy_db > energy_db.max() - floor_db).numpy()
    if speech.shape[0] < num_frames:
        speech = np.pad(speech, (0, num_frames - speech.shape[0]), mode="edge")
    return speech[:num_frames]
