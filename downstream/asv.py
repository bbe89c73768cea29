"""ASV: speaker verification (SUPERB, Yang et al. 2021; x-vector of Snyder et al. 2018 trained
with AM-softmax, Wang et al. 2018); cosine scoring of trials; EER and minDCF."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from downstream.base import Task, check_crop_seconds, random_crops, register_task
from speechssl import metrics
from speechssl.atomic import atomic_write_text
from speechssl.errors import ConfigError, ManifestError
from speechssl.nn.masking import valid_mask

# (kernel size, dilation) of the five frame-level TDNN layers of the x-vector
TDNN_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))


def statistics_pooling(x: Tensor, lengths: Tensor, eps: float = 1e-5) -> Tensor:
    """Mean and standard deviation over valid frames: (B, T, D), (B,) -> (B, 2D)."""
    mask = valid_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    n = lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)
    mean = (x * mask).sum(1) / n
    var = (((x - mean.unsqueeze(1)) ** 2) * mask).sum(1) / n
    return torch.cat([mean, (var + eps).sqrt()], dim=-1)


class XVector(nn.Module):
    """Projection, TDNN layers (dilated 1-D convolutions + ReLU), statistics pooling and
    an embedding layer: (B, T, D) features -> (B, embed_dim) speaker embeddings."""

    def __init__(self, feature_dim: int, hidden_dim: int = 512, pool_dim: int = 1500,
                 embed_dim: int = 512):
        super().__init__()
        self.proj = nn.Linear(feature_dim, hidden_dim)
        dims = [hidden_dim] * len(TDNN_LAYERS) + [pool_dim]
        self.tdnn = nn.ModuleList(
            nn.Conv1d(dims[i], dims[i + 1], k, dilation=d, padding=d * (k - 1) // 2)
            for i, (k, d) in enumerate(TDNN_LAYERS))
        self.embed = nn.Linear(2 * pool_dim, embed_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = valid_mask(lengths, x.shape[1]).unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = self.proj(x).transpose(1, 2)  # (B, H, T)
        for conv in self.tdnn:
            h = F.relu(conv(h * mask))  # padding frames are zeroed before every convolution
        return self.embed(statistics_pooling(h.transpose(1, 2), lengths))


class AMSoftmax(nn.Module):
    """Additive-margin softmax loss: ``CE(s (cos(x, w_y) - m), y)`` with the margin on the
    target class only. (B, E) embeddings, (B,) labels -> scalar."""

    def __init__(self, embed_dim: int, num_classes: int, scale: float = 30.0,
                 margin: float = 0.4):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(embed_dim, num_classes))
        nn.init.xavier_normal_(self.weight)
        self.scale, self.margin = scale, margin

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        cos = F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=0)  # (B, C)
        cos = cos - self.margin * F.one_hot(labels, cos.shape[-1]).to(cos.dtype)
        return F.cross_entropy(self.scale * cos, labels)


class SpeakerProbe(nn.Module):
    """The x-vector and its training-only classifier head."""

    def __init__(self, xvector: XVector, classifier: AMSoftmax):
        super().__init__()
        self.xvector, self.classifier = xvector, classifier

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.xvector(x, lengths)


def read_trials(path: Path, items: list[dict], root: Path) -> list[tuple[int, int, int]]:
    """VoxCeleb trial list ("label enroll test" per line; utterances named by manifest id,
    absolute path or path under ``root``) -> (label, enroll index, test index) into ``items``."""
    if not path.is_file():
        raise ManifestError(f"{path}: trial list not found")
    index: dict[str, int] = {}
    for i, it in enumerate(items):
        audio = Path(it["path"])
        names = [it["id"], str(audio)]
        if audio.is_relative_to(root):
            names.append(audio.relative_to(root).as_posix())
        index.update(dict.fromkeys(names, i))
    trials = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ManifestError(f"{path}:{n}: expected 'label enroll test' with label 0 or 1, "
                                f"got {line!r}")
        for name in parts[1:]:
            if name not in index:
                raise ManifestError(f"{path}:{n}: utterance {name!r} is not in the test manifest")
        trials.append((int(parts[0]), index[parts[1]], index[parts[2]]))
    if not trials:
        raise ManifestError(f"{path}: no trials")
    return trials


def cosine_trial_scores(emb: Tensor, trials: list[tuple[int, int, int]]) -> Tensor:
    """Cosine similarity of each trial's two embeddings: (N, E) -> (len(trials),)."""
    emb = F.normalize(emb.float(), dim=-1)
    enroll = torch.tensor([t[1] for t in trials])
    test = torch.tensor([t[2] for t in trials])
    return (emb[enroll] * emb[test]).sum(-1)


