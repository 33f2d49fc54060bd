"""The faiss backend: an approximate (IVF) index for galleries too big for exact search.

The folder is an exact index (``embeddings.npy``, ``items.jsonl``, ``index.json``) plus
``faiss.index``, an inverted-file index (IVF, 8-bit scalar codes) over the same rows. A search
asks faiss for ``refine x k`` candidates per query, re-scores them exactly against the stored
rows (the memory-mapped ``embeddings.npy``) and ranks them by descending score, ties by lower row;
a query left with fewer than ``k`` candidates is answered by exact search. So the scores are
exact and only the candidate set is approximate.

Build parameters (``factory``, ``nlist``, ``train_size``) and the default search parameters
(``nprobe``, ``refine``) are stored in ``index.json`` under ``"faiss"``; ``nprobe`` (inverted
lists visited per query) trades recall for speed at query time. Needs ``faiss-cpu``
(``pip install 'stylequery[faiss]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from stylequery.errors import DataError, IndexMismatchError, one_line
from stylequery.index.base import (
    Backend,
    Gallery,
    check_exclude,
    check_queries,
    clip_k,
    missing_extra,
)
from stylequery.index.exact import INFO_FILE, EmbeddingIndex, read_info
from stylequery.progress import progress_bar

logger = logging.getLogger(__name__)

FAISS_FILE = "faiss.index"
# Chosen by benchmarks/index_scale.py (BENCHMARKS.md): an HNSW graph finds the nearest lists
# (so adding 10M rows does not compare each with every centroid); 8-bit scalar codes (D bytes a
# row) ranked candidates better than 4-bit PQ (recall@10 0.97-0.99 against 0.91-0.93 at 1M).
DEFAULT_FACTORY = "IVF{nlist}_HNSW32,SQ8"
SEARCH_KEYS = ("nprobe", "refine")
ADD_CHUNK = 262144  # rows added to faiss at once
SMALL = 1024  # fewer rows than this get uncompressed lists (too few to train codes on)


def import_faiss() -> Any:
    """The faiss module, or the one-line install hint."""
    try:
        import faiss
    except ImportError:
        raise missing_extra("faiss", "faiss") from None
    return faiss


def default_params(count: int, dim: int, nlist: int | None = None) -> dict[str, Any]:
    """Build and search parameters for a gallery of ``count`` rows of dimension ``dim``.

    ``nlist`` ~ 2 sqrt(N) inverted lists (at least 39 training rows each, at most 8192 so a
    build stays minutes on one core); ``nprobe`` visits 1/32 of them. ``{m}`` in a factory
    string given instead is D/4 (e.g. ``IVF{nlist},PQ{m}x4fs``).
    """
    if nlist is None:
        nlist = int(max(1, min(8192, 2 * np.sqrt(count), count // 39)))
    factory = "IVF{nlist},Flat" if count < SMALL else DEFAULT_FACTORY
    return {
        "factory": factory.format(nlist=nlist, m=dim // 4),
        "nlist": nlist,
        "train_size": min(count, 64 * nlist),
        "nprobe": max(1, min(nlist, nlist // 32)),
        "refine": 10,
    }


@dataclass(eq=False)
class FaissIndex(EmbeddingIndex):
    """An exact index folder plus a faiss IVF index of its rows (see the module docstring).

    Attributes:
        ann: the faiss index over the rows, ids = rows.
        params: build and default search parameters, as stored in ``index.json``.
        search_params: the search parameters in force (``nprobe``, ``refine``).
    """

    backend: ClassVar[Backend] = "faiss"
    ann: Any = field(default=None, repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    search_params: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, location: str | Path, gallery: Gallery, **params: Any) -> FaissIndex:
        """Train and fill a faiss index over ``gallery`` and write the folder atomically.

        Args:
            location: the index folder.
            gallery: the rows.
            params: overrides of :func:`default_params` (``factory`` may use ``{nlist}``).
        """
        count, dim = gallery.embeddings.shape
        if count == 0:
            raise DataError(f"{location}: a faiss index needs at least one row")
        chosen = {**default_params(count, dim, params.get("nlist")), **params}
        chosen["factory"] = str(chosen["factory"]).format(nlist=chosen["nlist"], m=dim // 4)
        ann = _train(gallery.embeddings, chosen)
        _add_rows(ann, gallery.embeddings, 0)
        cls.wrap(cls.of_gallery(gallery), ann, chosen).save(Path(location))
        return cls.open(location)

    @classmethod
    def wrap(cls, index: EmbeddingIndex, ann: Any, params: dict[str, Any]) -> FaissIndex:
        """The exact index ``index`` with ``ann`` over its rows."""
        i = index
        fields = (i.embeddings, i.paths, i.captions, i.fingerprint, i.meta, i.created, i.updated)
        return cls(*fields, folder=i.folder, ann=ann, params=params)

    @classmethod
    def open(cls, location: str | Path, **search_params: Any) -> FaissIndex:
        """Open the folder; ``nprobe`` and ``refine`` override the stored search defaults."""
        faiss = import_faiss()
        folder = Path(location)
        exact = EmbeddingIndex.load(folder)
        params = read_info(folder / INFO_FILE).get("faiss")
        if not isinstance(params, dict):
            raise IndexMismatchError(f"{folder / INFO_FILE} lacks 'faiss' (not a faiss index)")
        try:
            ann = faiss.read_index(str(folder / FAISS_FILE))
        except RuntimeError as err:
            raise IndexMismatchError(f"{folder / FAISS_FILE}: {one_line(err)}") from None
        if ann.ntotal != len(exact) or ann.d != exact.dim:
            raise IndexMismatchError(
                f"index {folder} is corrupt: {FAISS_FILE} holds {ann.ntotal} rows of dim "
                f"{ann.d}, {INFO_FILE} says {len(exact)} of dim {exact.dim}"
            )
        index = cls.wrap(exact, ann, params)
        index.search_params = _search_params(params, search_params)
        return index

    def add(
        self,
        embeddings: np.ndarray | Tensor,
        paths: Sequence[str],
        captions: Sequence[str | None] | None = None,
    ) -> FaissIndex:
        """Append rows to a copy of the stored index (no retraining) and write atomically."""
        folder = self.own_folder()
        grown = self.append(embeddings, paths, captions)
        ann = import_faiss().clone_index(self.ann)
        _add_rows(ann, grown.embeddings[len(self) :], len(self))
        FaissIndex.wrap(grown, ann, self.params).save(folder)
        return FaissIndex.open(folder, **self.search_params)

    def write_files(self, folder: Path) -> None:
        super().write_files(folder)
        import_faiss().write_index(self.ann, str(folder / FAISS_FILE))

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "faiss": self.params}

    def info(self) -> dict[str, Any]:
        return {**super().info(), "params": {**self.params, **self.search_params}}

    def search(
        self,
        queries: np.ndarray | Tensor,
        k: int,
        exclude: Sequence[int] | np.ndarray | Tensor | None = None,
        chunk_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k: faiss candidates re-scored exactly (see the module docstring)."""
        query_array = check_queries(queries, self.dim, self.name)
        Q, N = len(query_array), len(self)
        skip = check_exclude(exclude, Q, N)
        k = clip_k(k, N, skip)
        if k < 1:
            return np.empty((Q, 0), np.float32), np.empty((Q, 0), np.int64)
        fetch = min(N, k * self.search_params["refine"] + 1)
        _set_nprobe(self.ann, self.search_params["nprobe"])
        _, ids = self.ann.search(query_array, fetch)  # (Q, fetch), -1 where lists ran out
        if skip is not None:
            ids[ids == skip[:, None]] = -1
        scores, ids = self.rerank(query_array, ids, ids < 0, k)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short):  # too few candidates: answer those queries exactly
            rows = skip[short] if skip is not None else None
            scores[short], ids[short] = super().search(query_array[short], k, rows, chunk_size)
        return scores.astype(np.float32), ids.astype(np.int64)


