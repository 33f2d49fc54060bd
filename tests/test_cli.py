"""The CLI end to end through CliRunner: synth -> prepare -> train -> evaluate -> embed -> query,
and the one-line errors a person sees for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from stylequery.cli import app

runner = CliRunner()

TINY = [
    "--set", "data.image_size=32", "--set", "model.embed_dim=16", "--set", "model.word_dim=16",
    "--set", "model.text_hidden=16", "--set", "train.batch_size=8", "--set", "data.num_workers=0",
    "--set", "train.eval_every=0",
]  # fmt: skip


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


def _fails(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, f"{args}: exit {result.exit_code}: {result.output}"
    message = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the whole pipeline has run once through the CLI."""
    work = tmp_path_factory.mktemp("cli")
    cat = work / "cat"
    _ok(["synth", str(cat), "--products", "40", "--image-size", "32", "--seed", "3"])
    _ok(["prepare", "--root", str(cat), "--image-cache", "32"])
    _ok(
        [
            "train",
            "--set",
            f"data.root={cat}",
            *TINY,
            "--out",
            str(work / "runs"),
            "train.iterations=4",
            "train.name=tiny",
        ]
    )
    return work


def test_pipeline_writes_every_artefact(workdir: Path) -> None:
    cat, run = workdir / "cat", workdir / "runs" / "tiny"
    assert (cat / "labels" / "pants_train_detect_all.txt").is_file()
    manifest = json.loads((cat / "prepared" / "pants" / "manifest.json").read_text())
    assert manifest
    for name in ("config.yaml", "metrics.csv", "curves.png", "weights/last.pt", "weights/best.pt"):
        assert (run / name).is_file(), name


def test_evaluate_embed_query(workdir: Path, tmp_path: Path) -> None:
    run = workdir / "runs" / "tiny"
    best = run / "weights" / "best.pt"
    _ok(["evaluate", str(best), "--device", "cpu", "--breakdown"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert {f"recall@{k}" for k in (1, 5, 10, 50, 100)} <= set(metrics)
    assert metrics["num_queries"] > 0 and metrics["gallery_size"] > 0
    _ok(
        [
            "embed",
            str(workdir / "cat" / "prepared" / "pants"),
            "--checkpoint",
            str(best),
            "--device",
            "cpu",
            "--workers",
            "0",
        ]
    )
    assert (run / "index" / "index.json").is_file()
    image = next((workdir / "cat" / "women").rglob("*.jpeg"))
    sheet = tmp_path / "results.png"
    out = _ok(
        [
            "query",
            str(image),
            "--change",
            "black:green",
            "--checkpoint",
            str(best),
            "--k",
            "5",
            "--json",
            "--save",
            str(sheet),
            "--device",
            "cpu",
        ]
    )
    data = json.loads(out)
    assert set(data) == {
        "image",
        "texts",
        "source_caption",
        "target_caption",
        "warnings",
        "results",
    }
    assert data["texts"] == ["change black to green"]
    assert len(data["results"]) == 5
    assert set(data["results"][0]) == {"rank", "score", "path", "caption", "hit"}
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    with Image.open(sheet) as png:
        assert png.format == "PNG"


def test_query_uses_the_newest_run_by_default(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ensure_index(workdir)
    (workdir / "runs_home" / "runs").mkdir(parents=True, exist_ok=True)
    link = workdir / "runs_home" / "runs" / "train"
    if not link.exists():
        link.symlink_to(workdir / "runs")
    monkeypatch.chdir(workdir / "runs_home")
    image = next((workdir / "cat" / "women").rglob("*.jpeg"))
    out = _ok(["query", str(image), "--change", "black:green", "--device", "cpu"])
    assert "using" in out and "best.pt" in out


def test_query_without_any_run_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    _fails(["query", str(image), "--change", "black:green"], "stylequery train")


def test_bad_inputs_are_one_line_errors(workdir: Path, tmp_path: Path) -> None:
    best = str(workdir / "runs" / "tiny" / "weights" / "best.pt")
    image = str(next((workdir / "cat" / "women").rglob("*.jpeg")))
    _fails(
        ["query", str(tmp_path / "missing.jpeg"), "--change", "a:b", "--checkpoint", best],
        "missing.jpeg",
    )
    _fails(["query", image, "--change", "black-green", "--checkpoint", best], "FROM:TO")
    corrupt = tmp_path / "corrupt.jpeg"
    corrupt.write_bytes(b"not a jpeg at all")
    index = workdir / "runs" / "tiny" / "index"
    if (index / "index.json").is_file():
        _fails(
            [
                "query",
                str(corrupt),
                "--change",
                "black:green",
                "--checkpoint",
                best,
                "--device",
                "cpu",
            ],
            "corrupt.jpeg",
        )
    _fails(["prepare", "--root", str(tmp_path / "nowhere")], "labels")
    _fails(["train", "train.nonsense=1"], "train.nonsense")
    _fails(["evaluate", str(tmp_path / "nope.pt")], "nope.pt")
    _fails(
        [
            "train",
            "--set",
            f"data.root={workdir / 'cat'}",
            *TINY,
            "train.iterations=1",
            "--device",
            "cuda:7",
        ]
        if not _has_cuda()
        else ["train", "train.lr=abc"],
        "",
    )


def test_index_from_another_checkpoint_is_a_one_line_error(workdir: Path) -> None:
    run = workdir / "runs" / "tiny"
    index = run / "index"
    _ensure_index(workdir)
    _ok(
        [
            "train",
            "--set",
            f"data.root={workdir / 'cat'}",
            *TINY,
            "--out",
            str(workdir / "runs"),
            "train.iterations=1",
            "train.name=other",
            "train.seed=5",
        ]
    )
    image = str(next((workdir / "cat" / "women").rglob("*.jpeg")))
    other = str(workdir / "runs" / "other" / "weights" / "best.pt")
    _fails(
        [
            "query",
            image,
            "--change",
            "black:green",
            "--checkpoint",
            other,
            "--index",
            str(index),
            "--device",
            "cpu",
        ],
        "stylequery embed",
    )


def _ensure_index(workdir: Path) -> None:
    """Embed the tiny run's test split once (tests may run in any order)."""
    run = workdir / "runs" / "tiny"
    if not (run / "index" / "index.json").is_file():
        embed = [
            "embed",
            str(workdir / "cat" / "prepared" / "pants"),
            "--checkpoint",
            str(run / "weights" / "best.pt"),
            "--device",
            "cpu",
            "--workers",
            "0",
        ]
        _ok(embed)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_help_does_not_import_torch() -> None:
    code = "import sys, stylequery.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    for command in ("", "train", "query", "prepare", "evaluate", "embed", "synth", "demo"):
        result = runner.invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0
