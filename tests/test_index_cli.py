"""`embed --backend`, `query`, `index info` and `index convert` on every backend, via the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stylequery.index import EmbeddingIndex, open_index
from test_index_backends import backend

if TYPE_CHECKING:
    from conftest import Cli

__all__ = ["backend"]  # the fixture: every backend whose package is installed


def test_embed_query_append_info(
    cli: Cli, backend: str, tiny_checkpoint: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "idx"
    ckpt = ["--checkpoint", tiny_checkpoint]
    args = [tiny_prepared, *ckpt, "--out", out, "--backend", backend, "data.num_workers=0"]
    embedded = cli.json("embed", *args)
    assert embedded["added"] == embedded["total"] > 3
    info = cli.json("index", "info", out)
    assert info["backend"] == backend and info["count"] == embedded["total"]
    assert info["dim"] == 16 and info["dtype"] == "float32" and len(info["fingerprint"]) > 12
    table = cli.ok("index", "info", out).stdout
    assert backend in table and str(embedded["total"]) in table
    # Appending the same split encodes nothing: every image is already there.
    again = cli.json("embed", *args, "--append")
    assert again["added"] == 0 and again["total"] == embedded["total"]
    index = open_index(out)
    image = index.items([2])[0][0]
    index.close()
    settings = {"faiss": ["--set", "index.nprobe=1"], "qdrant": ["--set", "index.hnsw_ef=64"]}
    query = [image, "--change", "black:green", "-k", "4", *ckpt, "--index", out]
    data = cli.json("query", *query, *settings.get(backend, []))
    results = data["queries"][0]["results"]
    assert len(results) == 4 and image not in [r["path"] for r in results]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_convert_exact_keeps_rows_and_answers(
    cli: Cli, backend: str, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    out = tmp_path / backend
    converted = cli.json("index", "convert", tiny_index, "--backend", backend, "--out", out)
    exact = EmbeddingIndex.load(tiny_index)
    assert converted["count"] == len(exact) and converted["backend"] == backend
    index = open_index(out)
    assert index.fingerprint == exact.fingerprint
    assert index.items(range(len(exact))) == exact.items(range(len(exact)))
    image = exact.paths[0]
    query = [image, "--change", "black:green", "-k", "5", "--checkpoint", tiny_checkpoint]
    index.close()
    expected = cli.json("query", *query, "--index", tiny_index)["queries"][0]["results"]
    got = cli.json("query", *query, "--index", out)["queries"][0]["results"]
    assert [r["path"] for r in got] == [r["path"] for r in expected]


def test_index_command_errors(cli: Cli, tiny_index: Path, tmp_path: Path) -> None:
    cli.fails("index", "info", tmp_path / "nothing", needle="nothing")
    out = ["--out", tmp_path / "x"]
    cli.fails("index", "convert", tiny_index, "--backend", "annoy", *out, needle="annoy")
    cli.fails(
        "index", "convert", tiny_index, "--backend", "faiss", "--uri", "http://h", *out,
        needle="--uri",
    )  # fmt: skip