def _set_nprobe(ann: Any, nprobe: int) -> None:
    """Visit ``nprobe`` lists, and let an HNSW coarse quantiser find that many.

    The graph's search breadth (``efSearch``, 16 by default) caps how many good lists it
    returns: at its default, recall@10 stalled near 0.95 whatever ``nprobe`` (BENCHMARKS.md,
    "Index backends"). Twice ``nprobe``, and at least 64, lost no recall against wider.
    """
    faiss = import_faiss()
    faiss.ParameterSpace().set_index_parameter(ann, "nprobe", nprobe)
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(ann).quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(64, 2 * nprobe)


def _search_params(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, int]:
    unknown = sorted(set(given) - set(SEARCH_KEYS))
    if unknown:
        raise IndexMismatchError(
            f"the faiss backend has no search parameter {', '.join(unknown)}; "
            f"use {' or '.join(SEARCH_KEYS)}"
        )
    chosen = {key: int(given.get(key, stored.get(key, 1))) for key in SEARCH_KEYS}
    if min(chosen.values()) < 1:
        raise IndexMismatchError(f"faiss search parameters must be positive, got {chosen}")
    return chosen


def _train(rows: np.ndarray, params: dict[str, Any]) -> Any:
    """An empty faiss index of ``params['factory']`` trained on a fixed sample of ``rows``."""
    faiss = import_faiss()
    count, dim = rows.shape
    ann = faiss.index_factory(dim, params["factory"], faiss.METRIC_INNER_PRODUCT)
    size = min(count, int(params["train_size"]))
    sample = np.sort(np.random.default_rng(0).choice(count, size, replace=False))
    logger.info("training %s on %d of %d rows", params["factory"], size, count)
    ann.train(np.ascontiguousarray(rows[sample], dtype=np.float32))
    return ann


def _add_rows(ann: Any, rows: np.ndarray, first: int) -> None:
    """Add ``rows`` to ``ann`` in chunks (ids continue from ``first``, which must be ntotal)."""
    assert ann.ntotal == first
    with progress_bar("faiss add", total=len(rows)) as bar:
        for start in range(0, len(rows), ADD_CHUNK):
            chunk = np.ascontiguousarray(rows[start : start + ADD_CHUNK], dtype=np.float32)
            ann.add(chunk)
            bar.advance(len(chunk))
