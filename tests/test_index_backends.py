"""The contract every index backend keeps: the same tests over exact, faiss and qdrant.

A backend whose package cannot be imported is skipped with the reason; CI installs both extras
(the ``dev`` extra pulls them in), so there every backend runs.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stylequery.errors import DataError, IndexMismatchError, StyleQueryError
from stylequery.index import Gallery, GalleryIndex, build_index, open_index
from stylequery.index.base import missing_extra

PACKAGES = {"exact": None, "faiss": "faiss", "qdrant": "qdrant_client"}
# Small galleries: the approximate backend is made to visit every list, so it must equal exact.
PARAMS: dict[str, dict[str, Any]] = {"exact": {}, "faiss": {"nlist": 4}, "qdrant": {}}
SEARCH: dict[str, dict[str, Any]] = {"exact": {}, "faiss": {"nprobe": 4}, "qdrant": {}}


def unit_rows(num: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((num, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def gallery(num: int, seed: int = 0, fingerprint: str = "f" * 64, first: int = 0) -> Gallery:
    paths = [f"img/{i}.jpg" for i in range(first, first + num)]
    captions = [f"caption {i % 7}" if i % 5 else None for i in range(first, first + num)]
    return Gallery.of(unit_rows(num, 16, seed), paths, captions, fingerprint, meta={"m": 1})


def brute_force(rows: np.ndarray, queries: np.ndarray, k: int, exclude: list[int]) -> np.ndarray:
    scores = queries.astype(np.float64) @ rows.astype(np.float64).T
    ids = []
    for q, row in enumerate(scores):
        order = np.lexsort((np.arange(len(row)), -row))
        ids.append(order[order != exclude[q]][:k])
    return np.array(ids)


@pytest.fixture(params=["exact", "faiss", "qdrant"])
def backend(request: pytest.FixtureRequest) -> str:
    package = PACKAGES[request.param]
    if package is not None and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed: pip install 'stylequery[{request.param}]'")
    return str(request.param)


@pytest.fixture
def opened() -> Iterator[list[GalleryIndex]]:
    """Indexes opened by a test, closed after it (qdrant's local mode locks its folder)."""
    indexes: list[GalleryIndex] = []
    yield indexes
    for index in indexes:
        index.close()


def build(backend: str, folder: Path, rows: Gallery, opened: list[GalleryIndex]) -> GalleryIndex:
    index = build_index(backend, folder, rows, **PARAMS[backend])
    opened.append(index)
    return index


def reopen(backend: str, index: GalleryIndex, folder: Path, opened: list) -> GalleryIndex:
    index.close()
    again = open_index(folder, **SEARCH[backend])
    opened.append(again)
    return again


def test_build_search_with_exclusion_matches_brute_force(
    backend: str, tmp_path: Path, opened: list
) -> None:
    rows = gallery(120, seed=1)
    index = reopen(backend, build(backend, tmp_path / "ix", rows, opened), tmp_path / "ix", opened)
    assert index.backend == backend and len(index) == 120 and index.dim == 16
    queries = unit_rows(6, 16, seed=2)
    exclude = [3, -1, 0, 119, 50, -1]
    scores, ids = index.search(queries, k=10, exclude=exclude)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (6, 10)
    np.testing.assert_array_equal(ids, brute_force(rows.embeddings, queries, 10, exclude))
    expected = np.take_along_axis(queries @ rows.embeddings.T, ids, axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert all(exclude[q] not in ids[q] for q in range(6))


def test_items_find_info_and_reopen(backend: str, tmp_path: Path, opened: list) -> None:
    rows = gallery(40)
    index = reopen(backend, build(backend, tmp_path / "ix", rows, opened), tmp_path / "ix", opened)
    assert index.find("img/7.jpg") == 7 and index.find("nope.jpg") == -1
    assert "img/7.jpg" in index and "nope.jpg" not in index
    assert index.items([6, 0]) == [("img/6.jpg", "caption 6"), ("img/0.jpg", None)]
    np.testing.assert_allclose(index.vectors(10, 13), rows.embeddings[10:13], atol=1e-6)
    info = index.info()
    assert info["backend"] == backend and info["count"] == 40 and info["dim"] == 16
    assert info["fingerprint"] == "f" * 64 and info["dtype"] == "float32"
    assert info["bytes"] > 0 and info["meta"] == {"m": 1}
    json.dumps(info)  # `stylequery index info --json` prints it


def test_ties_break_by_lower_row(backend: str, tmp_path: Path, opened: list) -> None:
    # Rows repeat four vectors with exactly representable dot products: many exact ties.
    rng = np.random.default_rng(5)
    base = rng.integers(-3, 4, (4, 16)).astype(np.float32) / 4
    rows = base[rng.integers(0, 4, 30)]
    paths = [f"p{i}" for i in range(30)]
    index = build(backend, tmp_path / "ix", Gallery.of(rows, paths, None, "fp"), opened)
    index = reopen(backend, index, tmp_path / "ix", opened)
    exclude = [0, 1, 2, 3]
    _, ids = index.search(base, k=8, exclude=exclude)
    np.testing.assert_array_equal(ids, brute_force(rows, base, 8, exclude))


def test_append_adds_rows_without_touching_the_old_ones(
    backend: str, tmp_path: Path, opened: list
) -> None:
    first, extra = gallery(30, seed=3), gallery(12, seed=4, first=30)
    index = build(backend, tmp_path / "ix", first, opened)
    grown = index.add(extra.embeddings, extra.paths, extra.captions)
    grown = reopen(backend, grown, tmp_path / "ix", opened)
    assert len(grown) == 42 and grown.find("img/35.jpg") == 35
    np.testing.assert_allclose(grown.vectors(0, 42), np.concatenate([first.embeddings,
                               extra.embeddings]), atol=1e-6)  # fmt: skip
    whole = np.concatenate([first.embeddings, extra.embeddings])
    queries = unit_rows(4, 16, seed=6)
    _, ids = grown.search(queries, k=5, exclude=[31, -1, 2, 41])
    np.testing.assert_array_equal(ids, brute_force(whole, queries, 5, [31, -1, 2, 41]))
    with pytest.raises(DataError, match=r"img/3\.jpg"):
        grown.add(unit_rows(1, 16, 1), ["img/3.jpg"])
    with pytest.raises(IndexMismatchError, match="dim"):
        grown.add(unit_rows(1, 8, 1), ["other.jpg"])


def test_fingerprint_mismatch_is_refused(backend: str, tmp_path: Path, opened: list) -> None:
    index = build(backend, tmp_path / "ix", gallery(20), opened)
    index = reopen(backend, index, tmp_path / "ix", opened)
    index.check_fingerprint("f" * 64)
    with pytest.raises(IndexMismatchError) as info:
        index.check_fingerprint("0123456789abcdef")
    assert "\n" not in str(info.value) and "0123456789ab" in str(info.value)
    assert "stylequery embed" in str(info.value)


def test_failed_rebuild_keeps_the_old_index(
    backend: str, tmp_path: Path, opened: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = build(backend, tmp_path / "ix", gallery(20), opened)
    index.close()
    module = __import__(f"stylequery.index.{backend}", fromlist=["_"])
    victim = {"exact": "write_items", "faiss": "write_items", "qdrant": "_upsert"}[backend]

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(module if backend != "faiss" else _exact_module(), victim, fail)
    with pytest.raises(OSError, match="disk full"):
        build_index(backend, tmp_path / "ix", gallery(25, seed=9), **PARAMS[backend])
    monkeypatch.undo()
    again = open_index(tmp_path / "ix", **SEARCH[backend])
    opened.append(again)
    assert len(again) == 20 and again.find("img/19.jpg") == 19
    _, ids = again.search(unit_rows(1, 16, 0), k=3)
    assert ids.shape == (1, 3)


def _exact_module() -> Any:
    import stylequery.index.exact as exact

    return exact


def test_unknown_search_parameter_is_one_line(backend: str, tmp_path: Path, opened: list) -> None:
    index = build(backend, tmp_path / "ix", gallery(10), opened)
    index.close()
    with pytest.raises(IndexMismatchError, match="no search parameter bogus"):
        open_index(tmp_path / "ix", bogus=3)


def test_missing_package_hint_is_one_line() -> None:
    message = str(missing_extra("faiss", "faiss"))
    assert isinstance(missing_extra("qdrant", "qdrant-client"), StyleQueryError)
    assert message == (
        "the faiss backend needs the 'faiss' package: pip install 'stylequery[faiss]'"
    )


def test_failed_append_keeps_the_old_index(
    backend: str, tmp_path: Path, opened: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = build(backend, tmp_path / "ix", gallery(20), opened)
    extra = gallery(5, seed=7, first=20)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("killed")

    if backend == "qdrant":  # the rows go in, the count that commits them does not
        monkeypatch.setattr(index.client, "update_collection", fail)  # type: ignore[attr-defined]
    else:
        monkeypatch.setattr(_exact_module(), "write_json", fail)
    with pytest.raises(OSError, match="killed"):
        index.add(extra.embeddings, extra.paths, extra.captions)
    monkeypatch.undo()
    again = reopen(backend, index, tmp_path / "ix", opened)
    assert len(again) == 20 and again.find("img/22.jpg") == -1
    # Half-written rows are never returned, even as a query's nearest neighbours.
    _, ids = again.search(extra.embeddings, k=20)
    assert ids.shape == (5, 20) and int(ids.max()) < 20
    grown = again.add(extra.embeddings, extra.paths, extra.captions)
    assert len(grown) == 25 and grown.find("img/22.jpg") == 22


def test_faiss_parameters_are_stored_and_nprobe_trades_recall(tmp_path: Path) -> None:
    if importlib.util.find_spec("faiss") is None:
        pytest.skip("faiss is not installed: pip install 'stylequery[faiss]'")
    rows = gallery(2000, seed=11)  # enough rows for compressed lists
    build_index("faiss", tmp_path / "ix", rows, nlist=16).close()
    stored = json.loads((tmp_path / "ix" / "index.json").read_text())["faiss"]
    assert stored["nlist"] == 16 and stored["factory"] == "IVF16_HNSW32,SQ8"
    queries = unit_rows(40, 16, seed=12)
    truth = brute_force(rows.embeddings, queries, 10, [-1] * 40)

    def recall(**search: int) -> float:
        _, ids = open_index(tmp_path / "ix", **search).search(queries, k=10)
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))

    assert recall(nprobe=1) < recall(nprobe=16, refine=200) == 1.0
    assert open_index(tmp_path / "ix", nprobe=3).info()["params"]["nprobe"] == 3


def test_faiss_visits_every_list_it_is_asked_to(tmp_path: Path) -> None:
    """nprobe = nlist is exhaustive: the HNSW quantiser must not cap the lists it returns
    (its default search breadth of 16 did, and recall stalled below exact)."""
    if importlib.util.find_spec("faiss") is None:
        pytest.skip("faiss is not installed: pip install 'stylequery[faiss]'")
    rows = Gallery.of(unit_rows(12000, 64, seed=13), [f"{i}.jpg" for i in range(12000)], None, "f")
    build_index("faiss", tmp_path / "ix", rows, nlist=256).close()
    queries = unit_rows(40, 64, seed=14)
    truth = brute_force(rows.embeddings, queries, 10, [-1] * 40)
    _, ids = open_index(tmp_path / "ix", nprobe=256, refine=100).search(queries, k=10)
    assert np.array_equal(ids, truth)
