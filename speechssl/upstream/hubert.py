"""HuBERT: Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov and Mohamed, 2021, "HuBERT:
Self-Supervised Speech Representation Learning by Masked Prediction of Hidden Units".

The wav2vec 2.0 backbone (stride 320) reads masked input (p = 0.08, span 10) and predicts,
at every frame, the k-means cluster of that frame: logits are cosine similarities between
the projected output and one embedding per cluster, divided by 0.1; cross-entropy on the
masked frames plus ``unmasked_weight`` (0 in the paper) times that on the unmasked ones.
Iteration 1 clusters 39-dim MFCC (13 + deltas + delta-deltas, 10 ms: the target of frame t
is that of MFCC frame 2t) into 100 clusters; iteration 2 (``iteration=2 teacher=<ckpt>``)
clusters layer ``teacher_layer`` (the middle one by default) of the iteration-1 model into
500. The teacher may also be another upstream's checkpoint (apc: a cheaper model whose units
beat MFCC's; its frames are picked as MFCC's are, ``teacher_layer`` named). The k-means step runs in ``prepare`` (called by the pre-training loop before step 0):
scikit-learn MiniBatchKMeans, centroids cached in the run directory and kept as a buffer,
so every batch's targets are the nearest centroids of its features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.checkpoint import read_metadata
from speechssl.errors import ConfigError
from speechssl.nn.conv_encoder import WAV2VEC2_KERNELS, WAV2VEC2_STRIDES
from speechssl.nn.frontend import HOP_SAMPLES, KaldiFrontend
from speechssl.nn.kmeans import assign, cluster_quality, fit_kmeans, phone_frames, speech_frames
from speechssl.nn.masking import valid_mask
from speechssl.nn.wav2vec2_backbone import MaskedBackbone
from speechssl.upstream.base import TRANSFORMER_TUNING, Upstream, UpstreamOutput, register_upstream


def _teacher_source(path: str) -> tuple[str, dict]:
    """The upstream name and model options stored in a teacher checkpoint's metadata."""
    if not Path(path).is_file():
        raise ConfigError(f"upstream.teacher={path!r}: checkpoint file not found")
    meta = read_metadata(path)
    if "upstream" not in meta:
        raise ConfigError(f"upstream.teacher={path!r} is not a speechssl pre-training checkpoint "
                          "(its metadata names no upstream)")
    return meta["upstream"], json.loads(meta.get("options", "{}"))


def load_hubert(path: str, device, key: str = "teacher") -> HuBERT:
    """A trained HuBERT from its checkpoint, frozen, eval mode: the teacher of a second
    iteration and of DistilHuBERT."""
    from speechssl.upstream.load import frozen_from_checkpoint

    return frozen_from_checkpoint(path, key, device, kinds=("hubert",))


