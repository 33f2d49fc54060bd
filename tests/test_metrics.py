"""Metrics against hand-built rankings and a brute-force sorting reference."""

from __future__ import annotations

import pytest
import torch

from stylequery.metrics import (
    first_hit_rank,
    recall_at_k,
    recall_by_group,
    recall_from_topk,
    selection_score,
    topk_first_hit,
)


def brute_force_ranks(
    scores: torch.Tensor, gallery: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None
) -> list[int]:
    """Sort the gallery by (-score, index) without the excluded item; find the first hit."""
    Q, N = scores.shape
    ranks = []
    for q in range(Q):
        row = scores[q].tolist()
        order = sorted(range(N), key=lambda j: (-row[j], j))
        if exclude is not None:
            order = [j for j in order if j != int(exclude[q])]
        hits = [r for r, j in enumerate(order) if int(gallery[j]) == int(target[q])]
        ranks.append(hits[0] if hits else N)
    return ranks


def random_case(seed: int, Q: int = 23, N: int = 41, num_labels: int = 9):
    """Scores rounded to one decimal (many ties), labels drawn so some queries have no hit."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.round(torch.rand(Q, N, generator=gen) * 10) / 10
    gallery = torch.randint(0, num_labels, (N,), generator=gen)
    target = torch.randint(0, num_labels + 3, (Q,), generator=gen)  # labels >= 9: no hit
    exclude = torch.randint(-1, N, (Q,), generator=gen)
    return scores, gallery, target, exclude


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_first_hit_rank_matches_brute_force(seed: int, with_exclude: bool) -> None:
    scores, gallery, target, exclude = random_case(seed)
    exclude = exclude if with_exclude else None
    expected = torch.tensor(brute_force_ranks(scores, gallery, target, exclude))
    ranks = first_hit_rank(scores, gallery, target, exclude)
    assert ranks.dtype == torch.long
    torch.testing.assert_close(ranks, expected)
    assert (ranks == scores.shape[1]).any(), "the case should contain queries without a hit"


def test_exclude_source_that_is_also_a_hit() -> None:
    # Query 0's own image (index 0) has the target label and the top score: it must not count.
    scores = torch.tensor([[0.9, 0.5, 0.7, 0.5]])
    gallery = torch.tensor([3, 3, 1, 3])
    target = torch.tensor([3])
    assert first_hit_rank(scores, gallery, target).tolist() == [0]
    assert first_hit_rank(scores, gallery, target, torch.tensor([0])).tolist() == [1]
    # Excluding a non-hit ranked above the hit moves the hit up one place.
    assert first_hit_rank(scores, gallery, target, torch.tensor([2])).tolist() == [0]
    scores = torch.tensor([[0.1, 0.5, 0.7, 0.5]])
    assert first_hit_rank(scores, gallery, target, torch.tensor([2])).tolist() == [0]
    assert first_hit_rank(scores, gallery, target, torch.tensor([-1])).tolist() == [1]


def test_ties_go_to_lower_index() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    gallery = torch.tensor([0, 1, 2, 1])
    target = torch.tensor([1, 2])
    assert first_hit_rank(scores, gallery, target).tolist() == [1, 2]
    assert first_hit_rank(scores, gallery, target, torch.tensor([0, 1])).tolist() == [0, 1]


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 7, 1000])
def test_chunking_gives_identical_results(chunk_size: int) -> None:
    scores, gallery, target, exclude = random_case(7, Q=19)
    full = first_hit_rank(scores, gallery, target, exclude, chunk_size=None)
    torch.testing.assert_close(
        first_hit_rank(scores, gallery, target, exclude, chunk_size=chunk_size), full
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_scores(dtype: torch.dtype) -> None:
    scores, gallery, target, exclude = random_case(11)
    scores = scores.to(dtype)
    expected = torch.tensor(brute_force_ranks(scores.float(), gallery, target, exclude))
    torch.testing.assert_close(first_hit_rank(scores, gallery, target, exclude), expected)


def test_no_hit_and_empty_inputs() -> None:
    scores = torch.zeros(2, 3)
    ranks = first_hit_rank(scores, torch.tensor([0, 0, 0]), torch.tensor([1, 2]))
    assert ranks.tolist() == [3, 3]
    assert (
        first_hit_rank(torch.zeros(0, 3), torch.zeros(3).long(), torch.zeros(0).long()).numel() == 0
    )
    empty = first_hit_rank(torch.zeros(2, 0), torch.zeros(0).long(), torch.tensor([1, 2]))
    assert empty.tolist() == [0, 0]


def test_first_hit_rank_rejects_bad_inputs() -> None:
    gallery, target = torch.tensor([0, 1]), torch.tensor([0])
    with pytest.raises(ValueError, match="NaN"):
        first_hit_rank(torch.tensor([[float("nan"), 0.0]]), gallery, target)
    with pytest.raises(ValueError, match="gallery_labels"):
        first_hit_rank(torch.zeros(1, 3), gallery, target)
    with pytest.raises(ValueError, match="exclude"):
        first_hit_rank(torch.zeros(1, 2), gallery, target, torch.tensor([2]))


def test_recall_at_k_hand_built() -> None:
    ranks = torch.tensor([0, 1, 4, 5, 9, 50])
    recall = recall_at_k(ranks, [1, 5, 10, 50])
    assert list(recall) == ["recall@1", "recall@5", "recall@10", "recall@50"]
    assert recall["recall@1"] == pytest.approx(1 / 6)
    assert recall["recall@5"] == pytest.approx(3 / 6)
    assert recall["recall@10"] == pytest.approx(5 / 6)
    assert recall["recall@50"] == pytest.approx(5 / 6)


def test_selection_score_is_one_recall_or_the_mean_of_all() -> None:
    metrics = recall_at_k(torch.tensor([0, 1, 4, 5, 9, 50]), [1, 5, 10, 50])  # 1/6 3/6 5/6 5/6
    assert selection_score(metrics, "recall@5") == pytest.approx(0.5)
    assert selection_score(metrics, "recall_mean") == pytest.approx((1 + 3 + 5 + 5) / 24)


def test_recall_at_k_rejects_empty_and_bad_k() -> None:
    with pytest.raises(ValueError, match="zero queries"):
        recall_at_k(torch.zeros(0, dtype=torch.long), [1])
    with pytest.raises(ValueError, match="positive"):
        recall_at_k(torch.tensor([0]), [0])


def test_end_to_end_hand_built_ranking() -> None:
    # Three queries over five gallery items; expected ranks worked out by hand.
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],  # hit at index 2 -> rank 2
            [0.1, 0.9, 0.9, 0.2, 0.3],  # source 1 ties hit 2 but is excluded -> rank 0
            [0.5, 0.5, 0.5, 0.5, 0.5],  # no hit -> rank 5
        ]
    )
    gallery = torch.tensor([0, 2, 1, 1, 3])
    target = torch.tensor([1, 1, 4])
    ranks = first_hit_rank(scores, gallery, target, torch.tensor([-1, 1, 0]))
    assert ranks.tolist() == [2, 0, 5]
    assert first_hit_rank(scores, gallery, target).tolist() == [2, 1, 5]
    assert recall_at_k(ranks, [1, 3]) == {"recall@1": pytest.approx(1 / 3), "recall@3": 2 / 3}


def test_recall_from_topk_matches_full_ranks() -> None:
    scores, gallery, target, _ = random_case(3)
    Q = scores.shape[0]
    topk = torch.stack([torch.argsort(-scores[q].double(), stable=True)[:10] for q in range(Q)])
    ranks = first_hit_rank(scores, gallery, target)
    assert recall_from_topk(topk, gallery, target, [1, 5, 10]) == recall_at_k(ranks, [1, 5, 10])
    with pytest.raises(ValueError, match="recall@20"):
        recall_from_topk(topk, gallery, target, [20])


def test_topk_first_hit_skips_empty_slots() -> None:
    ids = torch.tensor([[2, -1], [-1, -1], [0, 1]])
    gallery = torch.tensor([5, 6, 7])
    target = torch.tensor([7, 7, 6])
    assert topk_first_hit(ids, gallery, target).tolist() == [0, 2, 1]


def test_recall_by_group() -> None:
    ranks = torch.tensor([0, 3, 10, 0])
    groups = ["colour", "other", "colour", "other"]
    result = recall_by_group(ranks, groups, [1, 5])
    assert list(result) == ["colour", "other"]
    assert result["colour"] == {"recall@1": 0.5, "recall@5": 0.5}
    assert result["other"] == {"recall@1": 0.5, "recall@5": 1.0}
