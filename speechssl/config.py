"""Fail fast on a bad command line: check the overrides and the config values before
any work starts, and name the valid choices."""

from __future__ import annotations

import contextlib
import inspect
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from speechssl.errors import ConfigError

# the config groups: speechssl/recipes in an installed wheel (package data), else the
# top-level recipes/ of a source checkout (editable install, `python run.py`)
RECIPES = Path(__file__).resolve().parent / "recipes"
if not RECIPES.is_dir():
    RECIPES = RECIPES.parent.parent / "recipes"


def class_defaults(cls) -> dict:
    """The keyword defaults of ``cls.__init__`` as plain config values (tuples as lists)."""
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.default is inspect.Parameter.empty:
            continue
        out[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def store_class_defaults() -> None:
    """Each registered upstream's and task's constructor defaults as the configs
    ``upstream_defaults/<name>`` and ``downstream_defaults/<name>``, which their recipes
    (recipes/upstream/<name>.yaml, recipes/downstream/<name>.yaml) put first in their
    defaults list: a recipe holds only what differs from the class, yet every option shows
    in the composed config (``--cfg job``) and takes a plain ``upstream.KEY=VALUE`` override."""
    from hydra.core.config_store import ConfigStore

    from downstream.base import TASKS
    from speechssl.upstream.base import UPSTREAMS

    store = ConfigStore.instance()
    for group, registry in (("upstream_defaults", UPSTREAMS), ("downstream_defaults", TASKS)):
        for name in registry.names():
            store.store(group=group, name=name,
                        node={"name": name, **class_defaults(registry.get(name))})


# before any composition, in every process that imports the config module (the CLI, tests,
# benchmarks)
store_class_defaults()


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """Replace each sweep (a=1,2 or a=range(...)) by its first value, for checking."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for ov in OverridesParser.create().parse_overrides(overrides):
        if ov.is_sweep_override():
            first = next(iter(ov.sweep_string_iterator()))
            out.append(f"{ov.get_key_element()}={first}")
        else:
            out.append(ov.input_line)
    return out


def _valid_keys_message(cfg: DictConfig, full_key: str) -> str:
    """The keys under the deepest existing parent of ``full_key`` (upstream.pretrain.lr of
    an upstream with no pre-training lists the keys under 'upstream')."""
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    while True:
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            keys = ", ".join(str(k) for k in node.keys() if k != "hydra")
            return f"valid keys under '{parent or '<top level>'}': {keys}"
        parent = parent.rsplit(".", 1)[0] if "." in parent else ""


@contextlib.contextmanager
def _hydra_config_dir():
    """Hydra's global config search path: the one run.py's app set up when inside it, else
    this package's recipes for the duration of the block (a test, a library call)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        yield


def compose_config(overrides: list[str]) -> DictConfig:
    """The recipes' config with ``overrides``, inside a Hydra app (run.py) or outside it (a
    test, a library call); a ConfigError in one line when an override names nothing: an
    unknown key with the valid keys under its parent, an unknown group choice with the
    choices."""
    from hydra import compose
    from hydra.errors import HydraException

    overrides = list(overrides)
    with _hydra_config_dir():
        try:
            return compose("config", overrides=overrides)
        except HydraException as e:
            msg = str(e).split("\nConfig search path")[0]
            key = re.search(r"Could not override '([\w.]+)'", msg)
            if key:
                groups = [o for o in overrides if o.split("=")[0] in
                          ("upstream", "downstream", "corpus", "suite", "tuning")]
                base = compose("config", overrides=groups)
                raise ConfigError(f"unknown config key '{key.group(1)}'; "
                                  f"{_valid_keys_message(base, key.group(1))}") from None
            raise ConfigError(_one_line(msg)) from None


def check_overrides(overrides: list[str]) -> None:
    """Compose the config with the user's overrides (a sweep: its first value of each); raise
    ConfigError with the valid keys or choices if an override names nothing, or with what
    is wrong with a value (:func:`check_values`)."""
    from hydra.errors import HydraException

    user = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "--"))]
    try:
        user = _first_of_sweeps(user)
    except HydraException as e:
        raise ConfigError(f"cannot parse the command line: {e}") from None
    check_values(compose_config(user))


def _one_line(msg: str) -> str:
    """Hydra's message for an unknown group choice (``downstream=nope``), which lists the
    choices one per line, as one line: 'downstream=nope: no such downstream; valid choices:
    asr, asv, ...'; any other message with its lines joined."""
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", msg)
    listed = re.search(r"Available options in '([\w/]+)':\n((?:\t.*(?:\n|$))*)", msg)
    if missing and listed:
        group, name = missing.group(1), missing.group(2)
        choices = [c.strip() for c in listed.group(2).splitlines() if c.strip()]
        return (f"{group}={name}: no such {group} (recipes/{group}/{name}.yaml); "
                f"valid choices: {', '.join(choices)}")
    return " ".join(msg.split())