@register_upstream("hubert")
class HuBERT(Upstream):
    """Hidden states: the transformer input and each transformer layer, all ``hidden_size``
    wide, 320 samples per frame. ``codes`` gives the k-means targets of an input."""

    checkpoint_options = ("teacher",)
    tuning_modes = TRANSFORMER_TUNING

    contract_options = {"conv_dim": 32, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                        "ff_size": 64, "conv_pos_kernel": 8, "conv_pos_groups": 4, "final_dim": 16,
                        "num_clusters": 8}  # tests

    def __init__(self, conv_dim: int = 512, conv_kernels: list[int] = WAV2VEC2_KERNELS,
                 conv_strides: list[int] = WAV2VEC2_STRIDES, hidden_size: int = 768,
                 num_layers: int = 12, num_heads: int = 12, ff_size: int = 3072,
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 feature_dropout: float = 0.1, conv_pos_kernel: int = 128,
                 conv_pos_groups: int = 16, mask_prob: float = 0.08, mask_span: int = 10,
                 final_dim: int = 256, num_clusters: int = 100, logit_temp: float = 0.1,
                 unmasked_weight: float = 0.0, feature_penalty: float = 10.0,
                 feature_grad_mult: float = 0.1, iteration: int = 1,
                 teacher: str | None = None, teacher_layer: int | None = None,
                 kmeans_seed: int = 0, kmeans_max_frames: int = 200000, kmeans_n_init: int = 3,
                 kmeans_utterances: int = 0, frontend: str = "conv", mel_bins: int = 80,
                 mel_stack: int = 2):
        super().__init__()
        if iteration not in (1, 2):
            raise ConfigError(f"upstream.iteration={iteration}; valid: 1, 2")
        if iteration == 2 and not teacher:
            raise ConfigError("upstream.iteration=2 needs upstream.teacher=<iteration-1 ckpt>")
        if not 2 <= num_clusters <= 32767:  # the kept targets are int16
            raise ConfigError(f"upstream.num_clusters={num_clusters} must be in 2..32767")
        self.backbone = MaskedBackbone(conv_dim, conv_kernels, conv_strides, "group_first",
                                       hidden_size, num_layers, num_heads, ff_size, dropout,
                                       attention_dropout, feature_dropout, conv_pos_kernel,
                                       conv_pos_groups, mask_prob, mask_span, feature_grad_mult,
                                       frontend=frontend, mel_bins=mel_bins, mel_stack=mel_stack)
        self.downsample_rate = self.backbone.features.stride
        self.final_proj = nn.Linear(hidden_size, final_dim)
        self.label_embs = nn.Parameter(torch.randn(num_clusters, final_dim) * final_dim ** -0.5)
        self.iteration, self.teacher_path = iteration, teacher
        self._teacher: list[Upstream] = []  # a list, so it stays out of state_dict/parameters
        self._kept: dict[bytes, Tensor] = {}  # the teacher's ids of each utterance seen
        if iteration == 1:
            if self.downsample_rate % HOP_SAMPLES:
                raise ConfigError(f"hubert: {self.downsample_rate} samples per frame is not a "
                                  f"multiple of the MFCC hop ({HOP_SAMPLES}); change conv_strides")
            self.mfcc = KaldiFrontend("mfcc", num_ceps=13, deltas=True)
            target_dim, self.label_ratio = self.mfcc.dim, self.downsample_rate // HOP_SAMPLES
        else:
            kind, opts = _teacher_source(teacher)
            self.teacher_kind, self.label_ratio = kind, None  # teacher frames per frame: on load
            if kind == "hubert":
                t_layers = int(opts.get("num_layers", 12))
                self.teacher_layer = t_layers // 2 if teacher_layer is None else int(teacher_layer)
                if not 0 <= self.teacher_layer <= t_layers:
                    raise ConfigError(f"upstream.teacher_layer={teacher_layer}: the teacher has "
                                      f"hidden states 0..{t_layers}")
                target_dim = int(opts.get("hidden_size", 768))
            else:  # another upstream's checkpoint: its layer's width is known once it runs
                if teacher_layer is None:
                    raise ConfigError(f"upstream.teacher={teacher!r} is a {kind!r} checkpoint: "
                                      "set upstream.teacher_layer, the index of its hidden state "
                                      "to cluster")
                self.teacher_layer, target_dim = int(teacher_layer), 0
        self.register_buffer("centroids", torch.zeros(num_clusters, target_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.num_clusters, self.logit_temp = num_clusters, logit_temp
        self.unmasked_weight, self.feature_penalty = unmasked_weight, feature_penalty
        self.kmeans_seed, self.kmeans_max_frames = kmeans_seed, kmeans_max_frames
        self.kmeans_n_init, self.kmeans_utterances = kmeans_n_init, kmeans_utterances

    # ---- targets -------------------------------------------------------------------------
    def teacher(self) -> Upstream:
        """The frozen model whose layer is clustered (loaded on first use; not part of this
        model): the iteration-1 hubert in the paper, or any pre-trained upstream."""
        if not self._teacher:
            from speechssl.upstream.load import frozen_from_checkpoint

            model = frozen_from_checkpoint(self.teacher_path, "teacher", self.centroids.device)
            rate = int(model.downsample_rate)
            if self.downsample_rate % rate:
                raise ConfigError(f"upstream.teacher={self.teacher_path!r}: its {rate} samples per "
                                  f"frame do not divide this model's {self.downsample_rate}")
            self.label_ratio = self.downsample_rate // rate
            self._teacher.append(model)
        return self._teacher[0]

    @torch.no_grad()
    def target_features(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) -> the features that are clustered (B, T', F) and their frames (B,):
        MFCC + deltas at 10 ms (iteration 1), or the teacher's layer (iteration 2)."""
        if self.iteration == 1:
            return self.mfcc(wavs, lengths)
        out = self.teacher()(wavs, lengths)
        if not 0 <= self.teacher_layer < len(out.hidden_states):
            raise ConfigError(f"upstream.teacher_layer={self.teacher_layer}: the "
                              f"{self.teacher_kind} teacher has hidden states "
                              f"0..{len(out.hidden_states) - 1}")
        return out.hidden_states[self.teacher_layer], out.lengths

    @torch.no_grad()
    def targets(self, wavs: Tensor, lengths: Tensor, T: int) -> Tensor:
        """(B, S) -> cluster ids (B, T) at the model's frame rate (nearest centroids)."""
        if not bool(self.fitted):
            raise ConfigError("hubert has no k-means targets yet: pre-train it through "
                              "speechssl.pretrain (which calls prepare) or call prepare first")
        if self.iteration == 2:
            return self._kept_targets(wavs, lengths, T)
        return self._assign(*self.target_features(wavs, lengths), T)

    def _assign(self, feats: Tensor, m: Tensor, T: int) -> Tensor:
        """Target features (B, T', F) with T' valid frames (B,) -> the cluster id of frame t:
        that of feature frame t * label_ratio (the last valid one past the end)."""
        idx = (torch.arange(T, device=feats.device) * self.label_ratio).unsqueeze(0)
        idx = torch.minimum(idx, (m - 1).clamp(min=0).unsqueeze(1))  # (B, T)
        picked = feats.gather(1, idx.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))
        return assign(picked, self.centroids)

    def _kept_targets(self, wavs: Tensor, lengths: Tensor, T: int) -> Tensor:
        """A teacher's cluster ids, computed once per utterance and kept in memory, keyed by
        its samples: an utterance's labels are fixed for the whole run (fairseq writes them to
        label files before training), and the teacher (an iteration-1 hubert, an apc) would
        otherwise run on every batch of every epoch. Pre-training reads whole utterances, so
        each epoch after the first runs no teacher. 2 bytes per frame (50 frames/s: 360 KB per
        hour of audio). Only the utterances not labelled yet go through the teacher."""
        import hashlib

        n = self.backbone.features.output_lengths(lengths).tolist()
        keys = [hashlib.blake2b(wavs[b, : int(lengths[b])].detach().cpu().numpy().tobytes(),
                                digest_size=16).digest() for b in range(wavs.shape[0])]
        miss = [b for b, k in enumerate(keys) if k not in self._kept]
        if miss:  # the teacher reads only the utterances it has not labelled yet
            pick = torch.tensor(miss, device=wavs.device)
            sub_lengths = lengths[pick]
            ids = self._assign(*self.target_features(wavs[pick, : int(sub_lengths.max())],
                                                     sub_lengths), max(n[b] for b in miss))
            for j, b in enumerate(miss):
                self._kept[keys[b]] = ids[j, : n[b]].cpu().to(torch.int16)
        out = torch.zeros(wavs.shape[0], T, dtype=torch.long)
        for b, k in enumerate(keys):
            out[b, : n[b]] = self._kept[k]
        return out.to(wavs.device)

    @torch.no_grad()
    def prepare(self, corpus, run_dir, device) -> None:
        """Fit the k-means targets on the corpus's pre-training split (or reuse the run's
        cache) and print their quality."""
        cache = Path(run_dir) / f"kmeans-iter{self.iteration}.pt"
        if cache.is_file():
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            self.set_centroids(saved["centroids"])
            print(f"[hubert] reusing k-means targets {cache}")
            return
        items = corpus.items("pretrain", "train")
        if 0 < self.kmeans_utterances < len(items):  # a seeded subset of utterances
            pick = np.random.RandomState(self.kmeans_seed).choice(len(items),
                                                                  self.kmeans_utterances, False)
            items = [items[i] for i in sorted(pick)]
        centroids, report = self.fit_targets(items, device)
        self.set_centroids(centroids)
        torch.save({"centroids": self.centroids.cpu()}, cache)
        (Path(run_dir) / f"kmeans-iter{self.iteration}.json").write_text(json.dumps(report,
                                                                                   indent=1))

    def set_centroids(self, centroids: Tensor) -> None:
        self._kept.clear()  # ids of other centroids
        if self.centroids.shape[1] == 0 and centroids.shape[0] == self.num_clusters:
            self.centroids = centroids.new_zeros(centroids.shape).to(self.centroids)  # now sized
        if tuple(centroids.shape) != tuple(self.centroids.shape):
            raise ConfigError(f"k-means centroids of shape {tuple(centroids.shape)} do not fit "
                              f"this hubert ({tuple(self.centroids.shape)})")
        self.centroids.copy_(centroids.to(self.centroids))
        self.fitted.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "centroids"
        if key in state_dict and self.centroids.shape[1] == 0:  # another upstream's layer
            self.centroids = torch.empty_like(state_dict[key], device=self.centroids.device)
        self._kept.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def kmeans_title(self) -> str:
        return f"[hubert] k-means iteration {self.iteration}"

    @torch.no_grad()
    def fit_targets(self, items: list[dict], device) -> tuple[Tensor, dict]:
        """k-means on the target features of ``items`` -> (centroids (K, F), quality report).

        Quality (HuBERT section IV-F), on the clustered frames: phone purity and PNMI
        against the items' phone ``alignment`` where the corpus has one (the synthetic
        corpus does, from eSpeak; frames outside every phone are ``sil``), purity and PNMI
        against energy-based speech/silence labels, cluster perplexity and usage."""
        from speechssl.data.audio import load_audio

        if self.iteration == 2:
            self.teacher()  # sets label_ratio
        hop = self.downsample_rate // self.label_ratio  # samples per clustered frame
        feats, speech, phones, aligned = [], [], [], []
        for it in items:
            wav = load_audio(it["path"], self.sample_rate).to(device)
            f, m = self.target_features(wav.unsqueeze(0), torch.tensor([wav.numel()], device=device))
            f = f[0, : int(m[0])].float().cpu()
            feats.append(f.numpy())
            speech.append(speech_frames(wav.cpu(), f.shape[0], hop=hop))
            if "alignment" in it:
                phones.append(phone_frames(it["alignment"], f.shape[0], hop=hop,
                                           sample_rate=self.sample_rate))
            aligned.append(np.full(f.shape[0], "alignment" in it))
        allf = np.concatenate(feats)
        centroids = fit_kmeans(allf, self.num_clusters, self.kmeans_seed, self.kmeans_max_frames,
                               n_init=self.kmeans_n_init)
        clusters = assign(torch.from_numpy(allf), torch.from_numpy(centroids)).numpy()
        sil = cluster_quality(np.concatenate(speech), clusters)
        report = {"iteration": self.iteration, "frames": int(allf.shape[0]),
                  "num_clusters": self.num_clusters, "speech_silence_purity": sil["purity"],
                  "speech_silence_pnmi": sil["pnmi"], "cluster_perplexity": sil["perplexity"],
                  "clusters_used": sil["clusters_used"]}
        phone_text = "no phone alignments in this corpus, so no phone purity"
        if phones:
            labels, known = np.concatenate(phones).astype(str), np.concatenate(aligned)
            ph = cluster_quality(labels, clusters[known])
            report.update(phone_frames=int(known.sum()), phone_purity=ph["purity"],
                          phone_pnmi=ph["pnmi"], phones=int(len(np.unique(labels))))
            phone_text = (f"vs phone alignments ({report['phone_frames']} frames, "
                          f"{report['phones']} phones incl. sil): phone purity "
                          f"{ph['purity']:.3f}, PNMI {ph['pnmi']:.3f}")
        print(f"{self.kmeans_title()}: {report['frames']} frames, "
              f"{self.num_clusters} clusters, {report['clusters_used']} used, perplexity "
              f"{report['cluster_perplexity']:.1f}; {phone_text}; vs energy speech/silence "
              f"labels: purity {sil['purity']:.3f}, PNMI {sil['pnmi']:.3f}")
        return torch.from_numpy(centroids), report

    # ---- model ---------------------------------------------------------------------------
    def forward(self, wavs: Tensor, lengths: Tensor) -> UpstreamOutput:
        _, _, x, n = self.backbone.encode(wavs, lengths)
        return UpstreamOutput(hidden_states=self.backbone.contextualize(x, n), lengths=n)

    @torch.no_grad()
    def codes(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The k-means target ids (B, T) (-1 at padding) and frames (B,)."""
        n = self.backbone.features.output_lengths(lengths)
        T = int(n.max())
        return self.targets(wavs, lengths, T).masked_fill(~valid_mask(n, T), -1), n

    def logits(self, h: Tensor) -> Tensor:
        """(N, hidden) -> (N, num_clusters): cosine(final_proj(h), label embedding) / temp."""
        return F.cosine_similarity(self.final_proj(h).float().unsqueeze(1),
                                   self.label_embs.float().unsqueeze(0), dim=-1) / self.logit_temp

    def pretrain_loss(self, wavs: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        raw, _, x, n = self.backbone.encode(wavs, lengths)
        T = x.shape[1]
        valid = valid_mask(n, T)
        target = self.targets(wavs, lengths, T)
        mask = self.backbone.mask(n, T)
        h = self.backbone.contextualize(x, n, mask)[-1]
        out, loss = {}, self.feature_penalty * self.backbone.feature_penalty(raw, valid)
        for name, sel, weight in (("masked", mask & valid, 1.0),
                                  ("unmasked", ~mask & valid, self.unmasked_weight)):
            if not sel.any():
                continue
            logits = self.logits(h[sel])
            ce = F.cross_entropy(logits, target[sel])
            if weight > 0:
                loss = loss + weight * ce
            out[f"loss_{name}"] = ce.detach()
            out[f"accuracy_{name}"] = (logits.argmax(-1) == target[sel]).float().mean()
        return {"loss": loss, **out}
