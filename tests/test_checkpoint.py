"""Exports: safetensors weights plus the checkpoint's record, loadable wherever a .pt is."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stylequery.checkpoint import (
    export_model,
    load_checkpoint,
    load_model,
    read_config,
)
from stylequery.errors import CheckpointError
from stylequery.inference import QueryEngine, embed

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoint(
    make_checkpoint: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny bf16 checkpoint that carries resume state and metrics, like last.pt."""
    path = make_checkpoint(tmp_path_factory.mktemp("export") / "last.pt", 0, "train.precision=bf16")
    payload = load_checkpoint(path)
    optimizer = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.9)
    payload.update(iteration=7, metrics={"recall@10": 0.5})
    payload["training"] = {"optimizer": optimizer.state_dict()}
    torch.save(payload, path)
    return path


def test_export_holds_weights_and_record_without_training_state(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = export_model(checkpoint, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "stylequery.json"]
    meta = json.loads((out / "stylequery.json").read_text())
    payload = load_checkpoint(checkpoint)
    assert meta["fingerprint"] == payload["fingerprint"]
    assert meta["vocab"] == payload["vocab"] and meta["config"] == payload["config"]
    assert meta["encoding"] == payload["encoding"] and meta["iteration"] == 7
    assert "training" not in meta and "optimizer" not in json.dumps(meta)
    assert read_config(out) == read_config(checkpoint)


def test_export_loads_as_the_same_model(checkpoint: Path, tmp_path: Path) -> None:
    out = export_model(checkpoint, tmp_path / "export")
    from_pt, from_export = load_model(checkpoint, CPU), load_model(out, CPU)
    assert from_export.fingerprint == from_pt.fingerprint
    assert from_export.encoding == from_pt.encoding and from_export.vocab == from_pt.vocab
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = from_pt.model.encode_image(images)
        b = from_export.model.encode_image(images)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_embed_and_query_work_from_an_export(
    checkpoint: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    out = export_model(checkpoint, tmp_path / "export")
    embed(checkpoint, tiny_prepared, tmp_path / "index", CPU, num_workers=0)
    # An index embedded with the .pt is queried with the export: same fingerprint.
    from_export = QueryEngine(out, tmp_path / "index", CPU).query(3, [("black", "green")], k=4)
    from_pt = QueryEngine(checkpoint, tmp_path / "index", CPU).query(3, [("black", "green")], k=4)
    assert from_export.to_json() == from_pt.to_json()


def test_export_replaces_an_earlier_one_whole(checkpoint: Path, tmp_path: Path) -> None:
    out = export_model(checkpoint, tmp_path / "export")
    (out / "stale.txt").write_text("old")
    export_model(checkpoint, out)
    assert not (out / "stale.txt").exists()


def test_export_refuses_a_folder_that_is_not_an_export(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a stylequery export"):
        export_model(checkpoint, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_tampered_export_weights_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    out = export_model(checkpoint, tmp_path / "export")
    meta = json.loads((out / "stylequery.json").read_text())
    meta["fingerprint"] = "0" * 64
    (out / "stylequery.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the recorded fingerprint"):
        load_model(out, CPU)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "not a checkpoint file nor an export folder"),
        (lambda d: (d / "stylequery.json").write_text("{"), "stylequery.json: unreadable"),
        (lambda d: (d / "stylequery.json").write_text("{}"), "not a stylequery export"),
    ],
)
def test_bad_export_folders_name_the_problem(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path, CPU)


def test_export_without_weights_file(checkpoint: Path, tmp_path: Path) -> None:
    out = export_model(checkpoint, tmp_path / "export")
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_model(out, CPU)
