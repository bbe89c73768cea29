"""Prompt-based fine-tuning (LM-BFF: Gao, Fisch and Chen, 2021, "Making Pre-trained Language
Models Better Few-shot Learners"; PET: Schick and Schütze, 2021): the sentence goes into a
template with a [MASK] ("{text} it was [MASK]"), and the masked-LM head's logits of the label
words at the mask (the verbalizer: positive -> "great", negative -> "terrible") are the class
logits; the whole bert is fine-tuned on their cross-entropy, so no new parameter is added.
With demonstrations, one training sentence of each class, filled in with its label word, is
appended after [SEP] (sampled per sentence, at training and test time). The comparison: the
usual [CLS] + linear fine-tuning (BERT's pooler, a new linear layer) with the same budget, at
several numbers of training items (a balanced subset; LM-BFF's claim: the prompt wins when
data is short).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.text.fewshot import verbalize
from speechssl.text.finetune import balanced_subset, fit


class PromptModel(nn.Module):
    """bert + template + verbalizer: (B, T) ids with one [MASK] -> (B, C) label-word logits."""

    def __init__(self, bert, labels: list[str], verbalizer: dict | None,
                 template: str = "{text} it was [MASK]"):
        super().__init__()
        if template.count("[MASK]") != 1 or "{text}" not in template:
            raise ConfigError(f"prompt_finetune.template={template!r} needs {{text}} and one [MASK]")
        self.bert, self.labels, self.template, self.verbalizer = bert, labels, template, verbalizer
        tok = bert.tokenizer
        self.word_ids = []
        for lab in labels:
            word = verbalize(lab, verbalizer)
            ids = tok.tokenizer.encode(word, add_special_tokens=False).ids
            if len(ids) != 1 or ids[0] == tok.unk_id:
                raise ConfigError(f"label {lab!r}: its word {word!r} is not one token of the "
                                  f"upstream's vocabulary (LM-BFF's label words are single "
                                  f"tokens); name another in prompt_finetune.verbalizer")
            self.word_ids.append(ids[0])

    def tokens(self, text: str) -> list[int]:
        return list(self.bert.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str, demos: list[dict]) -> Tensor:
        """[CLS] template(text) [SEP] (demo with its label word [SEP])*"""
        tok = self.bert.tokenizer
        before, after = self.template.format(text=text).split("[MASK]")
        ids = [tok.cls_id, *self.tokens(before), tok.mask_id, *self.tokens(after), tok.sep_id]
        for d in demos:
            filled = self.template.format(text=d["text"]).replace(
                "[MASK]", verbalize(str(d["label"]), self.verbalizer))
            ids += [*self.tokens(filled), tok.sep_id]
        return torch.tensor(ids[: self.bert.max_length])

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        h = self.bert(ids, lengths).hidden_states[-1]
        at = (ids == self.bert.tokenizer.mask_id).float().argmax(1)  # the first [MASK]
        logits = self.bert.mlm_logits(h[torch.arange(len(ids), device=ids.device), at])
        return logits[:, self.word_ids]


class HeadModel(nn.Module):
    """bert's [CLS] state -> its pooler -> a new linear layer (BERT's fine-tuning)."""

    def __init__(self, bert, num_classes: int):
        super().__init__()
        self.bert = bert
        self.out = nn.Linear(bert.embed.tokens.embedding_dim, num_classes)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.out(self.bert.pooler(self.bert(ids, lengths).hidden_states[-1][:, 0]))


def demonstrations(train: list[dict], rng: np.random.Generator) -> list[dict]:
    """One training item of each label (labels in sorted order), drawn with ``rng``."""
    by_label: dict[str, list[dict]] = {}
    for it in train:
        by_label.setdefault(str(it["label"]), []).append(it)
    return [v[int(rng.integers(len(v)))] for _, v in sorted(by_label.items())]


def encode_split(model, items: list[dict], train: list[dict], labels: list[str],
                 use_demos: bool, seed: int) -> list[tuple[Tensor, int]]:
    """(ids, label index) per item; the prompt model's ids carry demonstrations drawn from
    ``train`` with a generator seeded by (seed, item index) when ``use_demos``."""
    out = []
    for n, it in enumerate(items):
        y = labels.index(str(it["label"]))
        if isinstance(model, PromptModel):
            demos = demonstrations(train, np.random.default_rng([seed, n])) if use_demos else []
            out.append((model.encode(it["text"], demos), y))
        else:
            out.append((torch.tensor(model.bert.encode_ids(it)), y))
    return out


@torch.no_grad()
def accuracy(model: nn.Module, data: list[tuple[Tensor, int]], pad_id: int, batch: int = 64
             ) -> float:
    from speechssl.text.data import pad_ids

    model.eval()
    device = next(model.parameters()).device
    hits = 0
    for i in range(0, len(data), batch):
        ids, lengths = pad_ids([d[0] for d in data[i:i + batch]], pad_id)
        pred = model(ids.to(device), lengths.to(device)).argmax(-1).cpu()
        hits += int((pred == torch.tensor([d[1] for d in data[i:i + batch]])).sum())
    return 100.0 * hits / len(data)


def run_prompt_finetune(cfg) -> dict:
    """``mode=prompt_finetune``: for each number of training items, the prompt model and the
    [CLS] head, each fine-tuned from the same pre-trained bert with the same budget and
    seed; test accuracy printed and written to
    ``<out_dir>/prompt_finetune/<upstream tag>-<task>.json``."""
    import copy
    import time

    from omegaconf import OmegaConf

    from speechssl.text.finetune import sentence_task, write_result

    pc = cfg.prompt_finetune
    task, corpus, splits, bert, info, device = sentence_task(cfg, "prompt_finetune",
                                                             int(pc.test_items or 0))
    if not hasattr(bert, "mlm_logits"):
        raise ConfigError(f"mode=prompt_finetune needs a masked LM upstream (upstream=bert), "
                          f"not {cfg.upstream.name}")
    labels = sorted({str(it["label"]) for it in splits["train"]})
    verbalizer = OmegaConf.to_container(pc.verbalizer) if pc.verbalizer else None
    test = splits["test"]
    result = {"upstream": cfg.upstream.name, "weights_hash": info.weights_hash, "task": task.name,
              "corpus": corpus.key, "template": str(pc.template), "verbalizer": verbalizer,
              "demonstrations": bool(pc.demonstrations), "steps": int(pc.steps),
              "test_items": len(test), "accuracy": {}}
    t0 = time.time()
    print(f"[prompt_finetune] {cfg.upstream.name} on {task.name}: prompt {pc.template!r} vs "
          f"[CLS] + linear, {int(pc.steps)} updates each, {len(test)} test items")
    print("| training items | prompt | [CLS] head |")
    print("|---|---|---|")
    for n in [int(x) for x in pc.train_items]:
        train = balanced_subset(splits["train"], n, cfg.seed)
        row = {}
        for arm in ("prompt", "head"):
            torch.manual_seed(cfg.seed)
            base = copy.deepcopy(bert).train().requires_grad_(True)
            model = (PromptModel(base, labels, verbalizer, str(pc.template)) if arm == "prompt"
                     else HeadModel(base, len(labels))).to(device).train()
            data = encode_split(model, train, train, labels, bool(pc.demonstrations), cfg.seed)

            def loss_fn(ids, lengths, y, model=model):
                return F.cross_entropy(model(ids, lengths), y)

            fit(loss_fn, list(model.parameters()), data, int(pc.steps), float(pc.lr),
                int(pc.batch_size), cfg.seed, bert.pad_id, device)
            row[arm] = accuracy(model, encode_split(model, test, train, labels,
                                                    bool(pc.demonstrations), cfg.seed + 1),
                                bert.pad_id)
        result["accuracy"][str(n)] = row
        print(f"| {n} | {row['prompt']:.2f} | {row['head']:.2f} |")
    result["seconds"] = round(time.time() - t0, 1)
    out = write_result(cfg, "prompt_finetune", info.tag(cfg.upstream.name), task.name, result)
    print(f"[prompt_finetune] written {out}")
    return result