def held_out_speakers(speakers: list[str], count: int) -> list[str]:
    """``count`` speakers chosen by a hash of their name (the same ones whatever the order
    or the other speakers), sorted."""
    ranked = sorted(speakers, key=lambda s: (hashlib.sha1(s.encode()).hexdigest(), s))
    return sorted(ranked[:count])


def dev_trials(items: list[dict], speaker_of, max_trials: int,
               seed: int = 0) -> list[tuple[int, int, int]]:
    """A balanced trial list over ``items`` (held-out speakers): (label, enroll, test) index
    triples, half same-speaker pairs and half different-speaker pairs (at most
    ``max_trials``), drawn with ``seed``; deterministic for the same items."""
    by_speaker: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_speaker.setdefault(speaker_of(it), []).append(i)
    rng = random.Random(seed)
    targets = [(1, a, b) for idx in by_speaker.values()
               for k, a in enumerate(idx) for b in idx[k + 1:]]
    sizes = [len(idx) for idx in by_speaker.values()]
    pairs_across = (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
    half = min(len(targets), pairs_across, max_trials // 2)
    targets = rng.sample(targets, half)
    speakers = sorted(by_speaker)
    nontargets: set[tuple[int, int, int]] = set()
    while len(nontargets) < half:
        s, t = rng.sample(speakers, 2)
        a, b = rng.choice(by_speaker[s]), rng.choice(by_speaker[t])
        nontargets.add((0, min(a, b), max(a, b)))
    return sorted(targets) + sorted(nontargets)


@register_task("asv")
class SpeakerVerification(Task):
    """VoxCeleb1-style ASV: train a speaker classifier, verify trials of unseen speakers.

    Model selection and early stopping use a dev trial list built from ``dev_speakers``
    training speakers held out of the classifier's training (at most a tenth of them, or 2;
    0 = none, then the last probe is tested as in s3prl's recipe and ``dev_value`` is NaN).
    The test trials are the corpus's (VoxCeleb1's list): test is never used for selection.
    ``train_crop_seconds``: train on a random window of that many seconds of each utterance
    (s3prl: 8 s, ``max_timestep`` 128000 samples); null = whole utterances.
    """

    metric = "eer"
    higher_is_better = False
    subset = "asv"

    def __init__(self, hidden_dim: int = 512, pool_dim: int = 1500, embed_dim: int = 512,
                 am_scale: float = 30.0, am_margin: float = 0.4, p_target: float = 0.01,
                 dev_speakers: int = 40, dev_trials: int = 4000,
                 train_crop_seconds: float | None = None):
        for key, v in (("hidden_dim", hidden_dim), ("pool_dim", pool_dim),
                       ("embed_dim", embed_dim), ("am_scale", am_scale),
                       ("am_margin", am_margin), ("p_target", p_target),
                       ("dev_speakers", dev_speakers), ("dev_trials", dev_trials)):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"downstream.{key} must be a number, got {v!r}")
        for key, v in (("hidden_dim", hidden_dim), ("pool_dim", pool_dim),
                       ("embed_dim", embed_dim)):
            if int(v) != v or v < 1:
                raise ConfigError(f"downstream.{key} must be a positive integer, got {v!r}")
        if am_scale <= 0 or not 0 <= am_margin < 1:
            raise ConfigError(f"downstream.am_scale must be > 0 and downstream.am_margin in "
                              f"[0, 1), got {am_scale!r} and {am_margin!r}")
        if not 0 < p_target < 1:
            raise ConfigError(f"downstream.p_target must be in (0, 1), got {p_target!r}")
        for key, v in (("dev_speakers", dev_speakers), ("dev_trials", dev_trials)):
            if int(v) != v or v < 0:
                raise ConfigError(f"downstream.{key} must be an integer >= 0, got {v!r}")
        self.train_crop_seconds = check_crop_seconds(train_crop_seconds)
        self.dev_speakers, self.max_dev_trials = int(dev_speakers), int(dev_trials)
        self.selects_on_dev = self.dev_speakers > 0 and self.max_dev_trials >= 2
        self.dims = (int(hidden_dim), int(pool_dim), int(embed_dim))
        self.am_scale, self.am_margin, self.p_target = am_scale, am_margin, p_target
        self.trials: dict[str, list[tuple[int, int, int]]] = {}  # split -> trials

    def splits(self, corpus) -> dict[str, list[dict]]:
        train = corpus.items(self.subset, "train")
        out = {"train": train, "test": corpus.items(self.subset, "test")}
        path = corpus.manifest_path(self.subset, "test").with_name("trials.txt")
        self.trials["test"] = read_trials(path, out["test"], corpus.root)
        speakers = sorted({self.reference(it) for it in train})
        count = min(self.dev_speakers, max(2, len(speakers) // 10))
        if count >= 2 and len(speakers) - count >= 2 and self.max_dev_trials >= 2:
            held = set(held_out_speakers(speakers, count))
            out["train"] = [it for it in train if self.reference(it) not in held]
            out["dev"] = [it for it in train if self.reference(it) in held]
            self.trials["dev"] = dev_trials(out["dev"], self.reference, self.max_dev_trials)
            if not self.trials["dev"]:  # one utterance per held-out speaker: no target pair
                out["train"], self.trials = train, {"test": self.trials["test"]}
                del out["dev"]
        return out

    def setup(self, train_items: list[dict]) -> None:
        self.speakers = sorted({self.reference(it) for it in train_items})
        self.index = {s: i for i, s in enumerate(self.speakers)}

    def build_probe(self, feature_dim: int) -> nn.Module:
        hidden, pool, embed = self.dims
        return SpeakerProbe(XVector(feature_dim, hidden, pool, embed),
                            AMSoftmax(embed, len(self.speakers), self.am_scale, self.am_margin))

    def reference(self, item: dict) -> str:
        try:
            return item["speaker"]
        except KeyError:
            raise ManifestError(f"{item.get('_manifest')}:{item.get('_line')}: "
                                f"no 'speaker' field") from None

    def loss(self, probe, features, lengths, batch) -> Tensor:
        """AM-softmax over the training speakers; in training on a random
        ``train_crop_seconds`` window of each utterance when set (s3prl: 8 s)."""
        labels = torch.tensor([self.index[self.reference(it)] for it in batch["items"]],
                              device=features.device)
        if probe.training and self.train_crop_seconds is not None:
            features, lengths = random_crops(features, lengths, self.train_crop_seconds,
                                             self.frame_shift)
        return probe.classifier(probe(features, lengths), labels)

    def predict(self, probe, features, lengths, batch) -> list[Tensor]:
        return list(probe(features, lengths).float().cpu())

    def evaluate_split(self, split, predictions, items, out_dir=None) -> dict[str, float]:
        """Cosine-score the split's trials with the per-utterance embeddings (E,)."""
        if split not in self.trials:
            raise ManifestError(f"asv has no trial list for split {split!r}")
        trials = self.trials[split]
        scores = cosine_trial_scores(torch.stack(predictions), trials).tolist()
        labels = [t[0] for t in trials]
        if out_dir is not None:
            lines = [f"{s:.6f} {lab} {items[e]['id']} {items[t]['id']}\n"
                     for s, (lab, e, t) in zip(scores, trials, strict=True)]
            atomic_write_text(Path(out_dir) / f"asv_{split}_scores.txt", "".join(lines))
        return {"eer": metrics.eer(scores, labels),
                "min_dcf": metrics.min_dcf(scores, labels, p_target=self.p_target)}
