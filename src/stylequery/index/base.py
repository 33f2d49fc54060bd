"""The interface every index backend implements, and the helpers they share.

A gallery index maps rows ``0..N-1`` to (L2-normalised embedding, image path, caption) and
records the fingerprint of the checkpoint that computed the embeddings. Every backend:

- is written by ``create`` and opened by ``open`` (a folder, or a database URI);
- grows with ``add`` without re-encoding the rows it already holds;
- answers ``search(queries, k, exclude) -> (scores, ids)`` ordered by descending score, ties by
  the lower row (exactly so for the exact backend; among the candidates it returns for the
  approximate ones);
- gives ``items(rows)`` (path, caption) and ``find(path)`` (row or ``-1``);
- refuses a mismatched checkpoint in ``check_fingerprint``;
- describes itself in ``info()`` (backend, count, dim, dtype, fingerprint, bytes, parameters);
- leaves the earlier index usable when a write fails or is killed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from torch import Tensor

from stylequery.errors import DataError, IndexMismatchError, StyleQueryError

Backend = Literal["exact", "faiss", "qdrant"]
BACKENDS: tuple[Backend, ...] = ("exact", "faiss", "qdrant")
Dtype = Literal["float32", "float16"]
DTYPES = {"float32": np.float32, "float16": np.float16}
FORMAT_VERSION = 1


class GalleryIndex(ABC):
    """Gallery embeddings with their image paths and captions, searchable by inner product."""

    backend: ClassVar[Backend]
    fingerprint: str
    meta: dict[str, Any]

    @classmethod
    @abstractmethod
    def open(cls, location: str | Path, **search_params: Any) -> GalleryIndex:
        """Open an index written by :meth:`create`; ``search_params`` tune search speed."""

    @classmethod
    @abstractmethod
    def create(cls, location: str | Path, gallery: Gallery, **params: Any) -> GalleryIndex:
        """Write ``gallery`` as a new index at ``location`` (replacing one there atomically)."""

    @abstractmethod
    def add(
        self,
        embeddings: np.ndarray | Tensor,
        paths: Sequence[str],
        captions: Sequence[str | None] | None = None,
    ) -> GalleryIndex:
        """Append rows after the existing ones (not re-encoded), write, and return the result.

        Raises:
            DataError: when a path is already in the index or repeated in ``paths``.
            IndexMismatchError: when the new embeddings' dim differs from the index's.
        """

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding dimension D."""

    @property
    @abstractmethod
    def dtype(self) -> Dtype:
        """Storage precision of the rows."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Where the index lives, for messages."""

    @abstractmethod
    def find(self, path: str) -> int:
        """Row of ``path``, or ``-1`` when absent (the convention of ``exclude``)."""

    @abstractmethod
    def items(self, rows: Sequence[int]) -> list[tuple[str, str | None]]:
        """(path, caption) of each row, caption ``None`` where unknown."""

    @abstractmethod
    def vectors(self, start: int, stop: int) -> np.ndarray:
        """Stored embeddings of rows ``start:stop`` as float32 (to convert without re-encoding)."""

    @abstractmethod
    def search(
        self,
        queries: np.ndarray | Tensor,
        k: int,
        exclude: Sequence[int] | np.ndarray | Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product with each (Q, D) query, ``exclude`` (Q,) left out.

        Returns:
            ``(scores (Q, k) float32, ids (Q, k) int64)``, descending score, ties by lower id;
            ``k`` is clipped to the rows there are (less one where a row is excluded).
        """

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Backend, location, count, dim, dtype, fingerprint, bytes and backend parameters."""

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.find(path) >= 0

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release what the index holds open (a database client); a no-op by default."""

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise :class:`IndexMismatchError` unless the index was embedded by this checkpoint."""
        if fingerprint != self.fingerprint:
            raise IndexMismatchError(
                f"index {self.name} was embedded by checkpoint {self.fingerprint[:12]}, but the "
                f"checkpoint given is {fingerprint[:12]}; re-run `stylequery embed`"
            )


@dataclass
class Gallery:
    """Validated rows to write into an index: embeddings, paths, captions and provenance."""

    embeddings: np.ndarray  # (N, D) in the storage dtype
    paths: list[str]
    captions: list[str | None]
    fingerprint: str
    meta: dict[str, Any]
    created: str
    updated: str

    @classmethod
    def of(
        cls,
        embeddings: np.ndarray | Tensor,
        paths: Sequence[str],
        captions: Sequence[str | None] | None,
        fingerprint: str,
        dtype: Dtype = "float32",
        meta: dict[str, Any] | None = None,
    ) -> Gallery:
        """Check and convert rows computed by one checkpoint.

        Args:
            embeddings: (N, D) L2-normalised rows.
            paths: image path of each row, unique.
            captions: caption of each row (``None`` where unknown), or ``None`` for all.
            fingerprint: fingerprint of the checkpoint that computed the embeddings.
            dtype: storage precision.
            meta: JSON-serialisable description of the model/checkpoint, stored as given.

        Raises:
            DataError: on duplicate paths.
            ValueError: on mismatched lengths, a non-2-D or non-finite array, or a bad dtype.
        """
        if dtype not in DTYPES:
            raise ValueError(f"index dtype must be float32 or float16, got {dtype!r}")
        array = to_numpy(embeddings).astype(DTYPES[dtype], copy=False)
        if array.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got shape {array.shape}")
        captions = [None] * len(paths) if captions is None else list(captions)
        if not len(paths) == len(captions) == len(array):
            raise ValueError(
                f"{len(array)} embeddings, {len(paths)} paths, {len(captions)} captions"
            )
        if not np.isfinite(array).all():
            raise ValueError("embeddings contain NaN or inf")
        check_unique(list(paths), set())
        now = utc_now()
        return cls(array, list(paths), captions, fingerprint, dict(meta or {}), now, now)

    def describe(self, count: int | None = None) -> dict[str, Any]:
        """The JSON description every backend stores beside its rows."""
        return {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "dim": int(self.embeddings.shape[1]),
            "dtype": str(self.embeddings.dtype),
            "count": len(self.paths) if count is None else count,
            "created": self.created,
            "updated": self.updated,
            "meta": self.meta,
        }


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a database server's URL rather than a folder."""
    return str(location).startswith(("http://", "https://"))


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def to_numpy(array: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().cpu().float().numpy()
    return np.asarray(array)


def check_queries(queries: np.ndarray | Tensor, dim: int, name: str) -> np.ndarray:
    """(Q, D) contiguous float32 queries, or an error naming the index."""
    array = np.ascontiguousarray(to_numpy(queries), dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"queries must be (Q, D), got shape {array.shape}")
    if array.shape[1] != dim:
        raise IndexMismatchError(
            f"queries have dim {array.shape[1]}, but index {name} has dim {dim}"
        )
    if not np.isfinite(array).all():
        raise ValueError("queries contain NaN or inf")
    return array


def check_exclude(
    exclude: Sequence[int] | np.ndarray | Tensor | None, Q: int, N: int
) -> np.ndarray | None:
    """(Q,) int64 rows to leave out, or ``None``; rejects a wrong length or range."""
    if exclude is None:
        return None
    if isinstance(exclude, Tensor):
        exclude = exclude.cpu().numpy()
    skip = np.asarray(exclude, dtype=np.int64).reshape(-1)
    if len(skip) != Q:
        raise ValueError(f"exclude has {len(skip)} entries for {Q} queries")
    if Q and (skip.min() < -1 or skip.max() >= N):
        raise ValueError(f"exclude holds a row outside -1..{N - 1}")
    return skip


def clip_k(k: int, N: int, skip: np.ndarray | None) -> int:
    """``k`` clipped to the candidates there are, so no result slot is ever empty."""
    if k < 1:
        raise ValueError(f"k must be positive, got k={k}")
    return min(k, N - int(skip is not None and bool((skip >= 0).any())))


def sort_exact(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by descending score, ties by ascending id."""
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def check_unique(paths: list[str], existing: Container[str]) -> None:
    repeated = [p for p in paths if p in existing] + [p for p, n in Counter(paths).items() if n > 1]
    if repeated:
        raise DataError(
            f"{len(repeated)} image path(s) already in the index or given twice, e.g. "
            f"'{repeated[0]}'; pass each image once (skip those with `path in index`)"
        )


def check_dim(dim: int, index: GalleryIndex) -> None:
    if dim != index.dim:
        raise IndexMismatchError(
            f"new embeddings have dim {dim}, but index {index.name} has dim {index.dim}"
        )


def missing_extra(extra: str, module: str) -> StyleQueryError:
    """The one-line error for a backend whose optional package is not installed."""
    return StyleQueryError(
        f"the {extra} backend needs the '{module}' package: pip install 'stylequery[{extra}]'"
    )


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
