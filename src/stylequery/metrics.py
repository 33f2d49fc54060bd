"""Retrieval metrics as pure functions on tensors.

Ranking order everywhere: descending score, ties broken by the lower gallery index. A query's
*rank* is the 0-based position of its first hit (a gallery item whose label equals the query's
target label) in that order; recall@k is the fraction of queries whose rank is below ``k``.

Labels are integers, equal exactly when captions are equal (see ``data.caption_labels``), so a
hit is any gallery image whose caption equals the target caption.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from stylequery.config import RECALL_MEAN

# Scores per chunk in first_hit_rank when no chunk size is given: ~64 MiB of float32.
_AUTO_CHUNK_ELEMENTS = 1 << 24


def first_hit_rank(
    scores: Tensor,
    gallery_labels: Tensor,
    target_labels: Tensor,
    exclude: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """0-based rank of each query's first hit, without sorting the gallery.

    With ``h`` the hit of highest score (lowest index among equal scores), the rank is
    ``#{j: s_j > s_h} + #{j < h: s_j == s_h}`` over the gallery items not excluded. The
    excluded item of a query (its own source image) neither counts as a hit nor takes a rank.

    Args:
        scores: (Q, N) similarity of every query to every gallery item; any float dtype,
            compared in float32. Must not contain NaN.
        gallery_labels: (N,) integer label of each gallery item.
        target_labels: (Q,) integer label a hit must have.
        exclude: (Q,) gallery index to ignore per query, ``-1`` for none.
        chunk_size: queries processed at once; ``None`` picks one that keeps each chunk's
            (chunk, N) work arrays around 64 MiB.

    Returns:
        (Q,) int64 ranks on the CPU; ``N`` for a query with no hit.

    Raises:
        ValueError: on mismatched shapes or NaN scores.
    """
    Q, N = _check_rank_inputs(scores, gallery_labels, target_labels, exclude)
    if chunk_size is None:
        chunk_size = max(1, _AUTO_CHUNK_ELEMENTS // max(N, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device = scores.device
    gallery_labels, target_labels = gallery_labels.to(device), target_labels.to(device)
    exclude = torch.full((Q,), -1, device=device) if exclude is None else exclude.to(device)
    ranks = [
        _rank_chunk(
            scores[i : i + chunk_size].float(),  # (C, N)
            gallery_labels,
            target_labels[i : i + chunk_size],
            exclude[i : i + chunk_size],
        ).cpu()
        for i in range(0, Q, chunk_size)
    ]
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def _check_rank_inputs(
    scores: Tensor, gallery_labels: Tensor, target_labels: Tensor, exclude: Tensor | None
) -> tuple[int, int]:
    """Validate shapes for :func:`first_hit_rank` and return (Q, N)."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be (Q, N), got shape {tuple(scores.shape)}")
    Q, N = scores.shape
    if gallery_labels.shape != (N,):
        raise ValueError(f"gallery_labels must be ({N},), got {tuple(gallery_labels.shape)}")
    if target_labels.shape != (Q,):
        raise ValueError(f"target_labels must be ({Q},), got {tuple(target_labels.shape)}")
    if exclude is not None and exclude.shape != (Q,):
        raise ValueError(f"exclude must be ({Q},), got {tuple(exclude.shape)}")
    if exclude is not None and Q and (exclude.min() < -1 or exclude.max() >= N):
        raise ValueError(f"exclude holds an index outside -1..{N - 1}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; ranks would be undefined")
    return Q, N


def _rank_chunk(
    scores: Tensor, gallery_labels: Tensor, target_labels: Tensor, exclude: Tensor
) -> Tensor:
    """Ranks for one chunk of queries; ``scores`` is (C, N) float32.

    Counts run over the whole gallery, then the excluded item's own contribution is taken
    off: cheaper than masking every (C, N) comparison.
    """
    C, N = scores.shape
    if N == 0:
        return torch.zeros(C, dtype=torch.long, device=scores.device)
    hit = gallery_labels[None, :] == target_labels[:, None]  # (C, N)
    rows = torch.nonzero(exclude >= 0).squeeze(1)
    hit[rows, exclude[rows]] = False  # the query's own image is never a hit
    neg_inf = torch.tensor(float("-inf"), device=scores.device)
    best = torch.where(hit, scores, neg_inf).amax(dim=1, keepdim=True)  # (C, 1)
    at_best = scores == best  # (C, N)
    positions = torch.arange(N, device=scores.device)
    first = torch.where(hit & at_best, positions, N).amin(dim=1, keepdim=True)  # (C, 1)
    ahead = (scores > best) | (at_best & (positions < first))  # (C, N) ranked before the hit
    rank = ahead.sum(dim=1)
    rank[rows] -= ahead[rows, exclude[rows]].long()
    return torch.where(hit.any(dim=1), rank, N)


