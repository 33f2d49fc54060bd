"""The CLI end to end through CliRunner: synth -> prepare -> train -> evaluate -> embed -> query,
run the way a person does (from a working folder, relying on the newest-run defaults), and
resuming runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

if TYPE_CHECKING:
    from conftest import Cli


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, cli: Cli) -> Iterator[Path]:
    """A working folder where synth, prepare and train have run once through the CLI."""
    work = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        cli.ok("synth", "cat", "--products", "40", "--image-size", "32", "--seed", "3")
        cli.ok("prepare", "data.root=cat", "--image-cache", "32")
        cli.ok("train", "--config", "tiny.yaml", "--set", "data.root=cat", "train.name=tiny")
        yield work


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(workdir)
    return workdir


def test_pipeline_writes_every_artefact(workdir: Path) -> None:
    cat, run = workdir / "cat", workdir / "runs" / "train" / "tiny"
    assert (cat / "labels" / "pants_train_detect_all.txt").is_file()
    manifest = json.loads((cat / "prepared" / "pants" / "manifest.json").read_text())
    assert manifest["counts"]["train"]["images"] > 0
    assert manifest["image_cache"]["files"]["train"] == "cache_train_32.npy"
    for name in ("config.yaml", "metrics.csv", "curves.png", "weights/last.pt", "weights/best.pt"):
        assert (run / name).is_file(), name


def test_evaluate_embed_query_use_the_newest_run(in_workdir: Path, cli: Cli) -> None:
    run = in_workdir / "runs" / "train" / "tiny"
    result = cli.ok("evaluate", "--device", "cpu", "--breakdown")
    assert f"using {Path('runs/train/tiny/weights/best.pt')}" in result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert {f"recall@{k}" for k in (1, 5, 10, 50, 100)} <= set(metrics)
    assert metrics["num_queries"] > 0 and metrics["breakdown_counts"]
    assert "recall@10" in result.stdout and "colour words" in result.stdout

    embedded = cli.json("embed", "cat/prepared/pants", "--device", "cpu", "data.num_workers=0")
    assert Path(embedded["index_dir"]) == Path("runs/train/tiny/index")
    assert embedded["added"] == embedded["total"] == metrics["gallery_size"]

    image = next((in_workdir / "cat" / "women").rglob("*.jpeg"))
    out = cli.json("query", image, "--change", "black:green", "-k", "5", "--save", "sheet.png")
    (answer,) = out["queries"]
    assert set(answer) == {"image", "texts", "source_caption", "target_caption", "warnings"} | {
        "results"
    }
    assert answer["texts"] == ["change black to green"]
    assert len(answer["results"]) == 5
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    with Image.open(in_workdir / "sheet.png") as png:
        assert png.format == "PNG"


def test_train_resume_continues_the_newest_or_the_named_run(in_workdir: Path, cli: Cli) -> None:
    first = cli.json(
        "train", "--config", "tiny.yaml", "data.root=cat", "train.name=again", "train.iterations=2"
    )
    assert first["iterations"] == 2
    resumed = cli.json("train", "--resume", "train.iterations=3")  # the newest run: again
    assert Path(resumed["run_dir"]) == Path(first["run_dir"])
    assert resumed["iterations"] == 3
    named = cli.json("train", "--resume", "runs/train/tiny/weights/last.pt", "train.iterations=5")
    assert Path(named["run_dir"]) == Path("runs/train/tiny") and named["iterations"] == 5


def test_train_json_describes_the_run(in_workdir: Path, cli: Cli) -> None:
    data = cli.json(
        "train", "--config", "tiny.yaml", "data.root=cat", "train.name=json", "train.iterations=1"
    )
    assert {"run_dir", "last", "best", "iterations", "metrics", "fingerprint"} <= set(data)
    assert Path(data["best"]).is_file() and "recall@10" in data["metrics"]


def test_train_errors_are_one_line(in_workdir: Path, cli: Cli, tmp_path: Path) -> None:
    cli.fails("train", "train.nonsense=1", needle="train.nonsense")
    cli.fails("train", "train.lr=abc", needle="train.lr")
    cli.fails("train", "stray", needle="'stray' is not of the form section.key=value")
    cli.fails("train", "--device", "cuda:7", "data.root=cat", needle="cuda:7")
    cli.fails("train", "--device", "tpu", needle="unknown device 'tpu'")
    cli.fails("train", "--resume", "nowhere", needle="no config.yaml in nowhere")
    cli.fails("train", "--resume", "--out", tmp_path, needle="stylequery train")


@pytest.mark.slow
def test_train_under_torchrun_prints_one_result(in_workdir: Path) -> None:
    """Two processes on gloo: every rank trains, only rank 0 prints the JSON result."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", "-m", "stylequery", "train", "--device", "cpu", "--json"]
    command += ["--config", "tiny.yaml", "data.root=cat", "train.name=ddp", "train.iterations=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["iterations"] == 2 and Path(result["best"]).is_file()
