"""Negative sampling and contrastive losses: van den Oord et al., 2018, "Representation
Learning with Contrastive Predictive Coding" (InfoNCE), Schneider et al., 2019, "wav2vec"
(binary contrastive loss) and Baevski et al., 2020, "wav2vec 2.0" (cosine similarity with
temperature, distractors from the same utterance).

Pure functions; every random draw comes from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _draw(pool: Tensor, rank: Tensor, num: int, generator: torch.Generator) -> Tensor:
    """For each query, ``num`` entries of ``pool`` (P,) uniformly, skipping the query's own
    entry: rank (Q,) is the query's position in ``pool`` or -1 if it is not in it.
    Returns (Q, num) pool entries; a query whose pool has no other entry gets itself."""
    Q, P = rank.shape[0], pool.shape[0]
    member = rank >= 0
    choices = (P - member.long()).clamp(min=1)  # how many entries each query may pick
    u = torch.rand(Q, num, generator=generator)
    r = (u * choices.unsqueeze(1)).long().clamp(max=(choices - 1).unsqueeze(1))
    r = r + (member.unsqueeze(1) & (r >= rank.unsqueeze(1))).long()  # step over itself
    r = r.clamp(max=max(P - 1, 0))
    return pool[r] if P > 0 else torch.zeros(Q, num, dtype=torch.long)


def sample_negatives(candidates: Tensor, num: int, generator: torch.Generator,
                     cross_batch: bool = False) -> Tensor:
    """Distractor positions for every frame.

    candidates: (B, T) bool, the frames that may serve as distractors (say, the valid or
    the masked frames). Returns (B, T, num) long indices into the flattened (B * T) frames:
    for frame (b, t), ``num`` uniform draws (with replacement) among the candidates of
    sequence b (of the whole batch if ``cross_batch``), never (b, t) itself.
    """
    B, T = candidates.shape
    cand = candidates.detach().cpu()
    flat = torch.arange(B * T).view(B, T)
    if cross_batch:
        pool = flat[cand]
        rank = torch.full((B * T,), -1, dtype=torch.long)
        rank[cand.flatten()] = torch.arange(pool.shape[0])
        out = _draw(pool, rank, num, generator).view(B, T, num)
    else:
        out = torch.empty(B, T, num, dtype=torch.long)
        for b in range(B):
            pool = flat[b][cand[b]]
            rank = torch.full((T,), -1, dtype=torch.long)
            rank[cand[b]] = torch.arange(pool.shape[0])
            out[b] = _draw(pool, rank, num, generator)
    return out.to(candidates.device)


def gather_frames(x: Tensor, index: Tensor) -> Tensor:
    """x: (B, T, D), index: (...) into the flattened B * T frames -> (..., D)."""
    return x.reshape(-1, x.shape[-1])[index]


def contrastive_logits(pred: Tensor, positive: Tensor, negatives: Tensor,
                       similarity: str = "dot", temperature: float = 1.0,
                       mask_identical: bool = False) -> Tensor:
    """pred, positive: (N, D); negatives: (N, K, D) -> logits (N, 1 + K), the positive first.

    similarity: "dot" (CPC, wav2vec) or "cosine" (wav2vec 2.0), divided by ``temperature``.
    mask_identical: a distractor equal to the positive gets -inf (wav2vec 2.0, where a
    quantized distractor can coincide with the target)."""
    cands = torch.cat([positive.unsqueeze(1), negatives], dim=1)  # (N, 1+K, D)
    if similarity == "cosine":
        logits = F.cosine_similarity(pred.unsqueeze(1).float(), cands.float(), dim=-1)
    elif similarity == "dot":
        logits = (pred.unsqueeze(1) * cands).sum(-1)
    else:
        raise ValueError(f"similarity {similarity!r}; valid: dot, cosine")
    logits = logits / temperature
    if mask_identical:
        same = (negatives == positive.unsqueeze(1)).all(-1)
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], 1)
    return logits


def info_nce(logits: Tensor) -> tuple[Tensor, Tensor]:
    """logits: (N, 1 + K), positive at column 0 -> (mean cross-entropy loss, accuracy: the
    fraction of rows whose positive scores strictly highest)."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits.float(), target)
    acc = (logits[:, 0:1] > logits[:, 1:]).all(-1).float().mean()
    return loss, acc.detach()


def binary_contrastive(pos_scores: Tensor, neg_scores: Tensor) -> tuple[Tensor, Tensor]:
    """wav2vec's loss: -log s(pos) - sum_k log s(-neg_k), averaged over rows.

    pos_scores: (N,), neg_scores: (N, K) logits. Returns (loss, accuracy) with accuracy the
    fraction of rows whose positive outscores every distractor."""
    if pos_scores.shape[0] == 0:
        zero = pos_scores.sum() * 0.0
        return zero, zero.detach()
    loss = -F.logsigmoid(pos_scores) - F.logsigmoid(-neg_scores).sum(-1)
    acc = (pos_scores.unsqueeze(1) > neg_scores).all(-1).float().mean()
    return loss.mean(), acc.detach()
