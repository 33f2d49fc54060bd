"""The qdrant backend: the gallery in a Qdrant collection, local folder or server alike.

The location is a folder (qdrant-client's local mode keeps the collection there, beside a
small ``index.json`` naming the backend), an ``http(s)://HOST:PORT/COLLECTION`` URL of a
server or cluster, or a folder whose ``index.json`` points at such a URL. The same code serves
all three; only the client differs.

Each row is a point: id = row, vector = embedding (dot product), payload ``{path, caption}``.
The checkpoint fingerprint, dim, dtype, row count and provenance live in the collection's
metadata. ``create`` fills a fresh versioned collection (``NAME-xxxxxxxx``) and then moves the
alias ``NAME`` onto it in one atomic alias operation, so a failed or killed build leaves the
earlier collection serving. ``add`` upserts the new rows after the existing ones and raises the
stored count last; rows at or past the count (an unfinished append) are never returned, and
the next ``add`` deletes them first. Searches re-rank by descending score, ties by lower row,
fetching more candidates while a tie straddles the cut. ``hnsw_ef`` and ``exact`` (1 to search
exhaustively) trade recall for speed on a server; local mode always searches exhaustively.
Needs ``qdrant-client`` (``pip install 'stylequery[qdrant]'``).
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from stylequery.errors import IndexMismatchError
from stylequery.fileio import read_json, write_json
from stylequery.index.base import (
    FORMAT_VERSION,
    Backend,
    Dtype,
    Gallery,
    GalleryIndex,
    check_dim,
    check_exclude,
    check_queries,
    check_unique,
    clip_k,
    folder_bytes,
    is_url,
    missing_extra,
    sort_exact,
    utc_now,
)
from stylequery.index.exact import INFO_FILE
from stylequery.progress import progress_bar

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "stylequery"
UPSERT_BATCH = 2048
SEARCH_KEYS = ("hnsw_ef", "exact")


def import_qdrant() -> Any:
    """The qdrant_client module, or the one-line install hint."""
    try:
        import qdrant_client
    except ImportError:
        raise missing_extra("qdrant", "qdrant-client") from None
    return qdrant_client


def connect(uri: str | Path, api_key: str | None = None) -> tuple[Any, str, bool]:
    """(client, alias, local mode?) for a folder or an ``http(s)://HOST:PORT/COLLECTION`` URL."""
    qdrant_client = import_qdrant()
    if is_url(uri):
        scheme, _, rest = str(uri).rstrip("/").partition("://")
        host, _, collection = rest.partition("/")
        client = qdrant_client.QdrantClient(url=f"{scheme}://{host}", api_key=api_key)
        return client, collection or DEFAULT_COLLECTION, False
    pointer = _read_pointer(Path(uri))
    if is_url(pointer.get("uri") or ""):
        return connect(pointer["uri"], api_key)
    collection = str(pointer.get("collection", DEFAULT_COLLECTION))
    return qdrant_client.QdrantClient(path=str(uri)), collection, True


def _read_pointer(folder: Path) -> dict[str, Any]:
    """The folder's ``index.json``: ``{"backend": "qdrant", "uri": URL or null, "collection"}``."""
    path = folder / INFO_FILE
    if not path.is_file():
        return {}
    pointer = read_json(path, "index description", IndexMismatchError)
    if not isinstance(pointer, dict) or pointer.get("backend") != "qdrant":
        raise IndexMismatchError(f"{path} does not describe a qdrant index")
    return pointer


