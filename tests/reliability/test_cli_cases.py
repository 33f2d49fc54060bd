"""The issue-12 campaign through the CLI: every case is one ``error:`` line or a correct result.

User and file text is printed literally; settings out of range are refused where the config
is resolved, before anything is written; odd query text is reported, never silently changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stylequery.index import EmbeddingIndex

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["config", "data.image_size=-1"], "'data.image_size': -1"),
        (["config", "train.batch_size=0"], "'train.batch_size': 0"),
        (["config", "eval.ks=[0]"], "'eval.ks'"),
        (["config", "eval.ks=[]"], "'eval.ks'"),
        (["config", "train.lr=nan"], "'train.lr'"),
        (["config", "model.dropout=1.5"], "'model.dropout'"),
        (["config", "data.max_image_pixels=0"], "'data.max_image_pixels'"),
        (["synth", "SYNTH", "--products", "0"], "needs products >= 2, got 0"),
        (["synth", "SYNTH", "--image-size", "0"], "needs image size in [8, 4096], got 0"),
    ],
)
def test_settings_out_of_range_are_one_line(
    cli, tmp_path: Path, args: list[str], needle: str
) -> None:
    args = [str(tmp_path / "synth") if a == "SYNTH" else a for a in args]
    message = cli.fails(*args, needle=needle)
    assert "must be" in message or "needs" in message  # the allowed range is named
    assert not (tmp_path / "synth").exists()


def test_prepare_image_cache_size_is_checked(cli, tiny_catalogue_copy: Path) -> None:
    root = tiny_catalogue_copy
    args = ["prepare", f"data.root={root}", "--image-cache", "-5"]
    cli.fails(*args, needle="image cache size must be in [0, 4096] (0: none), got -5")
    assert not (root / "prepared").exists()


def test_a_bad_setting_leaves_no_run_folder(
    cli, tiny_catalogue: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    settings = [f"data.root={tiny_catalogue}", f"data.prepared_dir={tiny_prepared}"]
    cli.fails("train", "-c", "tiny.yaml", *settings, "data.image_size=-1", "--out", runs,
              needle="data.image_size")  # fmt: skip
    assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.parametrize("k", ["0", "-1"])
def test_query_k_must_be_positive(cli, tiny_checkpoint: Path, tiny_index: Path, k: str) -> None:
    image = EmbeddingIndex.load(tiny_index).paths[0]
    args = ["--checkpoint", tiny_checkpoint, "--index", tiny_index, "--change", "blue:red"]
    cli.fails("query", image, *args, "--k", k, needle="--k")


def _query_args(tiny_checkpoint: Path, tiny_index: Path) -> list[str | Path]:
    return ["--checkpoint", tiny_checkpoint, "--index", tiny_index]


def test_fifty_changes_end_in_a_result_or_one_line(
    cli, tiny_checkpoint: Path, tiny_index: Path
) -> None:
    image = EmbeddingIndex.load(tiny_index).paths[0]
    changes = [a for _ in range(25) for a in ("--change", "blue:red", "--change", "red:blue")]
    result = cli.run("query", image, *_query_args(tiny_checkpoint, tiny_index), *changes)
    assert "Traceback" not in result.output and not isinstance(result.exception, ValueError)
    if result.exit_code:
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    else:
        assert "rank" in result.stdout


def test_change_text_is_what_the_model_saw(cli, tiny_checkpoint: Path, tiny_index: Path) -> None:
    image = EmbeddingIndex.load(tiny_index).paths[0]
    args = [image, *_query_args(tiny_checkpoint, tiny_index), "--change", "black:红色"]
    result = cli.ok("query", *args)
    title = " ".join(result.stdout.split("┏")[0].split()).split(" target caption:")[0]
    assert title.endswith("+ change black to")  # the colour the tokenizer dropped is not shown
    assert "warning: '红色' was dropped" in result.stderr
    cli.fails("query", *args, "--strict", needle="'红色' was dropped")


@pytest.mark.parametrize("spec", ["a:b:c", "[/x]", ":smile:", "red"])
def test_bad_change_spec_is_quoted_literally(
    cli, tiny_checkpoint: Path, tiny_index: Path, spec: str
) -> None:
    image = EmbeddingIndex.load(tiny_index).paths[0]
    args = [image, *_query_args(tiny_checkpoint, tiny_index), "--change", spec]
    assert cli.fails("query", *args, needle=f"change '{spec}' must be FROM:TO")


def test_markup_in_paths_is_printed_literally(
    cli, tiny_checkpoint: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "idx [/x] :smile: [sale]"
    result = cli.ok("embed", tiny_prepared, "--checkpoint", tiny_checkpoint, "--out", out)
    assert "idx [/x] :smile: [sale]" in " ".join(result.stdout.split())  # wrapped, not parsed
    assert EmbeddingIndex.load(out).paths


def test_query_save_onto_a_folder_is_one_line(
    cli, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    image = EmbeddingIndex.load(tiny_index).paths[0]
    args = [image, *_query_args(tiny_checkpoint, tiny_index), "--change", "blue:red"]
    cli.fails("query", *args, "--save", tmp_path, needle=str(tmp_path))


def test_query_image_that_is_an_empty_folder(
    cli, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    args = [tmp_path / "empty", *_query_args(tiny_checkpoint, tiny_index), "--change", "a:b"]
    cli.fails("query", *args, needle="no .jpg")


def test_killed_prepare_leftovers_are_removed(cli, tiny_catalogue_copy: Path) -> None:
    root = tiny_catalogue_copy
    out = root / "prepared" / "pants"
    leftover = root / "prepared" / ".pants.k1ll3d.tmp"
    leftover.mkdir(parents=True)
    (leftover / "cache_train_32.npy").write_bytes(b"\0" * 4096)
    cli.ok("prepare", f"data.root={root}")
    assert (out / "manifest.json").is_file() and not leftover.exists()
    assert shutil.disk_usage(root)  # the folder is still there and usable