def check_values(cfg: DictConfig, _seen: tuple = ()) -> None:
    """Every value against the config's schema (types and ranges: speechssl/schema.py), then
    what depends on more than one value: the upstream's and the task's options (their
    constructors' annotations and checks), a checkpoint's tensors against the model they
    are for, the featurizer layer against the upstream's layer count, the tuning mode, the
    device and the suite. Builds no model with weights and reads no weights."""
    from downstream.base import TASK_RESERVED, TASKS, task_from_config
    from speechssl.export import check_export
    from speechssl.schema import check_annotated, check_config

    if OmegaConf.is_missing(cfg.upstream, "name"):
        raise ConfigError("upstream.name is not set: name your class as "
                          "upstream=module.path:ClassName (docs/plug-in.md)")
    from speechssl.upstream.base import UPSTREAMS

    check_config(cfg, trains_probe=getattr(TASKS.find(cfg.downstream.name), "trainable", True),
                 modality=getattr(UPSTREAMS.find(cfg.upstream.name), "modality", None))
    cls = UPSTREAMS.find(cfg.upstream.name)
    if cfg.get("mode") == "pretrain" and cls is not None and not cls.pretrains():
        raise ConfigError(f"upstream={cfg.upstream.name} has nothing to pre-train (no "
                          "pretrain_loss): mode=pretrain is for self-supervised upstreams")
    from speechssl.runtime import resolve_device
    from speechssl.upstream.base import check_upstream
    from speechssl.upstream.load import upstream_options

    name = cfg.downstream.name
    protocol = cfg.get("protocol", "cpu")
    if protocol != "cpu" and not (RECIPES / "preset" / f"{protocol}_{name}.yaml").is_file():
        have = sorted(p.stem.split("_", 1)[1] for p in (RECIPES / "preset").glob(f"{protocol}_*.yaml"))
        raise ConfigError(f"protocol={protocol} has no preset for downstream={name} "
                          f"(recipes/preset/{protocol}_{name}.yaml); it has: {', '.join(have)}")
    if name in TASKS:
        opts = {k: v for k, v in OmegaConf.to_container(cfg.downstream, resolve=True).items()
                if k not in TASK_RESERVED}
        check_annotated("downstream", name, TASKS.get(name), opts)
    task = task_from_config(cfg.downstream)
    # the upstream's class and options, checked without building it (no weights are read)
    options = upstream_options(cfg.upstream)
    upstream = check_upstream(cfg.upstream.name, **options)
    check_checkpoint(cfg.upstream.get("ckpt"), cfg.upstream.name, upstream, options)
    check_checkpoint_sources(cfg, upstream, _seen)
    check_featurizer_layer((cfg.downstream.get("featurizer") or {}).get("layer"),
                           cfg.upstream.name, upstream, options)
    check_tuning_config(cfg, task, upstream)
    check_export(cfg)
    resolve_device(cfg.device)
    check_suite_config(cfg)


def check_checkpoint_sources(cfg: DictConfig, cls: type, _seen: tuple = ()) -> None:
    """``upstream.pretrain.<option>_from`` (the run that gives an unset checkpoint option,
    speechssl.upstream.load.resolve_checkpoints): the option must be one of the upstream's
    ``checkpoint_options`` and the overrides a list of strings that compose into a valid
    config of their own, checked here before any work (not after the source run)."""
    pc = cfg.upstream.get("pretrain") or {}
    for key in [k for k in pc if str(k).endswith("_from")]:
        source, option = pc[key], str(key)[:-len("_from")]
        where = f"upstream.pretrain.{key}"
        if source is None:
            continue
        allowed = tuple(getattr(cls, "checkpoint_options", ()))
        if option not in allowed:
            raise ConfigError(f"{where}: upstream={cfg.upstream.name} reads no checkpoint "
                              f"option {option!r}; its options: {', '.join(allowed) or 'none'}")
        if (not OmegaConf.is_list(source) or not len(source)
                or not all(isinstance(o, str) for o in source)):
            raise ConfigError(f"{where}={source!r}: a list of overrides, such as "
                              "[upstream=hubert]")
        overrides = [str(o) for o in source]
        if tuple(overrides) in _seen:
            raise ConfigError(f"{where}={overrides}: the runs name each other in a cycle")
        try:
            other = compose_config(overrides)
            check_values(other, _seen=(*_seen, tuple(overrides)))
        except ConfigError as e:
            raise ConfigError(f"{where}={overrides}: {e}") from None


