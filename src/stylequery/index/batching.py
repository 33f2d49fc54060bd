"""Micro-batching of concurrent searches: the queries waiting at one moment share one search.

A search of a large gallery is bound by reading the gallery, not by the number of queries:
64 queries cost little more than one. Searched one by one from many server threads at once,
they also compete for the same cores and memory bandwidth (16 clients on a 1M gallery answered
5x fewer queries per second than one; BENCHMARKS.md, "Serving latency"). :class:`SearchBatcher`
queues each caller's query; one worker searches everything queued alike (up to ``max_batch``
queries of the same ``k``) in one call, hands each caller its row and takes the next batch.
A caller alone waits for nobody: it searches its own query at once, in a batch of one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from stylequery.index.base import GalleryIndex

MAX_BATCH = 64  # queries searched together at most


@dataclass(eq=False)
class _Request:
    query: np.ndarray  # (D,)
    k: int
    exclude: int
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[np.ndarray, np.ndarray] | None = None
    error: Exception | None = None

    @property
    def key(self) -> tuple[int, bool]:
        """Requests batched together: the same ``k``, and all or none excluding a row (the
        index clips ``k`` to the rows left, so a batch must agree on that to answer as alone)."""
        return self.k, self.exclude >= 0


class SearchBatcher:
    """Search ``index`` for many threads at once, batching the queries that wait together."""

    def __init__(self, index: GalleryIndex, max_batch: int = MAX_BATCH) -> None:
        self.index, self.max_batch = index, max_batch
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._working = False

    def search(self, query: np.ndarray, k: int, exclude: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """``index.search`` of one (1, D) query: (1, k) scores and ids, the same as alone.

        Raises:
            Whatever ``index.search`` raises for this query's batch.
        """
        request = _Request(np.asarray(query, np.float32).reshape(-1), k, exclude)
        with self._lock:
            self._queue.append(request)
            lead = not self._working
            self._working = True
        if lead:
            self._work(until=request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _work(self, until: _Request | None = None) -> None:
        """Search batches until the queue is empty, then stop (the next caller starts anew).

        A caller that found no search running does this itself (no thread switch for a lone
        query) until its own request is answered; then a thread of its own takes the rest, so
        the caller can return while others keep arriving.
        """
        while True:
            with self._lock:
                if not self._queue:
                    self._working = False
                    return
                if until is not None and until.done.is_set():
                    name = "stylequery-search"
                    threading.Thread(target=self._work, name=name, daemon=True).start()
                    return
                key = self._queue[0].key
                batch = [r for r in self._queue if r.key == key][: self.max_batch]
                self._queue = [r for r in self._queue if r not in batch]
            self._search(batch, key[0])

    def _search(self, batch: list[_Request], k: int) -> None:
        queries = np.stack([r.query for r in batch])  # (B, D)
        try:
            scores, ids = self.index.search(queries, k, exclude=[r.exclude for r in batch])
        except Exception as exc:  # not handled here: raised again in each waiting caller
            for request in batch:
                request.error = exc
        else:
            for row, request in enumerate(batch):
                request.result = scores[row : row + 1], ids[row : row + 1]
        finally:
            for request in batch:
                request.done.set()
