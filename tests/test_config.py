"""Config precedence, type conversion and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from stylequery import runtime
from stylequery.config import (
    Config,
    check_best_metric,
    config_from_dict,
    config_to_dict,
    dump_config,
    find_config,
    load_config,
)
from stylequery.errors import ConfigError


def test_defaults_match_the_reference_recipe() -> None:
    cfg = load_config()
    assert cfg.train.batch_size == 32
    assert cfg.train.lr == pytest.approx(1e-2)
    assert cfg.train.weight_decay == pytest.approx(1e-6)
    assert cfg.model.embed_dim == 512
    assert cfg.data.categories == ["pants"]


def test_precedence_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  batch_size: 16\nmodel:\n  composer: tirg\n")
    cfg = load_config(path, ["train.lr=0.005"])
    assert cfg.train.lr == pytest.approx(0.005)  # override beats YAML
    assert cfg.train.batch_size == 16  # YAML beats default
    assert cfg.model.composer == "tirg"
    assert cfg.train.momentum == pytest.approx(0.9)  # default kept


def test_yaml_exponent_string_becomes_float(tmp_path: Path) -> None:
    # PyYAML reads "1e-3" (no dot) as a string; the float field converts it.
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "1e-3"
    assert load_config(path).train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.precision=bf16", "bf16"),
        ("model.freeze_image_encoder=true", True),
        ("data.categories=[pants,skirt]", ["pants", "skirt"]),
        ("data.categories=all", ["all"]),
        ("eval.ks=[1,10]", [1, 10]),
        ("train.iterations=12", 12),
    ],
)
def test_override_types(override: str, expected: object) -> None:
    cfg = load_config(None, [override])
    section, key = override.split("=")[0].split(".")
    assert getattr(getattr(cfg, section), key) == expected


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.nope=1", "train.nope"),
        ("nosection.lr=1", "nosection.lr"),
        ("train.batch_size=big", "train.batch_size"),
        ("train.batch_size=1.5", "train.batch_size"),
        ("train.precision=fp8", "train.precision"),
        ("model.freeze_image_encoder=maybe", "model.freeze_image_encoder"),
    ],
)
def test_bad_overrides_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("metric", ["recall_mean", "recall@5"])
def test_best_metric_is_a_recall_of_eval_ks_or_their_mean(metric: str) -> None:
    check_best_metric(load_config(None, [f"train.best_metric={metric}"]))
    cfg = load_config(None, ["train.best_metric=recall@5", "eval.ks=[1,10]"])  # evaluating: fine
    with pytest.raises(ConfigError, match=r"train\.best_metric.*recall@1, recall@10, recall_mean"):
        check_best_metric(cfg)


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["train.lr"])


def test_unknown_yaml_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        load_config(path)


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-config.yaml")


@pytest.mark.parametrize("name", ["p100.yaml", "tirg.yaml", "cpu.yaml", "p100"])
def test_shipped_configs_found_by_name_from_any_folder(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(name).is_file()
    load_config(name)  # every shipped config is valid


def test_p100_reproduces_the_reference() -> None:
    cfg = load_config("p100.yaml")
    assert (cfg.model.composer, cfg.model.pretrained) == ("concat", "imagenet")
    assert (cfg.data.image_size, cfg.train.batch_size, cfg.train.iterations) == (224, 32, 150243)
    tirg = load_config("tirg.yaml")
    assert (tirg.model.composer, tirg.train.iterations, tirg.train.lr_decay_every) == (
        "tirg",
        160000,
        50000,
    )


def test_dump_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=0.003", "model.composer=tirg", "eval.ks=[1,5]"])
    path = dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_base_config_replaces_defaults() -> None:
    base = load_config(None, ["data.image_size=64"])
    cfg = load_config(None, ["eval.split=train"], base=base)
    assert (cfg.data.image_size, cfg.eval.split) == (64, "train")
    assert base.eval.split == "test"  # the base is not modified
    assert Config().data.image_size == 224


def test_auto_precision_is_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert runtime.resolve_precision(cpu, "fp32") == "fp32"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_precision(cpu, "auto") == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert runtime.resolve_precision(cpu, "auto") == "fp32"
    assert runtime.resolve_precision(torch.device("meta"), "auto") == "fp32"
    assert load_config(None, ["train.precision=auto"]).train.precision == "auto"