def recall_at_k(ranks: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Fraction of queries whose first hit ranks below each ``k``.

    Args:
        ranks: (Q,) 0-based first-hit ranks, as from :func:`first_hit_rank`.
        ks: cut-offs, each positive.

    Returns:
        ``{"recall@1": ..., "recall@5": ...}`` in the order of ``ks``.

    Raises:
        ValueError: when ``ranks`` is empty (recall over no queries is undefined; callers
            report a missing query set before getting here) or a ``k`` is not positive.
    """
    ranks = torch.as_tensor(ranks).reshape(-1)
    if ranks.numel() == 0:
        raise ValueError("recall over zero queries is undefined")
    result = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"recall cut-off k must be positive, got {k}")
        result[f"recall@{k}"] = (ranks < k).double().mean().item()
    return result


def selection_score(metrics: dict[str, float], name: str) -> float:
    """The value of ``train.best_metric`` ``name``: one ``recall@K`` of ``metrics``, or
    ``recall_mean``, the mean of all of them."""
    if name == RECALL_MEAN:
        recalls = [v for k, v in metrics.items() if k.startswith("recall@")]
        return sum(recalls) / len(recalls)
    return metrics[name]


def topk_first_hit(
    topk_ids: Tensor | np.ndarray, gallery_labels: Tensor, target_labels: Tensor
) -> Tensor:
    """Position of the first hit within each row of an index search's result ids.

    Args:
        topk_ids: (Q, K) gallery ids in ranked order; ``-1`` marks an empty slot.
        gallery_labels: (N,) integer label of each gallery item.
        target_labels: (Q,) integer label a hit must have.

    Returns:
        (Q,) int64 position of the first hit, ``K`` when none of the ``K`` results is a hit.
    """
    ids = torch.as_tensor(topk_ids).long()
    Q, K = ids.shape
    gallery_labels = torch.as_tensor(gallery_labels).to(ids.device)
    target_labels = torch.as_tensor(target_labels).to(ids.device)
    filled = ids >= 0
    labels = gallery_labels[ids.clamp(min=0)]  # (Q, K)
    hit = filled & (labels == target_labels[:, None])
    positions = torch.arange(K, device=ids.device)
    return torch.where(hit, positions, K).amin(dim=1) if K else torch.zeros(Q, dtype=torch.long)


def recall_from_topk(
    topk_ids: Tensor | np.ndarray,
    gallery_labels: Tensor,
    target_labels: Tensor,
    ks: Sequence[int],
) -> dict[str, float]:
    """Recall@k from the ids an index search returned, for every ``k`` the ids can answer.

    Args:
        topk_ids: (Q, K) gallery ids in ranked order (``-1`` for an empty slot).
        gallery_labels: (N,) integer label of each gallery item.
        target_labels: (Q,) integer label a hit must have.
        ks: cut-offs; each must be at most ``K`` unless ``K`` covers the whole gallery.

    Returns:
        ``{"recall@k": ...}`` as :func:`recall_at_k`.

    Raises:
        ValueError: when some ``k`` exceeds ``K`` and ``K`` is smaller than the gallery.
    """
    ids = torch.as_tensor(topk_ids)
    num_results, num_gallery = ids.shape[1], len(gallery_labels)
    too_deep = [k for k in ks if k > num_results]
    if too_deep and num_results < num_gallery:
        raise ValueError(
            f"recall@{too_deep[0]} needs {too_deep[0]} results per query, got {num_results}"
        )
    return recall_at_k(topk_first_hit(ids, gallery_labels, target_labels), ks)


def recall_by_group(
    ranks: Tensor, groups: Sequence[str], ks: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Recall@k separately for each group of queries (e.g. colour changes vs other words).

    Args:
        ranks: (Q,) 0-based first-hit ranks.
        groups: group name of each query, ``len(groups) == Q``.
        ks: cut-offs.

    Returns:
        ``{group: {"recall@1": ..., ...}}`` (the shape of :func:`recall_at_k`) with groups in
        sorted order; groups with no queries do not appear.
    """
    ranks = torch.as_tensor(ranks).reshape(-1)
    if len(groups) != ranks.numel():
        raise ValueError(f"{len(groups)} group names for {ranks.numel()} ranks")
    result: dict[str, dict[str, float]] = {}
    for name in sorted(set(groups)):
        members = torch.tensor([g == name for g in groups], dtype=torch.bool)
        result[name] = recall_at_k(ranks[members], ks)
    return result
