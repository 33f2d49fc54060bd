"""Gallery indexes: one interface (:class:`GalleryIndex`), several backends.

- ``exact`` (:class:`EmbeddingIndex`, the default): a memory-mapped matrix searched exactly.
- ``faiss`` (``index/faiss.py``, extra ``[faiss]``): an IVF index whose candidates are re-scored
  exactly, for galleries too big for exact search.
- ``qdrant`` (``index/qdrant.py``, extra ``[qdrant]``): a Qdrant collection, in a local folder
  (qdrant-client's local mode) or on a server or cluster by URL.

Use :func:`open_index` to open any index by its location and :func:`build_index` to write one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stylequery.errors import IndexMismatchError
from stylequery.index.base import BACKENDS, Backend, Gallery, GalleryIndex
from stylequery.index.exact import INFO_FILE, EmbeddingIndex

__all__ = [
    "BACKENDS",
    "Backend",
    "EmbeddingIndex",
    "Gallery",
    "GalleryIndex",
    "backend_class",
    "build_index",
    "open_index",
    "stored_backend",
]


def backend_class(backend: str) -> type[GalleryIndex]:
    """The class of a backend by name."""
    if backend == "exact":
        return EmbeddingIndex
    if backend == "faiss":
        from stylequery.index.faiss import FaissIndex

        return FaissIndex
    if backend == "qdrant":
        from stylequery.index.qdrant import QdrantIndex

        return QdrantIndex
    raise IndexMismatchError(f"unknown index backend '{backend}'; choose one of {BACKENDS}")


def stored_backend(location: str | Path) -> str:
    """The backend of the index at ``location`` (``exact`` for folders written before backends)."""
    info_path = Path(location) / INFO_FILE
    if not info_path.is_file():
        return "exact"  # EmbeddingIndex.load names what is missing
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "exact"
    return str(info.get("backend", "exact")) if isinstance(info, dict) else "exact"


def open_index(location: str | Path, **search_params: Any) -> GalleryIndex:
    """Open the index at ``location``, whatever its backend.

    Args:
        location: an index folder.
        search_params: the backend's query-time settings (see each backend).

    Raises:
        IndexMismatchError: when there is no readable index there.
    """
    return backend_class(stored_backend(location)).open(location, **search_params)


def build_index(
    backend: Backend | str, location: str | Path, gallery: Gallery, **params: Any
) -> GalleryIndex:
    """Write ``gallery`` as a ``backend`` index at ``location`` and return it opened."""
    return backend_class(backend).create(location, gallery, **params)
