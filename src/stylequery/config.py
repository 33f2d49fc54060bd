"""Typed configuration: dataclass defaults < YAML file < ``section.key=value`` overrides.

``load_config(path, overrides)`` is the one entry point. Values are converted to each field's
declared type (PyYAML reads ``1e-3`` as a string, so a float field converts it), and an unknown
key or a value that does not convert raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from stylequery.errors import ConfigError
from stylequery.fileio import write_text

_OVERRIDE = re.compile(r"\s*[A-Za-z_]\w*\.[A-Za-z_]\w*\s*=.*", re.DOTALL)

RECALL_MEAN = "recall_mean"  # train.best_metric: the mean of every recall@K of eval.ks


Check = tuple[Callable[[Any], bool], str]  # a value test and the allowed range in words
AT_LEAST_1: Check = (lambda v: v >= 1, "must be >= 1")
AT_LEAST_0: Check = (lambda v: v >= 0, "must be >= 0")
POSITIVE: Check = (lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")
NON_NEGATIVE: Check = (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")
FRACTION: Check = (lambda v: 0 <= v < 1, "must be in [0, 1)")
IMAGE_SIDE: Check = (lambda v: 16 <= v <= 4096, "must be in [16, 4096]")


Precision = Literal["auto", "fp32", "bf16", "fp16"]
HALF: Check = (lambda v: 0 <= v <= 0.5, "must be in [0, 0.5]")
STAGES: Check = (lambda v: 0 <= v <= 4, "must be in 0..4")


def setting(default: Any, help: str, check: Check | None = None) -> Any:
    """A config field with its help text (shown by ``stylequery config`` and in run configs).

    ``check`` is the range a number (or each number of a list) must lie in, tested by
    :func:`validate` when the config is resolved.
    """
    metadata = {"help": help, "check": check}
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    root: str = setting("data/synthetic", "catalogue root: labels/ and women/ live here")
    prepared_dir: str = setting("", "prepared folder; empty: <root>/prepared/<subset name>")
    categories: list[str] = setting(["pants"], "label-file categories, or [all]")
    subcategories: list[str] = setting([], "keep only these subcategories; empty: all")
    modification_template: str = setting(
        "change {src} to {tgt}", 'modification text; the reference: "replace {src} with {tgt}"'
    )
    image_size: int = setting(
        224, "square side fed to the CNN (shorter side resized, centre crop)", IMAGE_SIDE
    )
    use_image_cache: bool = setting(True, "read the prepared uint8 cache of this size if any")
    hflip: bool = setting(False, "random horizontal flip of training images")
    num_workers: int = setting(2, "image-loading worker processes", AT_LEAST_0)
    seed: int = setting(0, "seed of test-query generation and of the validation split")
    val_fraction: float = setting(
        0.1,
        "share of training images carved out (whole products) as validation, to pick best.pt",
        HALF,
    )
    max_image_pixels: int = setting(
        40_000_000, "images with more pixels are refused before decoding", AT_LEAST_1
    )


@dataclass
class ModelConfig:
    embed_dim: int = setting(
        512, "size of every embedding: image, text, composed query", AT_LEAST_1
    )
    pretrained: str = setting("none", "CNN weights: none, imagenet, or a path to a .pth state dict")
    word_dim: int = setting(512, "word embedding size", AT_LEAST_1)
    text_hidden: int = setting(512, "LSTM hidden size", AT_LEAST_1)
    composer: str = setting("concat", "concat | tirg | gated | image_only | text_only")
    dropout: float = setting(0.1, "dropout in the composer", FRACTION)
    freeze_image_encoder: bool = setting(
        False, "cache backbone features once and train only the rest"
    )
    frozen_stages: int = setting(
        0, "leading ResNet stages (1: stem+layer1 .. 4: all) kept frozen, output cached", STAGES
    )


@dataclass
class TrainConfig:
    name: str = setting("", "run folder name under the runs folder; empty: run1, run2, ...")
    batch_size: int = setting(
        32, "training pairs per batch (per process under torchrun)", AT_LEAST_1
    )
    lr: float = setting(1e-2, "SGD learning rate", POSITIVE)
    momentum: float = setting(0.9, "SGD momentum", FRACTION)
    weight_decay: float = setting(1e-6, "SGD weight decay", NON_NEGATIVE)
    backbone_lr_mult: float = setting(
        0.1, "learning-rate multiplier for a pretrained backbone", NON_NEGATIVE
    )
    lr_decay_every: int = setting(
        0, "iterations between step decays (lr_schedule=step); 0 disables", AT_LEAST_0
    )
    lr_decay_factor: float = setting(0.1, "learning-rate factor at each decay", POSITIVE)
    lr_schedule: Literal["step", "cosine"] = setting(
        "step", "step, or cosine: decays to 0 over the run (iterations or max_minutes)"
    )
    iterations: int = setting(0, "run length in iterations; 0: use epochs", AT_LEAST_0)
    max_minutes: float = setting(0.0, "wall-clock budget of training; 0: none", NON_NEGATIVE)
    epochs: float = setting(1.0, "run length in epochs over the usable source images", POSITIVE)
    loss: str = setting("batch_classification", "batch_classification | soft_triplet")
    loss_scale: float = setting(4.0, "initial learnable scale of the cosine logits", POSITIVE)
    precision: Precision = setting(
        "auto",
        "auto (bf16 where the hardware runs it natively, else fp32), fp32, bf16 (autocast on "
        "CPU or CUDA) or fp16 (CUDA)",
    )
    channels_last: bool = setting(True, "channels_last memory format for the CNN")
    seed: int = setting(0, "seed of initialisation and data order")
    eval_every: int = setting(
        1000, "iterations between validation runs; 0: only at the end", AT_LEAST_0
    )
    eval_every_minutes: float = setting(
        0.0, "also validate when this many minutes passed; 0: off", NON_NEGATIVE
    )
    eval_max_queries: int = setting(0, "cap validation queries for speed; 0: all", AT_LEAST_0)
    best_metric: str = setting(
        "recall_mean",
        "metric on the validation queries that picks best.pt: recall@K (a K of eval.ks) or "
        "recall_mean, the mean of every recall@K",
    )
    log_every: int = setting(50, "iterations between plain log lines (off a terminal)", AT_LEAST_1)
    checkpoint_every: int = setting(
        1000, "iterations between last.pt saves; 0: only at the end", AT_LEAST_0
    )


@dataclass
class EvalConfig:
    batch_size: int = setting(64, "images per batch when encoding (evaluate, embed)", AT_LEAST_1)
    ks: list[int] = setting([1, 5, 10, 50, 100], "the K of each recall@K", AT_LEAST_1)
    split: Literal["train", "val", "test"] = setting("test", "split of the prepared folder to use")
    max_queries: int = setting(0, "cap the number of queries; 0: all", AT_LEAST_0)


@dataclass
class IndexConfig:
    nlist: int = setting(0, "faiss build: inverted lists; 0: about 2 sqrt(gallery size)")
    nprobe: int = setting(
        0, "faiss search: lists visited per query (more: better recall, slower); 0: stored"
    )
    refine: int = setting(0, "faiss search: candidates re-scored exactly per result; 0: stored")
    hnsw_ef: int = setting(0, "qdrant server search: HNSW beam width; 0: 256")
    exact: bool = setting(False, "qdrant server search: exhaustive instead of HNSW")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)


def find_config(name: str | Path) -> Path:
    """Resolve a config path: as given, else a config shipped with the package by name."""
    path = Path(name)
    if path.is_file():
        return path
    candidates = [f"{path.name}", f"{path.name}.yaml"]
    shipped = resources.files("stylequery") / "configs"
    # An editable install has no packaged copy: the repository's configs/ folder serves.
    repo = Path(__file__).resolve().parents[2] / "configs"
    for folder in (shipped, repo):
        for candidate in candidates:
            found = folder / candidate
            if found.is_file():
                return Path(str(found))
    raise ConfigError(f"config file not found: {name} (nor a shipped config of that name)")


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: Config | None = None,
) -> Config:
    """Build a Config from defaults, an optional YAML file and ``section.key=value`` overrides.

    ``base`` replaces the dataclass defaults (e.g. the config stored in a checkpoint).
    """
    cfg = copy.deepcopy(base) if base is not None else Config()
    if path is not None:
        config_path = find_config(path)
        try:
            data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{config_path}: cannot read YAML: {exc}".splitlines()[0]) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{config_path}: top level must be a mapping of sections")
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{config_path}: section '{section}' must be a mapping")
            for key, value in values.items():
                _set(cfg, f"{section}.{key}", value)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        _set(cfg, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Check every number against its field's range (see :func:`setting`).

    Raises:
        ConfigError: One line naming the first key out of range and the range allowed.
    """
    for section in fields(cfg):
        values = getattr(cfg, section.name)
        for key in fields(values):
            check = key.metadata.get("check")
            value = getattr(values, key.name)
            if check is None:
                continue
            items = value if isinstance(value, list) else [value]
            if isinstance(value, list) and not value:
                raise ConfigError(
                    f"config key '{section.name}.{key.name}': must be a non-empty list"
                )
            if not all(check[0](item) for item in items):
                raise ConfigError(
                    f"config key '{section.name}.{key.name}': {value!r} is out of range "
                    f"({check[1]})"
                )


