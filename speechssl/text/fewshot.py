"""In-context learning without gradient updates (Brown et al., 2020, "Language Models are
Few-Shot Learners"): k labelled demonstrations of the task's training split are written in
front of a test sentence with a template, and the causal LM (``upstream=gpt``) scores each
label's word after the test sentence; the best-scoring label is the prediction. Zero-shot is
k = 0. The demonstrations are drawn per test item from a generator seeded by (seed, item
index), balanced over the labels, so a run is deterministic and a seed names one draw."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechssl.errors import ConfigError


def verbalize(label: str, verbalizer: dict | None) -> str:
    """The word that stands for ``label`` in the prompt (the label itself by default)."""
    return str((verbalizer or {}).get(label, label))


def draw_demonstrations(train: list[dict], k: int, rng: np.random.Generator,
                        label_key: str = "label") -> list[dict]:
    """k training items, as balanced over the labels as k allows (labels taken in a random
    order, items at random within each), in a random order."""
    if k == 0:
        return []
    by_label: dict[str, list[int]] = {}
    for i, it in enumerate(train):
        by_label.setdefault(str(it[label_key]), []).append(i)
    labels = sorted(by_label)
    order = [labels[j] for j in rng.permutation(len(labels))]
    picks = []
    for n in range(k):
        pool = by_label[order[n % len(order)]]
        picks.append(pool[int(rng.integers(len(pool)))])
    return [train[i] for i in rng.permutation(picks)]


def render(template: str, text: str, label_word: str | None) -> str:
    """One example through the template, e.g. "{text} it was {label}"; the query (no label)
    stops just before the label."""
    if label_word is None:
        return template.split("{label}")[0].format(text=text).rstrip()
    return template.format(text=text, label=label_word)


class InContextClassifier:
    """Scores label words after a prompt with a GPT-style upstream (``lm_logits``, a WordPiece
    ``tokenizer``). The prompt is [CLS] demo_1 [SEP] ... demo_k [SEP] query; a label's score
    is the summed log-probability of its word's tokens after the query."""

    def __init__(self, lm, template: str = "{text} it was {label}", verbalizer: dict | None = None,
                 device: torch.device | str = "cpu"):
        if "{text}" not in template or "{label}" not in template:
            raise ConfigError(f"fewshot.template={template!r} needs {{text}} and {{label}}")
        if not template.rstrip().endswith("{label}"):
            raise ConfigError(f"fewshot.template={template!r} must end with {{label}}: the label "
                              "word is scored after the query")
        if not hasattr(lm, "lm_logits"):
            raise ConfigError(f"in-context learning needs a causal LM upstream (upstream=gpt), "
                              f"not {type(lm).__name__}")
        self.lm, self.template, self.verbalizer, self.device = lm, template, verbalizer, device
        self.tok = lm.tokenizer

    def tokens(self, text: str) -> list[int]:
        return list(self.tok.tokenizer.encode(text, add_special_tokens=False).ids)

    def prompt(self, demos: list[dict], text: str) -> list[int]:
        ids = [self.tok.cls_id]
        for d in demos:
            ids += self.tokens(render(self.template, d["text"],
                                      verbalize(str(d["label"]), self.verbalizer)))
            ids.append(self.tok.sep_id)
        return ids + self.tokens(render(self.template, text, None))

    def label_tokens(self, label: str) -> list[int]:
        """The tokens of a label's word; a ConfigError when the tokenizer does not know it."""
        word = verbalize(label, self.verbalizer)
        ids = self.tokens(word)
        if not ids or self.tok.unk_id in ids:
            raise ConfigError(f"label {label!r}: its word {word!r} is unknown to the upstream's "
                              f"tokenizer; name a known word in fewshot.verbalizer")
        return ids

    @torch.no_grad()
    def label_scores(self, prompt: list[int], labels: list[str]) -> Tensor:
        """(L,) summed log-probabilities of each label's word after ``prompt``."""
        words = [self.label_tokens(lab) for lab in labels]
        seqs = [prompt + w for w in words]
        T = max(map(len, seqs))
        if T > self.lm.max_length:
            raise ConfigError(f"a prompt of {T} tokens exceeds the upstream's max_length="
                              f"{self.lm.max_length}: use fewer shots (fewshot.shots)")
        ids = torch.full((len(seqs), T), self.tok.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        lengths = torch.tensor([len(s) for s in seqs])
        logp = F.log_softmax(self.lm.lm_logits(ids.to(self.device), lengths.to(self.device))
                             .float(), -1).cpu()
        scores = []
        for i, w in enumerate(words):
            start = len(prompt)
            scores.append(sum(float(logp[i, start + j - 1, t]) for j, t in enumerate(w)))
        return torch.tensor(scores)

    def predict(self, train: list[dict], items: list[dict], k: int, seed: int) -> list[str]:
        labels = sorted({str(it["label"]) for it in train})
        out = []
        for n, it in enumerate(items):
            rng = np.random.default_rng([seed, n])
            demos = draw_demonstrations(train, k, rng)
            out.append(labels[int(self.label_scores(self.prompt(demos, it["text"]), labels)
                                  .argmax())])
        return out


def run_fewshot(cfg) -> dict:
    """``mode=fewshot``: accuracy against k on the task's test split (``fewshot.test_items`` > 0:
    that many, evenly spaced), one value per seed and their mean; written as JSON."""
    import time

    from omegaconf import OmegaConf

    from speechssl import metrics
    from speechssl.text.finetune import sentence_task, write_result

    fc = cfg.fewshot
    shots, seeds = [int(k) for k in fc.shots], int(fc.seeds)
    if not shots or min(shots) < 0 or seeds < 1:
        raise ConfigError(f"fewshot.shots={list(fc.shots)} must be integers >= 0 and "
                          f"fewshot.seeds={fc.seeds} >= 1")
    task, corpus, splits, lm, info, device = sentence_task(cfg, "fewshot",
                                                           int(fc.test_items or 0))
    test = splits["test"]
    verbalizer = OmegaConf.to_container(fc.verbalizer) if fc.verbalizer else None
    clf = InContextClassifier(lm, str(fc.template), verbalizer, device)
    refs = [str(it["label"]) for it in test]
    result = {"upstream": cfg.upstream.name, "weights_hash": info.weights_hash,
              "task": task.name, "corpus": corpus.key, "items": len(test),
              "template": str(fc.template), "verbalizer": verbalizer, "accuracy": {}}
    t0 = time.time()
    print(f"[fewshot] {cfg.upstream.name} on {task.name}: {len(test)} test items, "
          f"shots {shots}, {seeds} seed(s), template {fc.template!r}")
    for k in shots:
        accs = [metrics.accuracy(clf.predict(splits["train"], test, k, cfg.seed + s), refs)
                for s in range(seeds if k > 0 else 1)]
        result["accuracy"][str(k)] = {"per_seed": accs, "mean": float(np.mean(accs))}
        print(f"[fewshot] k={k}: accuracy {np.mean(accs):.2f} "
              f"({', '.join(f'{a:.2f}' for a in accs)})")
    majority = max(refs.count(c) for c in set(refs)) / len(refs) * 100
    result.update(majority_class=majority, seconds=round(time.time() - t0, 1))
    out = write_result(cfg, "fewshot", info.tag(cfg.upstream.name), task.name, result)
    print(f"[fewshot] majority class {majority:.2f}; written {out}")
    return result
