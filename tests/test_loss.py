"""Retrieval losses: hand-computed values, overfitting, positives offsets, scale gradient, DDP."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from stylequery.errors import ConfigError
from stylequery.loss import LOSSES, build_loss, gather_with_grad, gathered_positives

# Queries and targets of the 2x2 case; the losses normalise them.
QUERY = [[3.0, 4.0], [1.0, 0.0]]
TARGET = [[1.0, 0.0], [0.0, 2.0]]


pytestmark = pytest.mark.usefixtures("one_thread")


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def squared_distance(a: list[float], b: list[float], scale: float) -> float:
    return sum((scale * x - scale * y) ** 2 for x, y in zip(unit(a), unit(b), strict=True))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_batch_classification_matches_hand_computed_2x2() -> None:
    # cosines: q0 = (0.6, 0.8) vs t = (1, 0), (0, 1); q1 = (1, 0).
    logits = [[4.0 * 0.6, 4.0 * 0.8], [4.0 * 1.0, 4.0 * 0.0]]
    assert logits[0][1] == pytest.approx(4.0 * dot(unit(QUERY[0]), unit(TARGET[1])))
    ce0 = -logits[0][0] + math.log(math.exp(logits[0][0]) + math.exp(logits[0][1]))
    ce1 = -logits[1][1] + math.log(math.exp(logits[1][0]) + math.exp(logits[1][1]))
    expected = (ce0 + ce1) / 2
    loss = build_loss("batch_classification", scale_init=4.0)
    got = loss(torch.tensor(QUERY), torch.tensor(TARGET))
    torch.testing.assert_close(got, torch.tensor(expected))


def test_soft_triplet_matches_hand_computed_2x2() -> None:
    # One negative per query: (q0, t1) and (q1, t0); squared distances of 4 * unit vectors.
    d00, d01 = (
        squared_distance(QUERY[0], TARGET[0], 4.0),
        squared_distance(QUERY[0], TARGET[1], 4.0),
    )
    d10, d11 = (
        squared_distance(QUERY[1], TARGET[0], 4.0),
        squared_distance(QUERY[1], TARGET[1], 4.0),
    )
    assert (d00, d01, d10, d11) == pytest.approx((12.8, 6.4, 0.0, 32.0))
    expected = (softplus(d00 - d01) + softplus(d11 - d10)) / 2
    loss = build_loss("soft_triplet", scale_init=4.0)
    got = loss(torch.tensor(QUERY), torch.tensor(TARGET))
    torch.testing.assert_close(got, torch.tensor(expected))


def test_positives_index_into_more_targets() -> None:
    # Query 0's positive is target 2, query 1's is target 0; three targets (M > B).
    target = [*TARGET, [-1.0, 1.0]]
    positives = torch.tensor([2, 0])
    scale = 2.0
    cos = [[dot(unit(q), unit(t)) for t in target] for q in QUERY]
    ce = [
        -scale * cos[i][p] + math.log(sum(math.exp(scale * c) for c in cos[i]))
        for i, p in enumerate([2, 0])
    ]
    dist_ = [[squared_distance(q, t, scale) for t in target] for q in QUERY]
    triplet = [
        softplus(dist_[i][p] - dist_[i][j])
        for i, p in enumerate([2, 0])
        for j in range(3)
        if j != p
    ]
    got_ce = build_loss("batch_classification", scale)(
        torch.tensor(QUERY), torch.tensor(target), positives
    )
    got_triplet = build_loss("soft_triplet", scale)(
        torch.tensor(QUERY), torch.tensor(target), positives
    )
    torch.testing.assert_close(got_ce, torch.tensor(sum(ce) / 2))
    torch.testing.assert_close(got_triplet, torch.tensor(sum(triplet) / 4))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_falls_when_overfitting_one_batch(name: str) -> None:
    torch.manual_seed(0)
    query = torch.nn.Parameter(torch.randn(8, 16))
    target = torch.nn.Parameter(torch.randn(8, 16))
    loss_fn = build_loss(name)
    optimizer = torch.optim.SGD([query, target, *loss_fn.parameters()], lr=0.5)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(query, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_reaches_scale_and_inputs(name: str) -> None:
    torch.manual_seed(0)
    query = torch.randn(4, 8, requires_grad=True)
    target = torch.randn(6, 8, requires_grad=True)
    loss_fn = build_loss(name, scale_init=4.0)
    assert loss_fn.scale.item() == 4.0 and loss_fn.scale.requires_grad
    loss = loss_fn(query, target, torch.tensor([5, 0, 2, 3]))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for grad in (loss_fn.scale.grad, query.grad, target.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_inputs_need_not_be_normalised(name: str) -> None:
    torch.manual_seed(0)
    query, target = torch.randn(4, 8), torch.randn(4, 8)
    loss_fn = build_loss(name)
    torch.testing.assert_close(loss_fn(query, target), loss_fn(7.0 * query, 0.1 * target))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_autocast_gives_float32_loss(name: str) -> None:
    torch.manual_seed(0)
    query, target = torch.randn(4, 8), torch.randn(4, 8)
    loss_fn = build_loss(name)
    expected = loss_fn(query, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_fn(query.bfloat16(), target.bfloat16())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"train\.loss.*soft_triplet"):
        build_loss("hinge")
    query = torch.randn(2, 4)
    with pytest.raises(ValueError, match="shape"):
        build_loss("batch_classification")(query, torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="two targets"):
        build_loss("soft_triplet")(query[:1], torch.randn(1, 4))
    with pytest.raises(ValueError, match="positives"):
        build_loss("soft_triplet")(query, torch.randn(1, 4))


def test_gathered_positives_offset_by_rank() -> None:
    torch.testing.assert_close(gathered_positives(3), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(gathered_positives(3, rank=2), torch.tensor([6, 7, 8]))


def test_gather_with_grad_is_identity_without_distributed() -> None:
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x


def test_gather_with_grad_keeps_gradient_in_a_process_group(tmp_path: Path) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        x = torch.randn(3, 4, requires_grad=True)
        gathered = gather_with_grad(x)
        assert gathered.shape == (3, 4)
        loss = build_loss("batch_classification")(x, gathered, gathered_positives(3))
        loss.backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    finally:
        dist.destroy_process_group()


def _two_process_worker(rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    try:
        query, target = _ddp_inputs()
        q, t = query[rank].requires_grad_(), target[rank].requires_grad_()
        loss = build_loss("batch_classification")(q, gather_with_grad(t), gathered_positives(3))
        loss.backward()
        torch.save({"query": q.grad, "target": t.grad}, f"{out_dir}/grad{rank}.pt")
    finally:
        dist.destroy_process_group()


def _ddp_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and targets of two processes, (2, 3, 4) each."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, 4, generator=gen)


@pytest.mark.skipif(sys.platform != "linux", reason="forks two gloo processes")
def test_gather_with_grad_across_two_processes_matches_one_process(tmp_path: Path) -> None:
    torch.multiprocessing.start_processes(
        _two_process_worker,
        args=(str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    query, target = _ddp_inputs()
    query.requires_grad_()
    target.requires_grad_()
    loss_fn = build_loss("batch_classification")
    everything = target.reshape(6, 4)
    total = sum(loss_fn(query[r], everything, torch.arange(3) + 3 * r) for r in range(2))
    total.backward()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grad{rank}.pt")
        torch.testing.assert_close(grads["query"], query.grad[rank])
        torch.testing.assert_close(grads["target"], target.grad[rank])