def check_best_metric(cfg: Config) -> None:
    """Training's check that ``train.best_metric`` is a metric validation reports (evaluating
    with other ``eval.ks`` stays allowed).

    Raises:
        ConfigError: One line naming the key and the metrics allowed.
    """
    choices = [f"recall@{k}" for k in cfg.eval.ks] + [RECALL_MEAN]
    if cfg.train.best_metric not in choices:
        raise ConfigError(
            f"config key 'train.best_metric': {cfg.train.best_metric!r} is not one of "
            f"{', '.join(choices)}"
        )


def split_overrides(args: list[str], max_positional: int = 0) -> tuple[list[str], list[str]]:
    """Split command-line words into plain arguments and ``section.key=value`` overrides.

    At most ``max_positional`` plain arguments are allowed; another one is a ConfigError.
    """
    plain = [a for a in args if not _OVERRIDE.fullmatch(a)]
    if len(plain) > max_positional:
        raise ConfigError(f"'{plain[max_positional]}' is not of the form section.key=value")
    return plain, [a for a in args if _OVERRIDE.fullmatch(a)]


def _set(cfg: Config, dotted: str, value: Any) -> None:
    section_name, _, key = dotted.partition(".")
    section = getattr(cfg, section_name, None) if section_name in _names(cfg) else None
    if section is None or not key:
        raise ConfigError(f"unknown config key '{dotted}'")
    if key not in _names(section):
        raise ConfigError(f"unknown config key '{dotted}'")
    hint = typing.get_type_hints(type(section))[key]
    setattr(section, key, _convert(value, hint, dotted))