class QdrantIndex(GalleryIndex):
    """A gallery in a Qdrant collection (see the module docstring)."""

    backend: ClassVar[Backend] = "qdrant"

    def __init__(
        self, client: Any, alias: str, location: str, search_params: dict[str, int], local: bool
    ) -> None:
        self.client, self.alias, self.location, self.local = client, alias, location, local
        self.collection = _resolve_alias(client, alias, location)
        info = self.client.get_collection(self.collection).config.metadata or {}
        if info.get("format_version") != FORMAT_VERSION or "fingerprint" not in info:
            raise IndexMismatchError(f"{location}: collection {alias} is not a stylequery index")
        self.stored = info
        self.fingerprint, self.meta = str(info["fingerprint"]), dict(info.get("meta", {}))
        self.search_params = search_params
        self._rows: dict[str, int] | None = None

    @classmethod
    def open(cls, location: str | Path, **search_params: Any) -> QdrantIndex:
        """Open by folder or URL; ``hnsw_ef`` and ``exact`` set the search effort."""
        api_key = search_params.pop("api_key", None)
        unknown = sorted(set(search_params) - set(SEARCH_KEYS))
        if unknown:
            raise IndexMismatchError(
                f"the qdrant backend has no search parameter {', '.join(unknown)}; "
                f"use {' or '.join(SEARCH_KEYS)}"
            )
        client, alias, local = connect(location, api_key)
        params = {"hnsw_ef": 256, "exact": 0, **{k: int(v) for k, v in search_params.items()}}
        return cls(client, alias, str(location), params, local)

    @classmethod
    def create(cls, location: str | Path, gallery: Gallery, **params: Any) -> QdrantIndex:
        """Fill a new collection and move the alias onto it (see the module docstring).

        Args:
            location: a folder (local mode, or where to write a pointer to ``uri``) or a URL.
            gallery: the rows.
            params: ``uri`` (a server URL; default: ``location`` itself), ``collection``
                (alias name, default ``stylequery``; a URL's path names it), ``api_key``.
        """
        uri = params.get("uri") or location
        client, alias, local = connect(uri, params.get("api_key"))
        alias = params.get("collection") or alias
        name = f"{alias}-{uuid.uuid4().hex[:8]}"
        _create_collection(client, name, gallery, payload_index=not local)
        _upsert(client, name, gallery, first=0)
        _move_alias(client, alias, name)
        client.close()
        if not is_url(location):
            server = str(uri) if is_url(uri) else None
            write_json(
                Path(location) / INFO_FILE,
                {"backend": "qdrant", "uri": server, "collection": alias},
            )
        opened = {"api_key": params["api_key"]} if params.get("api_key") else {}
        return cls.open(uri if is_url(uri) else location, **opened)

    def add(
        self,
        embeddings: np.ndarray | Tensor,
        paths: Sequence[str],
        captions: Sequence[str | None] | None = None,
    ) -> QdrantIndex:
        """Upsert rows after the existing ones, then raise the stored count (the commit)."""
        extra = Gallery.of(embeddings, paths, captions, self.fingerprint, self.dtype)
        check_dim(extra.embeddings.shape[1], self)
        check_unique(extra.paths, {p for p in extra.paths if self.find(p) >= 0})
        count = len(self)
        stale = self.client.count(self.collection, exact=True).count - count
        if stale > 0:  # rows of an unfinished append
            self.client.delete(self.collection, points_selector=list(range(count, count + stale)))
        _upsert(self.client, self.collection, extra, first=count)
        info = {**self.stored, "count": count + len(extra.paths), "updated": utc_now()}
        self.client.update_collection(self.collection, metadata=info)
        self.stored, self._rows = info, None
        return self

    def close(self) -> None:
        """Release the client (local mode locks its folder while a client holds it)."""
        self.client.close()

    def __len__(self) -> int:
        return int(self.stored["count"])

    @property
    def dim(self) -> int:
        return int(self.stored["dim"])

    @property
    def dtype(self) -> Dtype:
        return "float16" if self.stored["dtype"] == "float16" else "float32"

    @property
    def name(self) -> str:
        return f"{self.location} (collection {self.alias})"

    def find(self, path: str) -> int:
        if self._rows is None:  # every path once: local mode scans for each filter anyway
            self._rows = {p: row for row, (p, _) in enumerate(self.items(range(len(self))))}
        return self._rows.get(path, -1)

    def items(self, rows: Sequence[int]) -> list[tuple[str, str | None]]:
        points = self._retrieve(rows, vectors=False)
        return [(points[row].payload["path"], points[row].payload.get("caption")) for row in rows]

    def vectors(self, start: int, stop: int) -> np.ndarray:
        points = self._retrieve(range(start, stop), vectors=True)
        rows = [points[row].vector for row in range(start, stop)]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)

    def _retrieve(self, rows: Sequence[int], vectors: bool) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for start in range(0, len(rows), UPSERT_BATCH):
            batch = [int(r) for r in rows[start : start + UPSERT_BATCH]]
            for point in self.client.retrieve(self.collection, batch, with_vectors=vectors):
                found[int(point.id)] = point
        missing = [r for r in rows if r not in found]
        if missing:
            raise IndexMismatchError(f"index {self.name} is corrupt: row {missing[0]} is missing")
        return found

    def search(
        self,
        queries: np.ndarray | Tensor,
        k: int,
        exclude: Sequence[int] | np.ndarray | Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by dot product; re-ranked by (score desc, row asc), own rows left out."""
        query_array = check_queries(queries, self.dim, self.name)
        Q, N = len(query_array), len(self)
        skip = check_exclude(exclude, Q, N)
        k = clip_k(k, N, skip) if N else 0
        scores, ids = np.zeros((Q, k), np.float32), np.zeros((Q, k), np.int64)
        todo, fetch = list(range(Q)), k + 1
        while todo and k:
            hits = self._query(query_array[todo], fetch)
            unsettled = []
            for q, points in zip(todo, hits, strict=True):
                drop = -1 if skip is None else int(skip[q])
                got = [(p.score, int(p.id)) for p in points if int(p.id) < N and p.id != drop]
                if _settled(got, points, k, fetch):
                    s, i = sort_exact(
                        np.array([[g[0] for g in got]], np.float32),
                        np.array([[g[1] for g in got]], np.int64),
                    )
                    scores[q], ids[q] = s[0, :k], i[0, :k]
                else:
                    unsettled.append(q)
            todo, fetch = unsettled, fetch * 2
        return scores, ids

    def _query(self, queries: np.ndarray, limit: int) -> list[list[Any]]:
        models = import_qdrant().models
        params = None  # local mode always searches exhaustively and takes no parameters
        if not self.local:
            effort = self.search_params
            params = models.SearchParams(hnsw_ef=effort["hnsw_ef"], exact=bool(effort["exact"]))
        requests = [
            models.QueryRequest(query=q.tolist(), limit=limit, params=params) for q in queries
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        return [response.points for response in responses]

    def info(self) -> dict[str, Any]:
        local = not is_url(self.location) and Path(self.location).is_dir()
        return {
            **self.stored,
            "backend": self.backend,
            "location": self.location,
            "collection": self.collection,
            "bytes": folder_bytes(Path(self.location)) if local else None,
            "params": dict(self.search_params),
        }


def _settled(got: list[tuple[float, int]], returned: list[Any], k: int, fetch: int) -> bool:
    """Whether the fetched points decide the top k, ties at the cut included.

    ``returned`` is what the database gave, best first; ``got`` the usable part of it.
    """
    if len(returned) < fetch:
        return True  # the collection has no more points
    if len(got) < k:
        return False
    kth = sorted((score for score, _ in got), reverse=True)[k - 1]
    return bool(returned[-1].score < kth)  # an unseen point scores <= the last one seen


def _resolve_alias(client: Any, alias: str, location: str) -> str:
    for item in client.get_aliases().aliases:
        if item.alias_name == alias:
            return str(item.collection_name)
    raise IndexMismatchError(f"{location}: no stylequery index (collection alias {alias}) there")


def _create_collection(client: Any, name: str, gallery: Gallery, payload_index: bool) -> None:
    models = import_qdrant().models
    datatype = models.Datatype.FLOAT16 if gallery.embeddings.dtype == np.float16 else None
    vectors = models.VectorParams(
        size=gallery.embeddings.shape[1], distance=models.Distance.DOT, datatype=datatype
    )
    metadata = {**gallery.describe(), "backend": "qdrant"}
    client.create_collection(name, vectors_config=vectors, metadata=metadata)
    if payload_index:  # a server looks paths up by it; local mode has no payload indexes
        client.create_payload_index(name, "path", models.PayloadSchemaType.KEYWORD)


@contextmanager
def _bulk_writes(client: Any, collection: str) -> Iterator[None]:
    """Let local mode skip its fsync per point during a bulk upsert; one fsync at the end.

    qdrant-client's local mode commits every point to SQLite on its own (about 5 ms each with
    the default ``synchronous=FULL``: an hour for 100k rows). The rows are durable once the
    block ends, before the alias or the stored count makes them visible. Reaches into local
    mode's private storage; where that is not there (a server, another version) it does nothing.
    """
    storage = getattr(getattr(client, "_client", None), "collections", {}).get(collection)
    connection = getattr(getattr(storage, "storage", None), "storage", None)
    if not isinstance(connection, sqlite3.Connection):
        yield
        return
    connection.execute("PRAGMA synchronous=OFF")
    try:
        yield
    finally:
        connection.execute("PRAGMA synchronous=FULL")
        with connection:  # a committed write under FULL syncs every page written before it
            connection.execute("CREATE TABLE IF NOT EXISTS stylequery_sync (x)")
            connection.execute("DELETE FROM stylequery_sync")


def _upsert(client: Any, collection: str, gallery: Gallery, first: int) -> None:
    models = import_qdrant().models
    with (
        _bulk_writes(client, collection),
        progress_bar("qdrant upsert", total=len(gallery.paths)) as bar,
    ):
        for start in range(0, len(gallery.paths), UPSERT_BATCH):
            stop = min(start + UPSERT_BATCH, len(gallery.paths))
            batch = models.Batch(
                ids=list(range(first + start, first + stop)),
                vectors=gallery.embeddings[start:stop].astype(np.float32).tolist(),
                payloads=[
                    {"path": p, "caption": c}
                    for p, c in zip(
                        gallery.paths[start:stop], gallery.captions[start:stop], strict=True
                    )
                ],
            )
            client.upsert(collection, points=batch, wait=True)
            bar.advance(stop - start)


def _move_alias(client: Any, alias: str, name: str) -> None:
    """Point ``alias`` at ``name`` atomically, then drop the collections it replaced."""
    models = import_qdrant().models
    old = [a.collection_name for a in client.get_aliases().aliases if a.alias_name == alias]
    operations: list[Any] = (
        [models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))]
        if old
        else []
    )
    operations.append(
        models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=name, alias_name=alias)
        )
    )
    client.update_collection_aliases(change_aliases_operations=operations)
    for collection in client.get_collections().collections:
        if collection.name.startswith(f"{alias}-") and collection.name != name:
            client.delete_collection(collection.name)  # replaced, or left by a killed build
