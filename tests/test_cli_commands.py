"""Each command's --help, --json and one-line errors, on the shared tiny fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from stylequery.config import load_config
from stylequery.data import load_prepared
from stylequery.index import EmbeddingIndex

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Cli

COMMANDS = ["config", "synth", "prepare", "train", "evaluate", "embed", "query", "export"]
COMMANDS += ["demo", "serve", "index"]  # index: a group (info, convert: tests/test_index_cli.py)
WITH_JSON = ["synth", "prepare", "train", "evaluate", "embed", "query", "export"]
WITH_SETTINGS = ["config", "prepare", "train", "evaluate", "embed", "query", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str, cli: Cli) -> None:
    text = cli.ok(command, "--help").stdout
    assert f"stylequery {command}" in text or "Usage:" in text
    assert ("--json" in text) == (command in WITH_JSON)
    for option in ("--config", "--set"):
        assert (option in text) == (command in WITH_SETTINGS), option


def test_every_command_is_covered_here() -> None:
    """A new command must join the lists above (and so get its --help, --json, error tests)."""
    import typer.main

    from stylequery.cli import app

    group = typer.main.get_command(app)
    assert sorted(group.commands) == sorted(COMMANDS)  # type: ignore[attr-defined]


def test_top_level_help_lists_every_command(cli: Cli) -> None:
    text = cli.ok("--help").stdout
    assert all(command in text for command in COMMANDS)
    assert "--version" in text and "--install-completion" in text


# --- config ----------------------------------------------------------------------------------


def test_config_prints_the_resolved_settings_with_help(cli: Cli, tmp_path: Path) -> None:
    args = ["--config", "tiny.yaml", "--set", "train.lr=0.5", "model.composer=tirg"]
    text = cli.ok("config", *args).stdout
    assert "# size of every embedding" in text and "  embed_dim: 16" in text
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert load_config(path) == load_config("tiny.yaml", ["train.lr=0.5", "model.composer=tirg"])
    assert yaml.safe_load(text)["train"]["lr"] == 0.5


def test_config_errors(cli: Cli) -> None:
    cli.fails("config", "model.nope=1", needle="unknown config key 'model.nope'")
    cli.fails("config", "eval.split=valid", needle="eval.split")
    cli.fails("config", "nokey", needle="'nokey' is not of the form section.key=value")
    cli.fails("config", "--config", "missing.yaml", needle="missing.yaml")


# --- synth and prepare -------------------------------------------------------------------------


def test_synth_json(cli: Cli, tmp_path: Path) -> None:
    data = cli.json("synth", tmp_path / "cat", "--products", "6", "--image-size", "16")
    assert data["products"] == 6 and Path(data["out"]) == tmp_path / "cat"
    assert data["images"]["train"] + data["images"]["test"] == len(
        list((tmp_path / "cat" / "women").rglob("*.jpeg"))
    )


def test_synth_errors(cli: Cli, tmp_path: Path) -> None:
    cli.fails("synth", tmp_path / "a", "--products", "1", needle="products >= 2")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cli.fails("synth", tmp_path / "full", needle="not empty")


def test_prepare_json_and_settings(cli: Cli, tiny_catalogue_copy: Path) -> None:
    out = tiny_catalogue_copy / "elsewhere"
    data = cli.json(
        "prepare", "--set", f"data.root={tiny_catalogue_copy}", f"data.prepared_dir={out}"
    )
    assert Path(data["out"]) == out and (out / "manifest.json").is_file()
    assert data["images"]["train"] > 0 and data["vocab_size"] > 1


def test_prepare_errors(cli: Cli, tiny_catalogue: Path, tmp_path: Path) -> None:
    cli.fails("prepare", f"data.root={tmp_path / 'nowhere'}", needle="labels")
    cli.fails("prepare", "data.categories=[shoes]", f"data.root={tiny_catalogue}", needle="shoes")


# --- evaluate and embed ---------------------------------------------------------------------


def test_evaluate_json(cli: Cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    data = cli.json(
        "evaluate", "--checkpoint", tiny_checkpoint, "--out", out, "eval.max_queries=5", "-v"
    )
    assert data["num_queries"] == 5 and data["split"] == "test"
    assert [k for k in data if k.startswith("recall@")] == [
        f"recall@{k}" for k in (1, 5, 10, 50, 100)
    ]
    assert out.is_file()


def test_evaluate_errors(
    cli: Cli, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.fails("evaluate", "--checkpoint", tmp_path / "nope.pt", needle="nope.pt")
    cli.fails("evaluate", "--checkpoint", tiny_checkpoint, "eval.nope=1", needle="eval.nope")
    monkeypatch.chdir(tmp_path)
    cli.fails("evaluate", needle="stylequery train")


def test_embed_json_and_settings(
    cli: Cli, tiny_checkpoint: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    args = ["--checkpoint", tiny_checkpoint, "--out", tmp_path / "idx", "--float16"]
    settings = ["eval.split=train", "eval.batch_size=4", "data.num_workers=0"]
    data = cli.json("embed", tiny_prepared, *args, *settings)
    index = EmbeddingIndex.load(tmp_path / "idx")
    train = len(load_prepared(tiny_prepared).split("train"))
    assert data["added"] == data["total"] == len(index) == train
    assert index.embeddings.dtype.name == "float16"


def test_embed_errors(cli: Cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = ["--checkpoint", tiny_checkpoint]
    cli.fails("embed", tmp_path / "none", *ckpt, needle="none")
    cli.fails("embed", tmp_path, *ckpt, "data.num_workers=x", needle="data.num_workers")
    loose = tmp_path / "loose.pt"
    shutil.copy(tiny_checkpoint, loose)
    cli.fails("embed", tmp_path, "--checkpoint", loose, needle="--out")


# --- query --------------------------------------------------------------------------------------


def test_query_several_images_and_a_folder(
    cli: Cli, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    gallery = EmbeddingIndex.load(tiny_index).paths
    folder = tmp_path / "more"
    folder.mkdir()
    for name in ("b.jpeg", "a.jpeg"):
        shutil.copy(gallery[0], folder / name)
    args = [gallery[1], folder, gallery[2], "--change", "black:green", "-k", "3"]
    data = cli.json("query", *args, "--checkpoint", tiny_checkpoint)
    assert Path(data["index"]) == tiny_index
    images = [Path(q["image"]) for q in data["queries"]]
    assert images == [Path(gallery[1]), folder / "a.jpeg", folder / "b.jpeg", Path(gallery[2])]
    assert all(len(q["results"]) == 3 for q in data["queries"])
    a, b = data["queries"][1:3]
    assert a["results"] == b["results"]  # the same pixels rank the same


def test_query_table_and_sheets(
    cli: Cli, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    gallery = EmbeddingIndex.load(tiny_index).paths
    args = [gallery[0], gallery[1], "--text", "change blak to red", "--save", tmp_path / "s.png"]
    result = cli.ok("query", *args, "--checkpoint", tiny_checkpoint, "--index", tiny_index)
    assert result.stdout.count("rank") == 2 and "change blak to red" in result.stdout
    assert "warning: 'blak' is not in the vocabulary" in result.stderr
    assert (tmp_path / "s-1.png").is_file() and (tmp_path / "s-2.png").is_file()


def test_query_errors(
    cli: Cli,
    tiny_checkpoint: Path,
    tiny_index: Path,
    make_checkpoint: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = EmbeddingIndex.load(tiny_index).paths[0]
    ckpt = ["--checkpoint", tiny_checkpoint]
    cli.fails("query", tmp_path / "missing.jpeg", "--change", "a:b", *ckpt, needle="missing.jpeg")
    cli.fails("query", image, "--change", "black-green", *ckpt, needle="FROM:TO")
    cli.fails("query", image, *ckpt, needle="--change")
    corrupt = tmp_path / "corrupt.jpeg"
    corrupt.write_bytes(b"not a jpeg at all")
    cli.fails("query", corrupt, "--change", "black:green", *ckpt, needle="corrupt.jpeg")
    (tmp_path / "empty").mkdir()
    cli.fails("query", tmp_path / "empty", "--change", "a:b", *ckpt, needle="no .jpg")
    other = make_checkpoint(tmp_path / "other" / "weights" / "best.pt", seed=5)
    cli.fails("query", image, "--change", "a:b", "--checkpoint", other, needle="no index at")
    mismatch = ["--checkpoint", other, "--index", tiny_index]
    cli.fails("query", image, "--change", "a:b", *mismatch, needle="stylequery embed")
    monkeypatch.chdir(tmp_path)
    cli.fails("query", image, "--change", "black:green", needle="stylequery train")


# --- export -------------------------------------------------------------------------------------


def test_export_is_enough_for_embed_and_query(
    cli: Cli, tiny_checkpoint: Path, tiny_prepared: Path, tiny_index: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    data = cli.json("export", tiny_checkpoint, "--out", export)
    assert Path(data["export"]) == export
    assert sorted(p.name for p in export.iterdir()) == ["model.safetensors", "stylequery.json"]
    meta = json.loads((export / "stylequery.json").read_text())
    assert not {"optimizer", "scheduler", "rng", "training"} & set(meta)
    cli.ok("export", tiny_checkpoint, "--out", export)  # an earlier export is replaced

    embed = [tiny_prepared, "--checkpoint", export, "--out", tmp_path / "idx", "data.num_workers=0"]
    embedded = cli.json("embed", *embed)
    assert embedded["total"] == len(EmbeddingIndex.load(tiny_index))
    image = EmbeddingIndex.load(tiny_index).paths[0]
    query = [image, "--change", "black:green", "-k", "4"]
    from_export = cli.json("query", *query, "--checkpoint", export, "--index", tmp_path / "idx")
    from_pt = cli.json("query", *query, "--checkpoint", tiny_checkpoint)
    hits = [
        [(r["path"], round(r["score"], 4)) for r in d["queries"][0]["results"]]
        for d in (from_export, from_pt)
    ]
    assert hits[0] == hits[1]


def test_export_errors(cli: Cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    cli.fails("export", tmp_path / "nope.pt", "--out", tmp_path / "e", needle="nope.pt")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    cli.fails(
        "export", tiny_checkpoint, "--out", tmp_path / "mine", needle="not a stylequery export"
    )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_serve_errors(cli: Cli, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose.pt"
    shutil.copy(tiny_checkpoint, loose)
    cli.fails("serve", "--checkpoint", loose, needle="no index beside")
    missing = ["--checkpoint", tmp_path / "nope.pt", "--index", tiny_index]
    message = cli.fails("serve", *missing, needle="nope.pt")
    assert "index" not in message


def test_demo_errors(cli: Cli, tmp_path: Path) -> None:
    cli.fails("demo", "--out", tmp_path / "d", "--device", "cuda:7", needle="cuda:7")
    assert not (tmp_path / "d").exists()