def _names(obj: Any) -> set[str]:
    return {f.name for f in fields(obj)}


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(choices)}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in get_args(hint):
            return None
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is list:
        (item_type,) = get_args(hint)
        items = value if isinstance(value, list) else [value]
        return [_convert(v, item_type, key) for v in items]
    try:
        if hint is bool:
            return _to_bool(value)
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if hint is str and isinstance(value, (dict, list)):
            raise ValueError
        return hint(value)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"config key '{key}': {value!r} is not a valid {name}") from None


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "yes",
        "on",
        "1",
        "false",
        "no",
        "off",
        "0",
    ):
        return value.lower() in ("true", "yes", "on", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of a Config (for YAML, JSON and checkpoints)."""
    return asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from :func:`config_to_dict` output, tolerating keys added later."""
    cfg = Config()
    for section, values in data.items():
        if section not in _names(cfg):
            continue
        known = _names(getattr(cfg, section))
        for key, value in values.items():
            if key in known:
                _set(cfg, f"{section}.{key}", value)
    return cfg


def config_yaml(cfg: Config) -> str:
    """The config as YAML that :func:`load_config` reads back, each key under its help comment."""
    lines: list[str] = []
    for section in fields(cfg):
        lines.append(f"{section.name}:")
        values = getattr(cfg, section.name)
        for key in fields(values):
            lines.append(f"  # {key.metadata.get('help', '')}".rstrip())
            lines.append(f"  {key.name}: {_yaml_value(getattr(values, key.name))}")
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any) -> str:
    """One value as inline YAML (lists in flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").strip()


def dump_config(cfg: Config, path: Path) -> Path:
    """Write the resolved config as commented YAML, atomically."""
    return write_text(path, config_yaml(cfg))


def replace(cfg: Config, **sections: Any) -> Config:
    """A copy of ``cfg`` with whole sections replaced (configs are treated as read-only)."""
    return dataclasses.replace(cfg, **sections)
