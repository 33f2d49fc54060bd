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

from stylequery.config import IndexConfig
from stylequery.errors import IndexMismatchError
from stylequery.index.base import BACKENDS, Backend, Gallery, GalleryIndex, is_url, utc_now
from stylequery.index.exact import INFO_FILE, EmbeddingIndex

# Which settings of the ``index`` config section reach each backend, at search and at build.
SEARCH_SETTINGS = {"exact": (), "faiss": ("nprobe", "refine"), "qdrant": ("hnsw_ef", "exact")}
BUILD_SETTINGS = {"exact": (), "faiss": ("nlist",), "qdrant": ()}

__all__ = [
    "BACKENDS",
    "Backend",
    "EmbeddingIndex",
    "Gallery",
    "GalleryIndex",
    "backend_class",
    "build_index",
    "build_params",
    "convert_index",
    "index_exists",
    "is_url",
    "open_index",
    "search_params",
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
        location: an index folder, or a qdrant server's ``http(s)://HOST:PORT/COLLECTION``.
        search_params: the backend's query-time settings (see each backend).

    Raises:
        IndexMismatchError: when there is no readable index there.
    """
    backend = "qdrant" if is_url(location) else stored_backend(location)
    return backend_class(backend).open(location, **search_params)


def build_index(
    backend: Backend | str, location: str | Path, gallery: Gallery, **params: Any
) -> GalleryIndex:
    """Write ``gallery`` as a ``backend`` index at ``location`` and return it opened."""
    return backend_class(backend).create(location, gallery, **params)


def index_exists(location: str | Path) -> bool:
    """Whether an index (or a pointer to one on a server) is at ``location``."""
    return is_url(location) or (Path(location) / INFO_FILE).is_file()


def search_params(settings: IndexConfig, location: str | Path) -> dict[str, Any]:
    """The ``index`` settings that tune search of the index at ``location`` (unset: left out)."""
    backend = "qdrant" if is_url(location) else stored_backend(location)
    return _chosen(settings, SEARCH_SETTINGS.get(backend, ()))


def build_params(settings: IndexConfig, backend: str) -> dict[str, Any]:
    """The ``index`` settings that shape a new ``backend`` index (unset ones left out)."""
    return _chosen(settings, BUILD_SETTINGS.get(backend, ()))


def _chosen(settings: IndexConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: getattr(settings, key) for key in keys if getattr(settings, key)}


def convert_index(
    source: GalleryIndex, backend: Backend | str, location: str | Path, **params: Any
) -> GalleryIndex:
    """Write the rows of ``source`` as a ``backend`` index at ``location``, without re-encoding.

    The fingerprint, meta, dtype and creation time carry over.
    """
    rows = (
        source.embeddings if isinstance(source, EmbeddingIndex) else source.vectors(0, len(source))
    )
    items = source.items(range(len(source)))
    gallery = Gallery(
        rows.astype(source.dtype, copy=False),
        [path for path, _ in items],
        [caption for _, caption in items],
        source.fingerprint,
        dict(source.meta),
        str(source.info().get("created", utc_now())),
        utc_now(),
    )
    return build_index(backend, location, gallery, **params)
