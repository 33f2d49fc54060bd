"""A corpus of hostile images through prepare, embed and query: decoded right, or one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from corpus import HOSTILE  # tests/reliability/corpus.py

from stylequery.data import load_prepared
from stylequery.errors import DataError
from stylequery.imagecache import decode_image, image_problem
from stylequery.index import EmbeddingIndex

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # PIL warns about the bomb on opening; stylequery refuses it by its own, lower limit
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]
BAD = {name for name, outcome in HOSTILE.items() if outcome != "ok"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_decode_or_one_line(name: str, hostile_images: dict[str, Path]) -> None:
    path = hostile_images[name]
    if HOSTILE[name] == "ok":
        pixels = decode_image(path, 32)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
        assert image_problem(path, full=True) is None
        return
    with pytest.raises(DataError) as info:
        decode_image(path, 32)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert image_problem(path, full=True) is not None


def test_pixel_limit_is_a_setting(hostile_images: dict[str, Path]) -> None:
    rgba = hostile_images["rgba.png"]  # 64 x 64
    with pytest.raises(DataError, match=r"64 x 64 pixels is above the limit of 4,095"):
        decode_image(rgba, 32, max_pixels=4095)
    assert image_problem(rgba, max_pixels=4095) is not None


def _plant(root: Path, hostile_images: dict[str, Path]) -> dict[str, str]:
    """Replace the first train images of a catalogue copy by the corpus; name -> label path."""
    lines = (root / "labels" / "pants_train_detect_all.txt").read_text().splitlines()
    planted = {}
    for name, line in zip(sorted(HOSTILE), lines, strict=False):
        rel = line.split("\t")[0]
        shutil.copy(hostile_images[name], root / rel)
        planted[name] = rel
    return planted


def test_prepare_keeps_odd_images_and_drops_broken_ones(
    cli, tiny_catalogue_copy: Path, hostile_images: dict[str, Path]
) -> None:
    root = tiny_catalogue_copy
    planted = _plant(root, hostile_images)
    cli.ok("prepare", f"data.root={root}", "--image-cache", "32")
    prepared = load_prepared(root / "prepared" / "pants")
    kept = {item.path for item in prepared.split("train")}
    missing = (prepared.root / "prepared" / "pants" / "missing.txt").read_text()
    for name, rel in planted.items():
        assert (rel in kept) == (name not in BAD), name
        assert (rel in missing) == (name in BAD), name
    message = cli.fails("prepare", f"data.root={root}", "--strict", needle="image women/")
    assert any(HOSTILE[name] in message for name in BAD)


def test_embed_skips_broken_images_and_query_names_them(
    cli, tiny_checkpoint: Path, tiny_index: Path, hostile_images: dict[str, Path], tmp_path: Path
) -> None:
    folder = next(iter(hostile_images.values())).parent
    out = tmp_path / "index"
    result = cli.ok("embed", folder, "--checkpoint", tiny_checkpoint, "--out", out)
    names = {Path(p).name for p in EmbeddingIndex.load(out).paths}
    assert names == set(HOSTILE) - BAD
    for name in BAD:
        assert name in result.stderr  # each skipped image is named with its reason
    args = ["--checkpoint", tiny_checkpoint, "--index", tiny_index, "--change", "blue:red"]
    for name, path in hostile_images.items():
        if name in BAD:
            cli.fails("query", path, *args, needle=name)
        else:
            assert "rank" in cli.ok("query", path, *args).stdout
