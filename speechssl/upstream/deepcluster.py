"""DeepCluster for speech frames: Caron, Bojanowski, Joulin and Douze, 2018, "Deep Clustering
for Unsupervised Learning of Visual Features", on HuBERT's machinery (speechssl/upstream/
hubert.py: backbone, k-means, cosine-logit classifier).

Alternate: (1) k-means on a layer of the network as it is (at the start, its random
initialisation) gives every frame a pseudo-label, (2) the network and a freshly initialised
classifier learn to predict the pseudo-labels of every frame, without masking (HuBERT's loss
on unmasked frames), for ``recluster_every`` updates; then cluster again. The pseudo-labels of
a round come from a frozen snapshot of the network taken when it was clustered, so they stay
fixed for the round, as DeepCluster's labels are fixed for an epoch. Not reproduced: the
paper's PCA whitening before k-means and its uniform sampling over clusters.
Differences from HuBERT: targets from the model's own (snapshot) layer from the first update
(HuBERT: MFCC, then a separate second model), re-clustered every round, no masking.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from speechssl.errors import ConfigError
from speechssl.nn.conv_encoder import WAV2VEC2_KERNELS, WAV2VEC2_STRIDES
from speechssl.upstream.base import register_upstream
from speechssl.upstream.hubert import HuBERT


@register_upstream("deepcluster")
class DeepCluster(HuBERT):
    """Hidden states as HuBERT's. ``target_layer``: the hidden state clustered (the middle
    one by default); ``recluster_every``: updates per round (0 = cluster once)."""

    contract_options = {"conv_dim": 32, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                        "ff_size": 64, "conv_pos_kernel": 8, "conv_pos_groups": 4, "final_dim": 16,
                        "num_clusters": 8, "kmeans_utterances": 4, "kmeans_n_init": 1}  # tests

    def __init__(self, conv_dim: int = 512, conv_kernels: list[int] = WAV2VEC2_KERNELS,
                 conv_strides: list[int] = WAV2VEC2_STRIDES, hidden_size: int = 768,
                 num_layers: int = 12, num_heads: int = 12, ff_size: int = 3072,
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 feature_dropout: float = 0.1, conv_pos_kernel: int = 128,
                 conv_pos_groups: int = 16, mask_prob: float = 0.0, mask_span: int = 10,
                 final_dim: int = 256, num_clusters: int = 100, logit_temp: float = 0.1,
                 feature_penalty: float = 10.0, feature_grad_mult: float = 0.1,
                 target_layer: int | None = None, recluster_every: int = 1000,
                 kmeans_seed: int = 0, kmeans_max_frames: int = 200000, kmeans_n_init: int = 3,
                 kmeans_utterances: int = 0, frontend: str = "conv", mel_bins: int = 80,
                 mel_stack: int = 2):
        super().__init__(conv_dim, conv_kernels, conv_strides, hidden_size, num_layers,
                         num_heads, ff_size, dropout, attention_dropout, feature_dropout,
                         conv_pos_kernel, conv_pos_groups, mask_prob, mask_span, final_dim,
                         num_clusters, logit_temp, unmasked_weight=1.0,
                         feature_penalty=feature_penalty, feature_grad_mult=feature_grad_mult,
                         kmeans_seed=kmeans_seed, kmeans_max_frames=kmeans_max_frames,
                         kmeans_n_init=kmeans_n_init, kmeans_utterances=kmeans_utterances,
                         frontend=frontend, mel_bins=mel_bins, mel_stack=mel_stack)
        self.target_layer = num_layers // 2 if target_layer is None else int(target_layer)
        if not 0 <= self.target_layer <= num_layers:
            raise ConfigError(f"upstream.target_layer={target_layer}: hidden states are "
                              f"0..{num_layers}")
        if recluster_every < 0:
            raise ConfigError(f"upstream.recluster_every={recluster_every} must be >= 0")
        del self.mfcc
        self.label_ratio, self.recluster_every = 1, recluster_every
        self.register_buffer("centroids", torch.zeros(num_clusters, hidden_size))
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))
        self.snapshot = copy.deepcopy(self.backbone).requires_grad_(False).eval()
        self._items: list[dict] = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.snapshot.eval()  # the labeller never drops out
        return self

    @torch.no_grad()
    def target_features(self, wavs, lengths):
        """The snapshot's ``target_layer`` (B, T, D) and frames (B,)."""
        _, _, x, n = self.snapshot.encode(wavs, lengths)
        return self.snapshot.contextualize(x, n)[self.target_layer], n

    @torch.no_grad()
    def prepare(self, corpus, run_dir, device) -> None:
        """Keep the utterances k-means reads each round; the first round's clustering (of the
        initial network) unless resumed weights already hold a round."""
        items = corpus.items("pretrain", "train")
        if 0 < self.kmeans_utterances < len(items):
            pick = np.random.RandomState(self.kmeans_seed).choice(len(items),
                                                                  self.kmeans_utterances, False)
            items = [items[i] for i in sorted(pick)]
        self._items, self._device = items, device
        if not bool(self.fitted):
            self.recluster()

    @torch.no_grad()
    def recluster(self) -> dict:
        """A new round: snapshot <- the network, k-means on the snapshot's layer, a freshly
        initialised classifier (seeded by the round, so every rank draws the same)."""
        if not self._items:
            raise ConfigError("deepcluster has no utterances to cluster: pre-train it through "
                              "speechssl.pretrain (which calls prepare)")
        self.snapshot.load_state_dict(self.backbone.state_dict())
        centroids, report = self.fit_targets(self._items, self._device)
        self.set_centroids(centroids)
        g = torch.Generator().manual_seed(self.kmeans_seed * 100003 + int(self.rounds))
        d = self.label_embs.shape[1]
        self.label_embs.copy_(torch.randn(self.label_embs.shape, generator=g) * d ** -0.5)
        self.rounds += 1
        return report

    def kmeans_title(self) -> str:
        return f"[deepcluster] k-means round {int(self.rounds) + 1} (layer {self.target_layer})"

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        """A new round before update recluster_every * r + 1: never after the last update
        (the saved model keeps the classifier of the round it trained), and a run resumed at
        a round's boundary starts that round."""
        if self.recluster_every and step > 0 and step % self.recluster_every == 0:
            self.recluster()