def check_checkpoint(ckpt: str | None, name: str, cls: type, options: dict) -> None:
    """``upstream.ckpt``: a readable safetensors file of this upstream whose tensors fit the
    model the options build: names, and the shapes of parameters (buffers may hold data of
    any size, BERT's tokenizer). Reads the file's header only, and compares it with the
    model built on the meta device; a class that reads files in its constructor (its own
    ``check_options``: hf, torchaudio) is compared when its weights load."""
    if not ckpt:
        return
    import json

    from safetensors import safe_open

    from speechssl.checkpoint import read_metadata
    from speechssl.errors import SpeechSSLError
    from speechssl.upstream.base import meta_model

    path = Path(str(ckpt))  # as speechssl/upstream/load.py opens it
    where = f"upstream.ckpt={ckpt}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file; must be a safetensors checkpoint "
                          f"(mode=pretrain or mode=export writes one)")
    try:
        meta = read_metadata(path)
        with safe_open(str(path), framework="pt") as f:
            saved = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except SpeechSSLError as e:
        raise ConfigError(f"{where}: {str(e).removeprefix(f'{path}: ')}") from None
    except Exception as e:  # noqa: BLE001 (safetensors' header errors)
        raise ConfigError(f"{where}: not a readable safetensors checkpoint ({e})") from None
    if meta.get("upstream") not in (None, name):
        raise ConfigError(f"{where}: a checkpoint of upstream {meta['upstream']!r}, "
                          f"not {name!r}; use upstream={meta['upstream']}")
    model = meta_model(cls, **options)
    if model is None:
        return
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    wanted = {k: list(v.shape) for k, v in model.state_dict().items()}
    try:
        saved_options = json.loads(meta.get("options", "{}"))
    except ValueError:
        saved_options = {}
    differ = [f"upstream.{k}={json.dumps(v)}" for k, v in saved_options.items()
              if k in options and options[k] != v]
    hint = (f"; it was saved with {' '.join(differ[:4])}" if differ else "")
    for key, shape in wanted.items():
        if key not in saved:
            raise ConfigError(f"{where}: has no tensor {key!r}, which upstream {name!r} as "
                              f"configured has{hint}")
        if key in params and saved[key] != shape:
            raise ConfigError(f"{where}: tensor {key!r} is {saved[key]} in the checkpoint but "
                              f"{shape} in upstream {name!r} as configured{hint}")
    extra = [k for k in saved if k not in wanted]
    if extra:
        raise ConfigError(f"{where}: tensor {extra[0]!r} is not in upstream {name!r} as "
                          f"configured{hint}")


def check_featurizer_layer(layer: int | None, name: str, cls: type, options: dict) -> None:
    """``downstream.featurizer.layer`` within the upstream's layers, counted by one forward
    pass of the model built without weights (:func:`speechssl.upstream.base.layer_count`),
    only when a layer is named. An upstream whose count needs its files (hf, torchaudio)
    is checked when its features are (speechssl.featurizer.Featurizer)."""
    if layer is None:
        return
    from speechssl.upstream.base import layer_count

    n = layer_count(cls, **options)
    if n is not None and not -n <= layer < n:
        layers = f"{n} layer{'s' if n != 1 else ''}"
        raise ConfigError(f"downstream.featurizer.layer={layer}: upstream {name!r} has {layers}; "
                          f"must be in [{-n}, {n - 1}] (-1 = the last; null = a learned "
                          f"weighted sum of all layers)")


def check_tuning_config(cfg: DictConfig, task, upstream: type) -> None:
    """`tuning` (recipes/tuning/NAME.yaml): a known mode with valid options, that the
    upstream class declares it can host; mode=compare fine-tunes and trains from scratch."""
    from speechssl import tuning

    tuning.check_tuning(cfg.get("tuning"))
    modes = ["full", "scratch"] if cfg.mode == "compare" else [tuning.mode_of(cfg)]
    for mode in modes:
        tuning.check_supported(upstream, cfg.upstream.name, mode)
        if mode != "frozen" and not task.trainable:
            raise ConfigError(f"downstream {task.name!r} trains no probe (it scores the frozen "
                              f"features), so tuning={mode} has nothing to train; use "
                              f"tuning=frozen" + (" (mode=compare needs a trained probe)"
                                                  if cfg.mode == "compare" else ""))


def check_suite_config(cfg: DictConfig) -> None:
    """`suite` (recipes/suite/NAME.yaml): task list and SUPERB reference points."""
    if cfg.get("suite") is None:
        raise ConfigError("suite is not set: name a suite (suite=superb) in recipes/suite/")
    from speechssl.score import check_suite

    suite = OmegaConf.to_container(cfg.suite, resolve=True)
    check_suite(suite, where=f"suite={suite.get('name') if isinstance(suite, dict) else suite}")
