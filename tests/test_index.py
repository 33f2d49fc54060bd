"""EmbeddingIndex: search against a brute-force sort, files, append, fingerprints, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import stylequery.index.exact as index_module
from stylequery.errors import DataError, IndexMismatchError
from stylequery.index import EmbeddingIndex


def unit_rows(num: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((num, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_index(num: int = 50, dim: int = 8, seed: int = 0, **kwargs) -> EmbeddingIndex:
    paths = [f"img/{i}.jpg" for i in range(num)]
    captions = [f"caption {i % 7}" if i % 5 else None for i in range(num)]
    return EmbeddingIndex.build(unit_rows(num, dim, seed), paths, captions, "f" * 64, **kwargs)


def brute_force(
    gallery: np.ndarray, queries: np.ndarray, k: int, exclude: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Full sort by (-score, index) per query, the excluded row dropped."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    ids, values = [], []
    for q, row in enumerate(scores):
        order = np.lexsort((np.arange(len(row)), -row))
        if exclude is not None:
            order = order[order != exclude[q]]
        ids.append(order[:k])
        values.append(row[order[:k]])
    return np.array(values), np.array(ids)


@pytest.mark.parametrize("k", [1, 5, 17, 50])
@pytest.mark.parametrize("chunk_size", [7, 16, 1000])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_search_matches_brute_force(k: int, chunk_size: int, with_exclude: bool) -> None:
    index = make_index(num=50, seed=1)
    queries = unit_rows(9, 8, seed=2)
    exclude = (
        [int(i) for i in np.random.default_rng(3).integers(-1, 50, 9)] if with_exclude else None
    )
    scores, ids = index.search(queries, k=k, exclude=exclude, chunk_size=chunk_size)
    expected_scores, expected_ids = brute_force(index.embeddings, queries, k, exclude)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    if with_exclude and k == 50:  # one row fewer to choose from: k is clipped to 49
        assert ids.shape == (9, 49) and (ids >= 0).all()
        expected_ids, expected_scores = expected_ids[:, :49], expected_scores[:, :49]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [3, 4, 10, 100])
def test_ties_break_by_lower_index_across_chunks(chunk_size: int) -> None:
    # Gallery rows repeat 4 vectors, so every score is tied with many others across chunks.
    # Entries are multiples of 1/4: every dot product is exact whatever the summation order.
    rng = np.random.default_rng(5)
    base = rng.integers(-3, 4, (7, 6)).astype(np.float32) / 4
    gallery = base[rng.integers(0, 4, 30)]
    index = EmbeddingIndex.build(gallery, [str(i) for i in range(30)], None, "fp")
    queries = base
    for k in (1, 3, 8, 30):
        exclude = list(range(len(queries)))
        _, ids = index.search(queries, k=k, exclude=exclude, chunk_size=chunk_size)
        _, expected = brute_force(gallery, queries, k, exclude)
        np.testing.assert_array_equal(ids, expected)


def test_search_accepts_tensors_and_clips_k() -> None:
    index = make_index(num=6)
    queries = torch.from_numpy(unit_rows(2, 8, seed=7)).to(torch.bfloat16)
    scores, ids = index.search(queries, k=100)
    assert scores.shape == ids.shape == (2, 6)
    assert sorted(ids[0].tolist()) == list(range(6))
    # One query leaves its own row out: every query gets the 5 rows that exist for it.
    scores, ids = index.search(queries, k=100, exclude=torch.tensor([-1, 2]))
    assert ids.shape == (2, 5) and 2 not in ids[1] and np.isfinite(scores).all()


def test_search_rejects_bad_queries() -> None:
    index = make_index()
    with pytest.raises(IndexMismatchError, match="dim 4"):
        index.search(np.zeros((1, 4), np.float32), k=1)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 8), np.nan, np.float32), k=1)
    with pytest.raises(ValueError, match="exclude"):
        index.search(unit_rows(2, 8, 0), k=1, exclude=[0])
    with pytest.raises(ValueError, match="positive"):
        index.search(unit_rows(2, 8, 0), k=0)


def test_float16_storage_is_close_to_float32() -> None:
    full = make_index(num=200, dim=32, seed=8)
    half = make_index(num=200, dim=32, seed=8, dtype="float16")
    assert half.dtype == "float16" and half.embeddings.dtype == np.float16
    queries = unit_rows(5, 32, seed=9)
    full_scores, full_ids = full.search(queries, k=10, chunk_size=64)
    half_scores, half_ids = half.search(queries, k=10, chunk_size=64)
    np.testing.assert_allclose(half_scores, full_scores, atol=2e-3)
    assert (half_ids[:, 0] == full_ids[:, 0]).all()


def test_float16_rows_are_ranked_by_float32_scores() -> None:
    """Near-duplicates whose scores differ below float16 precision still come in the order of
    float32 arithmetic on the stored rows, with float32 scores."""
    rng = np.random.default_rng(10)
    base = unit_rows(4, 64, seed=10)
    rows = np.repeat(base, 300, axis=0) + 1e-2 * rng.standard_normal((1200, 64))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    paths = [f"img/{i}.jpg" for i in range(len(rows))]
    index = EmbeddingIndex.build(rows, paths, [None] * len(rows), "f" * 64, dtype="float16")
    queries = base + 0.05 * unit_rows(4, 64, seed=11)
    stored = index.embeddings.astype(np.float32)
    want_scores, want_ids = brute_force(stored, queries.astype(np.float32), k=10)
    scores, ids = index.search(queries, k=10, chunk_size=256, exclude=[5, -1, 2, -1])
    _, excluded = brute_force(stored, queries.astype(np.float32), 10, exclude=[5, -1, 2, -1])
    np.testing.assert_array_equal(ids, excluded)
    scores, ids = index.search(queries, k=10, chunk_size=256)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_save_load_round_trip(tmp_path: Path, dtype: str) -> None:
    index = make_index(dtype=dtype, meta={"model": "tiny", "iteration": 3})
    folder = index.save(tmp_path / "gallery")
    loaded = EmbeddingIndex.load(folder)
    assert isinstance(loaded.embeddings, np.memmap)
    assert not loaded.embeddings.flags.writeable
    assert len(loaded) == len(index) and loaded.dim == 8 and loaded.dtype == dtype
    assert loaded.paths == index.paths and loaded.captions == index.captions
    assert loaded.fingerprint == index.fingerprint and loaded.meta == index.meta
    assert loaded.folder == folder and "img/3.jpg" in loaded and loaded.find("img/3.jpg") == 3
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), index.embeddings)
    queries = unit_rows(3, 8, seed=1)
    for a, b in zip(loaded.search(queries, 5, chunk_size=9), index.search(queries, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    in_memory = EmbeddingIndex.load(folder, mmap=False)
    assert not isinstance(in_memory.embeddings, np.memmap)
    info = json.loads((folder / "index.json").read_text())
    assert info["count"] == 50 and info["dtype"] == dtype and info["meta"]["model"] == "tiny"


def test_append_equals_building_at_once(tmp_path: Path) -> None:
    rows = unit_rows(30, 8, seed=10)
    paths = [f"p{i}" for i in range(30)]
    captions = [f"c{i}" for i in range(30)]
    whole = EmbeddingIndex.build(rows, paths, captions, "fp", dtype="float16")
    first = EmbeddingIndex.build(rows[:20], paths[:20], captions[:20], "fp", dtype="float16")
    loaded = EmbeddingIndex.load(first.save(tmp_path / "idx"))
    grown = loaded.append(rows[20:], paths[20:], captions[20:])
    assert len(loaded) == 20, "append returns a new index"
    assert grown.dtype == "float16" and grown.paths == paths and grown.captions == captions
    np.testing.assert_array_equal(grown.embeddings, whole.embeddings)
    grown.save(tmp_path / "idx")  # over the folder it was memory-mapped from
    reloaded = EmbeddingIndex.load(tmp_path / "idx")
    assert reloaded.paths == paths
    np.testing.assert_array_equal(np.asarray(reloaded.embeddings), whole.embeddings)


def test_duplicate_paths_are_rejected() -> None:
    index = make_index(num=5)
    with pytest.raises(DataError, match=r"img/2\.jpg"):
        index.append(unit_rows(2, 8, 1), ["new.jpg", "img/2.jpg"])
    with pytest.raises(DataError, match=r"twice\.jpg"):
        EmbeddingIndex.build(unit_rows(2, 8, 1), ["twice.jpg", "twice.jpg"], None, "fp")
    with pytest.raises(IndexMismatchError, match="dim"):
        index.append(unit_rows(1, 4, 1), ["other.jpg"])


def test_fingerprint_mismatch(tmp_path: Path) -> None:
    folder = make_index().save(tmp_path / "gallery")
    index = EmbeddingIndex.load(folder)
    index.check_fingerprint("f" * 64)
    with pytest.raises(IndexMismatchError) as info:
        index.check_fingerprint("0123456789abcdef")
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    assert "ffffffffffff" in message and "0123456789ab" in message and "stylequery embed" in message


def corrupt(folder: Path, case: str) -> None:
    if case == "missing-folder":
        folder.rename(folder.with_name("elsewhere"))
    elif case.startswith("missing-"):
        (folder / case.removeprefix("missing-")).unlink()
    elif case == "count":
        lines = (folder / "items.jsonl").read_text().splitlines()
        (folder / "items.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    elif case == "bad-json":
        (folder / "index.json").write_text("{not json")
    elif case == "bad-line":
        with (folder / "items.jsonl").open("a") as f:
            f.write('{"caption": "no path"}\n')
    elif case == "truncated":
        data = (folder / "embeddings.npy").read_bytes()
        (folder / "embeddings.npy").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("missing-folder", "gallery"),
        ("missing-index.json", "index.json"),
        ("missing-embeddings.npy", "embeddings.npy"),
        ("missing-items.jsonl", "items.jsonl"),
        ("count", "items.jsonl"),
        ("bad-json", "index.json"),
        ("bad-line", "line 51"),
        ("truncated", "embeddings.npy"),
    ],
)
@pytest.mark.parametrize("mmap", [True, False])
def test_broken_folders_fail_in_one_line(tmp_path: Path, case: str, names: str, mmap: bool) -> None:
    folder = make_index().save(tmp_path / "gallery")
    corrupt(folder, case)
    with pytest.raises(IndexMismatchError) as info:
        EmbeddingIndex.load(folder, mmap=mmap)
    assert "\n" not in str(info.value)
    assert names in str(info.value)


def test_failed_save_keeps_old_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_index(num=10).save(tmp_path / "gallery")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "write_json", fail)
    with pytest.raises(OSError, match="disk full"):
        make_index(num=20, seed=3).save(folder)
    assert len(EmbeddingIndex.load(folder)) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]


def test_empty_index_search() -> None:
    index = EmbeddingIndex.build(np.zeros((0, 4), np.float32), [], None, "fp")
    scores, ids = index.search(np.ones((2, 4), np.float32) / 2, k=5)
    assert scores.shape == ids.shape == (2, 0)
