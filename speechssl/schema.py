"""The schema of the config: the type and valid range of every value a user sets, in one
table (:data:`SCHEMA`), and the same checks for constructor options read from type
annotations (:func:`check_annotated`: upstream and task options).

A bad value is a one-line ConfigError naming the key, the value and the valid range,
raised by speechssl/config.py ``check_values`` before any work starts:

    seed='abc': must be an integer >= 0
    downstream.optim.grad_clip=-1: must be a number > 0 (the gradient-norm clip)

Keys are dotted paths; ``*`` in a pattern matches one path component or a part of one
(fnmatch). The first matching pattern decides; keys no pattern matches are checked by
their owners (the tuning modes, the suite, real-corpus readers) or not at all.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from speechssl.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one config value may be.

    kind: "int", "number", "bool", "str", "choice" (one of ``choices``), "dir" (a path that
    is, or can become, a directory), "path" (a file path that is not a directory),
    "numbers" (a non-empty list of numbers in the range) or "removed" (a key that is no
    more: ``note`` says what replaced it).
    ``low``/``high``: the range of an int or number, exclusive where ``*_open``.
    ``null``: what null means when null is allowed (None: null is not allowed).
    ``note``: a few words on what the value is, shown in the message.
    ``when``: the upstream modality ("audio" or "text") the rule is for; None: any.
    """

    kind: str
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    label: str = "values"  # "valid <label>: a, b, c" for a choice
    null: str | None = None
    note: str = ""
    when: str | None = None

    def valid(self) -> str:
        """The valid range in words: 'an integer >= 1', 'a number in (0, 1)', ..."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = f"one of {', '.join(self.choice_list())}"
        elif self.kind == "dir":
            text = "a directory path"
        elif self.kind == "path":
            text = "a file path"
        elif self.kind == "str":
            text = "a string"
        elif self.kind == "numbers":
            text = "a non-empty list of numbers" + self._range()
        elif self.kind == "removed":
            return self.note
        else:
            text = ("an integer" if self.kind == "int" else "a number") + self._range()
        if self.null is not None:
            text = f"null ({self.null}) or {text}"
        return f"{text} ({self.note})" if self.note else text

    def _range(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return (f" in {'(' if self.low_open else '['}{_num(lo)}, "
                    f"{_num(hi)}{')' if self.high_open else ']'}")
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {_num(lo)}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {_num(hi)}"
        return ""

    def choice_list(self) -> list[str]:
        return list(self.choices() if callable(self.choices) else self.choices or ())

    def problem(self, value) -> str | None:
        """None when ``value`` is valid, else what is wrong with it beyond the range
        (an empty string when the range says it all)."""
        if self.kind == "removed":
            return ""
        if value is None:
            return None if self.null is not None else ""
        if self.kind == "numbers":
            if not isinstance(value, list | tuple) or not value:
                return ""
            ranged = Rule("number", self.low, self.low_open, self.high, self.high_open)
            return None if all(ranged.problem(v) is None for v in value) else ""
        if self.kind == "bool":
            return None if isinstance(value, bool) else ""
        if self.kind == "choice":
            return None if value in self.choice_list() else ""
        if self.kind in ("str", "dir", "path"):
            if not isinstance(value, str) or not value.strip():
                return ""
            return _path_problem(Path(value).expanduser(), self.kind) if self.kind != "str" \
                else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return ""
        if self.kind == "int" and not isinstance(value, int):
            return ""
        if not math.isfinite(value):
            return ""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return ""
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return ""
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _path_problem(path: Path, kind: str) -> str | None:
    """A directory (``kind='dir'``) must not be a file, nor lie under one; a file path
    (``kind='path'``) must not be a directory, nor lie under a file."""
    if path.exists():
        if kind == "dir" and not path.is_dir():
            return f"{path} is a file"
        if kind == "path" and path.is_dir():
            return f"{path} is a directory"
        return None
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file"
    return None


def Int(low: int | None = None, *, null: str | None = None, note: str = "") -> Rule:  # noqa: N802
    return Rule("int", low=low, null=null, note=note)


def Num(low: float | None = None, *, above: float | None = None, high: float | None = None,  # noqa: N802
        below: float | None = None, null: str | None = None, note: str = "",
        when: str | None = None) -> Rule:
    """A finite number: >= low or > above, <= high or < below."""
    return Rule("number", low=above if above is not None else low, low_open=above is not None,
                high=below if below is not None else high, high_open=below is not None,
                null=null, note=note, when=when)


BOOL = Rule("bool")


def Choice(choices, label: str = "values") -> Rule:  # noqa: N802
    """One of ``choices`` (a tuple, or a function listing them: a registry's names)."""
    return Rule("choice", choices=tuple(choices) if not callable(choices) else choices,
                label=label)


def _modes() -> list[str]:
    from speechssl.modes import MODES

    return MODES.names()


def _precisions() -> tuple[str, ...]:
    from speechssl.runtime import PRECISIONS

    return PRECISIONS


def _export_formats() -> tuple[str, ...]:
    from speechssl.export import FORMATS

    return FORMATS


def _synth_sizes() -> list[str]:
    from speechssl.data.synth import SIZES

    return list(SIZES)


# key pattern -> rule, or rules for each upstream modality (the first whose ``when`` fits);
# the first matching pattern decides
SCHEMA: dict[str, Rule | tuple[Rule, ...]] = {
    # recipes/config.yaml
    "mode": Choice(_modes, "modes"),
    "seed": Int(0),
    "device": Rule("str", note="auto, cpu, cuda or cuda:N"),
    "precision": Choice(_precisions),
    "num_threads": Int(0, note="0 = one per core"),
    "num_workers": Int(0, note="DataLoader workers; 0 = read in the main process"),
    "data_dir": Rule("dir"),
    "out_dir": Rule("dir"),
    "leaderboard": Rule("path"),
    "report_dir": Rule("dir"),
    "cache": BOOL,
    "cache_dir": Rule("dir", null="no cache directory"),
    "cache_budget_gb": Num(0, note="0 = never cache"),
    "force": BOOL,
    "lr_search": BOOL,
    "protocol": Choice(("cpu", "paper")),
    "progress": BOOL,
    "format": Choice(_export_formats, "formats"),
    "fewshot.shots": Rule("numbers", low=0, note="demonstrations per prompt (mode=fewshot)"),
    "fewshot.seeds": Int(1),
    "fewshot.test_items": Int(0, note="0 = every test item"),
    "fewshot.template": Rule("str"),
    "early_exit.steps": Int(1),
    "prompt_finetune.train_items": Rule("numbers", low=1, note="training subset sizes"),
    "prompt_finetune.steps": Int(1),
    "prompt_finetune.lr": Num(above=0),
    "prompt_finetune.batch_size": Int(1),
    "prompt_finetune.template": Rule("str"),
    "prompt_finetune.demonstrations": BOOL,
    "prompt_finetune.test_items": Int(0, note="0 = every test item"),
    "early_exit.lr": Num(above=0),
    "early_exit.ramp_lr": Num(above=0),
    "early_exit.batch_size": Int(1),
    "early_exit.thresholds": Rule("numbers", low=0, note="top-probability thresholds"),
    "early_exit.test_items": Int(0, note="0 = every test item"),
    # recipes/downstream/*.yaml: what every task shares (its own options: check_annotated)
    "downstream.train_items": Int(1, null="every training item"),
    "downstream.featurizer.layer_norm": BOOL,
    "downstream.featurizer.standardize": BOOL,
    "downstream.featurizer.whiten": BOOL,
    # the upper end (the upstream's layer count) is checked by config.check_featurizer_layer
    "downstream.featurizer.layer": Int(null="a learned weighted sum of all layers",
                                       note="a layer index; -1 = the last"),
    "downstream.optim.lr": Num(above=0),
    "downstream.optim.lr_grid": Rule("numbers", low=0, low_open=True,
                                     note="the learning rates lr_search=true tries"),
    "downstream.optim.weight_decay": Num(0),
    "downstream.optim.max_steps": Int(1),
    "downstream.optim.eval_every": Int(1, note="steps between dev evaluations"),
    "downstream.optim.patience": Int(1, note="dev evaluations without a gain of more than "
                                     "0.5 % (relative) before the run stops"),
    "downstream.optim.lr_decay": Num(above=0, high=1,
                                     note="the factor on the learning rate at a dev plateau; "
                                     "1.0 = constant"),
    "downstream.optim.decay_patience": Int(1, note="dev evaluations without improvement "
                                           "before the learning rate is multiplied by lr_decay"),
    "downstream.optim.batch_seconds": Num(above=0, note="padded seconds of audio per probe batch"),
    "downstream.optim.batch_tokens": Int(1, note="padded tokens per probe batch (text tasks)"),
    "downstream.optim.batch_utterances": Int(1, note="utterances per batch of a probe on pooled "
                                             "features"),
    "downstream.optim.batch_frames": Rule(
        "removed", note="no more: probe batches count audio, not upstream frames; set "
        "downstream.optim.batch_seconds (audio tasks: frames x 0.01 for a 10 ms upstream) or "
        "downstream.optim.batch_tokens (text tasks)"),
    "downstream.optim.grad_clip": Num(above=0, note="the gradient-norm clip"),
    "downstream.optim.accumulate": Int(1, note="batches per update (gradient accumulation)"),
    "downstream.optim.class_balanced": BOOL,
    "downstream.optim.extract_batch_seconds": Num(above=0),
    # recipes/upstream/*.yaml: pre-training (the model's own options: check_annotated)
    "upstream.ckpt": Rule("path", null="the corpus's pre-training run"),
    "upstream.pretrain.steps": Int(1),
    "upstream.pretrain.batch_seconds": (
        Num(above=0, when="audio", note="padded audio seconds per batch"),
        Num(0, note="padded audio seconds per batch; unused by a text upstream")),
    "upstream.pretrain.batch_tokens": Int(1, note="padded tokens per batch"),
    "upstream.pretrain.lr": Num(above=0),
    "upstream.pretrain.weight_decay": Num(0),
    "upstream.pretrain.warmup_steps": Int(0),
    "upstream.pretrain.decay": Choice(("constant", "linear", "cosine")),
    "upstream.pretrain.grad_clip": Num(above=0, note="the gradient-norm clip"),
    "upstream.pretrain.log_every": Int(1),
    "upstream.pretrain.save_every": Int(1),
    "upstream.pretrain.dev_every": Int(0, note="steps between learning-curve points (pretext "
                                       "dev metrics and phone PNMI); 0 = none"),
    "upstream.pretrain.curve_items": Int(0, note="dev utterances each curve point scores; 0 = all"),
    # recipes/corpus/*.yaml
    "corpus.size": Choice(_synth_sizes, "sizes"),
    "corpus.seed": Int(0),
    "corpus.num_workers": Int(0, null="one per core", note="synthesis processes"),
    "corpus.rescan": BOOL,
    "corpus.strip_stress": BOOL,
    "corpus.root": Rule("dir", null="the default place"),
    "corpus.test_root": Rule("dir", null="none"),
    "corpus.folds": Int(1, note="the corpus's cross-validation folds (ER on IEMOCAP: 5)"),
    "corpus.silence_dev_fraction": Num(0, below=1),
    "corpus.*dev_fraction": Num(above=0, below=1),
}


# values only a trained probe reads: not checked for a task that trains none (QbE scores the
# frozen features; its recipe holds zeros there)
PROBE_ONLY = ("downstream.optim.lr", "downstream.optim.weight_decay", "downstream.optim.max_steps",
              "downstream.optim.eval_every", "downstream.optim.patience",
              "downstream.optim.lr_decay", "downstream.optim.decay_patience",
              "downstream.optim.batch_seconds", "downstream.optim.batch_tokens",
              "downstream.optim.batch_utterances",
              "downstream.optim.grad_clip", "downstream.optim.lr_grid",
              "downstream.optim.accumulate")


def rule_for(key: str, modality: str | None = None) -> Rule | None:
    """The rule of a dotted config key: the first pattern of :data:`SCHEMA` it matches (of
    its rules, the first for ``modality``, the upstream's; None: not known)."""
    for pattern, rules in SCHEMA.items():
        if fnmatchcase(key, pattern):
            rules = rules if isinstance(rules, tuple) else (rules,)
            return next((r for r in rules if r.when is None or r.when == modality), None)
    return None


def _leaves(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, resolved value) of every non-mapping value under ``node`` (lists are
    values); mandatory values still missing (``???``) are skipped: their owners ask."""
    for key in node.keys():
        full = f"{prefix}{key}"
        if full == "hydra" or OmegaConf.is_missing(node, key):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            yield from _leaves(value, full + ".")
        else:
            yield full, OmegaConf.to_container(value, resolve=True) \
                if OmegaConf.is_config(value) else value


def shown(value) -> str:
    """A value as the command line spells it: true/false, null, numbers as typed, strings
    and anything else as their repr."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value) if isinstance(value, int | float) else repr(value)


def fail(key: str, value, rule: Rule, detail: str = "") -> ConfigError:
    """The one-line error of a refused value: the key, the value, the valid range."""
    if rule.kind == "removed":
        return ConfigError(f"{key}={shown(value)}: {rule.note}")
    if rule.kind == "choice":  # as the registries say it (mode='fly'; valid modes: ...)
        return ConfigError(f"{key}={shown(value)}; valid {rule.label}: "
                           f"{', '.join(rule.choice_list())}")
    return ConfigError(f"{key}={shown(value)}: {detail + '; ' if detail else ''}"
                       f"must be {rule.valid()}")


def check_config(cfg: DictConfig, trains_probe: bool = True,
                 modality: str | None = None) -> None:
    """ConfigError for the first value of ``cfg`` that its :data:`SCHEMA` rule refuses
    (:data:`PROBE_ONLY` values only when the task ``trains_probe``; the rules for the
    upstream's ``modality``, "audio" or "text", when it is known)."""
    for key, value in _leaves(cfg):
        if key == "corpus.size" and cfg.corpus.get("name") != "synth":
            continue  # only the synthesized corpus has sizes
        if not trains_probe and key in PROBE_ONLY:
            continue
        rule = rule_for(key, modality)
        if rule is None:
            continue
        problem = rule.problem(value)
        if problem is not None:
            raise fail(key, value, rule, problem)


# ---------------------------------------------------------------- constructor options


def type_words(hint) -> str:
    """A type annotation in words: 'true or false', 'an integer', 'null or a number', ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        words = " or ".join(type_words(a) for a in kinds)
        return f"null or {words}" if len(kinds) < len(args) else words
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint in (list, tuple) or origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        if not inner:
            return "a list"
        if origin is list or Ellipsis in args:
            return f"a list of {_plural(inner[0])}"
        if len(set(inner)) == 1:
            return f"a list of {len(inner)} {_plural(inner[0])}"
        return f"a list of ({', '.join(type_words(a) for a in inner)})"
    if hint is dict or origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _plural(hint) -> str:
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(
        hint, type_words(hint))


def fits(value, hint) -> bool:
    """Does a plain config value fit a type annotation? bool, int, float (any finite or
    infinite number), str, None, unions (Optional), list/tuple (a config list) of typed
    elements, dict, Literal; anything else is accepted."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or isinstance(hint, typing.TypeVar):
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if not args:
            return True
        if origin is tuple and Ellipsis not in args:
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args,
                                                                               strict=True))
        return all(fits(v, args[0]) for v in value)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True


def check_annotated(where: str, owner: str, cls: type, options: dict) -> None:
    """ConfigError naming ``<where>.<key>`` when an option's value does not fit the type
    annotation of ``cls.__init__``'s parameter (say ``upstream.normalize=maybe`` for a
    ``bool``). Options without an annotation, or whose annotations cannot be resolved
    (a plug-in's), are not checked."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 (unresolvable annotations: nothing to check against)
        return
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not fits(value, hint):
            raise ConfigError(f"{where}.{key}={shown(value)}: must be {type_words(hint)} "
                              f"({where} {owner!r} declares {key}: {_annotation(hint)})")


def _annotation(hint) -> str:
    text = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return text or str(hint).replace("typing.", "")
