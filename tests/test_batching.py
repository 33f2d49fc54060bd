"""SearchBatcher: concurrent searches share one index search and answer as if alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from stylequery.index import EmbeddingIndex
from stylequery.index.batching import SearchBatcher


def _index(num: int = 300, dim: int = 16) -> EmbeddingIndex:
    rows = np.random.default_rng(0).standard_normal((num, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return EmbeddingIndex.build(rows, [f"{i}.jpg" for i in range(num)], [None] * num, "f" * 64)


class _Recording:
    """An index whose searches take ``delay`` seconds and are recorded (batch size, thread)."""

    def __init__(self, index: EmbeddingIndex, delay: float) -> None:
        self.index, self.delay = index, delay
        self.calls: list[int] = []
        self.threads: list[str] = []

    def search(self, queries: np.ndarray, k: int, exclude: Any = None) -> Any:
        self.calls.append(len(queries))
        self.threads.append(threading.current_thread().name)
        time.sleep(self.delay)
        return self.index.search(queries, k, exclude=exclude)


def _queries(num: int, dim: int = 16) -> np.ndarray:
    queries = np.random.default_rng(1).standard_normal((num, dim)).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def test_concurrent_searches_are_batched_and_answer_as_alone() -> None:
    index = _index()
    slow = _Recording(index, delay=0.05)  # slow enough that callers pile up
    batcher = SearchBatcher(slow)  # type: ignore[arg-type]
    queries = _queries(24)
    # k and exclusion differ between requests: only alike ones may share a search.
    asks = [(q, 5 + i % 2, i if i % 3 else -1) for i, q in enumerate(queries)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda a: batcher.search(a[0][None], a[1], a[2]), asks))
    for (query, k, exclude), (scores, ids) in zip(asks, answers, strict=True):
        alone_scores, alone_ids = index.search(query[None], k, exclude=[exclude])
        np.testing.assert_array_equal(ids, alone_ids)
        np.testing.assert_array_equal(scores, alone_scores)
    assert sum(slow.calls) == 24 and max(slow.calls) > 1  # some searches were shared


def test_a_lone_query_is_searched_at_once_by_its_own_thread() -> None:
    recording = _Recording(_index(), delay=0)
    batcher = SearchBatcher(recording)  # type: ignore[arg-type]
    for query in _queries(3):
        scores, ids = batcher.search(query[None], 4)
        assert scores.shape == ids.shape == (1, 4)
    assert recording.calls == [1, 1, 1]
    assert recording.threads == [threading.current_thread().name] * 3  # no hand-over


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs() -> None:
    batcher = SearchBatcher(_index())
    with pytest.raises(ValueError, match="k and chunk_size must be positive"):
        batcher.search(_queries(1), 0)
    scores, _ = batcher.search(_queries(1), 3)
    assert scores.shape == (1, 3)
