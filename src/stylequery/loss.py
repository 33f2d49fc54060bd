"""Retrieval losses on embeddings: queries (B, D) against targets (M, D).

``positives[i]`` is the row of ``target`` that query ``i`` should retrieve (default
``arange(B)``); every other row is a negative. In a DDP run the targets are all-gathered
(:func:`gather_with_grad`, M = world * B) and the positives offset by ``rank * B``
(:func:`gathered_positives`). Both inputs are L2-normalised here, in float32 with autocast off,
so callers may pass raw or normalised embeddings. Each loss owns one learnable ``scale``;
the trainer must hand ``loss.parameters()`` to the optimiser along with the model's.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylequery import runtime
from stylequery.errors import ConfigError

logger = logging.getLogger(__name__)


class RetrievalLoss(nn.Module):
    """Base class: a learnable ``scale`` and the normalised query/target similarities.

    Args:
        scale_init: Initial value of the learnable scale.
    """

    def __init__(self, scale_init: float = 4.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, query: Tensor, target: Tensor, positives: Tensor | None = None) -> Tensor:
        """Loss of queries (B, D) against targets (M, D), positives (B,) -> scalar."""
        device_type = query.device.type
        # Similarities of unit vectors are compared across the whole batch: keep them in fp32.
        with torch.autocast(device_type=device_type, enabled=False):
            q = F.normalize(query.float(), dim=-1)  # (B, D)
            t = F.normalize(target.float(), dim=-1)  # (M, D)
            cosine = q @ t.T  # (B, M)
            positives = _check_positives(positives, q.size(0), t.size(0), q.device)  # (B,)
            return self.loss_from_cosine(cosine, positives)

    def loss_from_cosine(self, cosine: Tensor, positives: Tensor) -> Tensor:
        """The loss from cosine similarities (B, M) and positive indices (B,) -> scalar."""
        raise NotImplementedError


class BatchClassificationLoss(RetrievalLoss):
    """Softmax cross-entropy over the targets.

    ``loss = mean_i CE(scale * cos(q_i, t_j) over j, positives[i])``, with q and t
    L2-normalised and ``scale`` learnable.
    """

    def loss_from_cosine(self, cosine: Tensor, positives: Tensor) -> Tensor:
        """Cross-entropy of ``scale * cosine`` (B, M) with labels ``positives`` (B,) -> scalar."""
        logits = self.scale * cosine  # (B, M)
        return F.cross_entropy(logits, positives)


class SoftTripletLoss(RetrievalLoss):
    """Soft-margin triplet loss over every (query, negative) pair.

    With ``q_i``, ``t_j`` L2-normalised, ``s`` the learnable scale and ``p_i = positives[i]``::

        d(i, j) = || s * q_i - s * t_j ||^2 = 2 * s^2 * (1 - q_i . t_j)
        loss = 1 / (B * (M - 1)) * sum_i sum_{j != p_i} softplus(d(i, p_i) - d(i, j))

    where ``softplus(x) = log(1 + exp(x))``. Needs at least two targets (M >= 2).
    """

    def loss_from_cosine(self, cosine: Tensor, positives: Tensor) -> Tensor:
        """Mean soft triplet term over (query, negative) pairs: cosine (B, M) -> scalar."""
        if cosine.size(1) < 2:
            raise ValueError("soft_triplet needs at least two targets (one positive, negatives)")
        distance = 2.0 * self.scale**2 * (1.0 - cosine)  # (B, M)
        positive = distance.gather(1, positives.view(-1, 1))  # (B, 1)
        terms = F.softplus(positive - distance)  # (B, M)
        negative = torch.ones_like(terms, dtype=torch.bool)  # (B, M)
        negative.scatter_(1, positives.view(-1, 1), False)
        return terms[negative].mean()


LOSSES: dict[str, type[RetrievalLoss]] = {
    "batch_classification": BatchClassificationLoss,
    "soft_triplet": SoftTripletLoss,
}


def build_loss(name: str, scale_init: float = 4.0) -> RetrievalLoss:
    """Build the loss registered as ``name`` (``train.loss``).

    Raises:
        ConfigError: the name is not registered.
    """
    if name not in LOSSES:
        raise ConfigError(
            f"config key 'train.loss': unknown loss {name!r}; choose from {sorted(LOSSES)}"
        )
    return LOSSES[name](scale_init)


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather rows from every DDP process, keeping the gradient: (B, D) -> (world * B, D).

    The identity when torch.distributed is not initialised. Every process must pass the same
    shape; rows are ordered by rank. The gradient reaching each process's ``x`` is the sum of
    the gradients of every process's loss with respect to it (DDP then averages as usual).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x  # (B, D)
    return _AllGather.apply(x)  # (world * B, D)


class _AllGather(torch.autograd.Function):
    """all_gather with a backward pass: sum the gathered gradient over processes, keep our rows.

    (``torch.distributed.nn.functional.all_gather`` does this but is deprecated in torch 2.x.)
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.start, ctx.stop = dist.get_rank() * x.size(0), (dist.get_rank() + 1) * x.size(0)
        return torch.cat(parts, dim=0)  # (world * B, D)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()  # (world * B, D); all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]  # (B, D)


def gathered_positives(
    batch_size: int, rank: int | None = None, device: torch.device | None = None
) -> Tensor:
    """Indices of this process's targets within gathered targets: ``rank * B + arange(B)``.

    Args:
        batch_size: Per-process batch size B (the same on every process).
        rank: Process rank; default the current one (0 without torch.distributed).
        device: Device of the result.

    Returns:
        (B,) long indices.
    """
    offset = (runtime.rank() if rank is None else rank) * batch_size
    return torch.arange(offset, offset + batch_size, device=device)  # (B,)


def _check_positives(positives: Tensor | None, B: int, M: int, device: torch.device) -> Tensor:
    """Default ``arange(B)``; check the shape (values are checked by the indexing itself)."""
    if positives is None:
        if M < B:
            raise ValueError(f"{B} queries but only {M} targets: pass positives explicitly")
        return torch.arange(B, device=device)  # (B,)
    if positives.shape != (B,):
        raise ValueError(f"positives must have shape ({B},), got {tuple(positives.shape)}")
    return positives.to(device=device, dtype=torch.long)  # (B,)
