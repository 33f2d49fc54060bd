"""The reference test protocol: recall@K of composed queries against a split's images.

A query is a source image plus a modification text; the gallery is every image of the split
with only the query's own source image left out; a hit is any gallery image whose normalised
caption equals the target caption. Every image is encoded once (its raw embedding serves both
as a gallery entry and as a query source) and every distinct modification text once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stylequery.captions import every_query, sample_queries
from stylequery.checkpoint import load_model
from stylequery.config import Config, config_to_dict, replace
from stylequery.config import validate as validate_config
from stylequery.data import (
    PreparedData,
    caption_difference,
    caption_labels,
    load_prepared,
    modification_text,
    prepared_dir,
)
from stylequery.encode import Encoding, encode_images, encode_split
from stylequery.errors import DataError
from stylequery.fileio import write_json
from stylequery.metrics import first_hit_rank, recall_at_k, recall_by_group
from stylequery.model import StyleQueryModel
from stylequery.runtime import resolve_device
from stylequery.vocab import Vocab, pad_batch

logger = logging.getLogger(__name__)

# Words counted as colours by the breakdown; a query whose changed word pair are both in this
# list is a "colour" query, every other query is "other".
COLOUR_WORDS = frozenset(
    [
        "black",
        "white",
        "blue",
        "navy",
        "green",
        "red",
        "grey",
        "gray",
        "beige",
        "brown",
        "pink",
        "purple",
        "yellow",
        "orange",
        "khaki",
        "olive",
        "burgundy",
        "cream",
        "ivory",
        "tan",
        "camel",
        "charcoal",
        "maroon",
        "teal",
        "coral",
        "turquoise",
        "mint",
        "lilac",
        "lavender",
        "gold",
        "silver",
        "nude",
        "indigo",
        "denim",
        "multicolor",
        "multicolour",
        "rust",
        "mustard",
        "wine",
    ]
)


@dataclass
class EvalResult:
    """Recall of one protocol run, with the sizes that give it meaning."""

    metrics: dict[str, float]
    num_queries: int
    gallery_size: int
    split: str
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)
    breakdown_counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = dict(self.metrics)
        data.update(num_queries=self.num_queries, gallery_size=self.gallery_size, split=self.split)
        if self.breakdown:
            data["breakdown"] = self.breakdown
            data["breakdown_counts"] = self.breakdown_counts
            data["colour_words"] = sorted(COLOUR_WORDS)
        return data


@torch.no_grad()
def encode_texts(
    model: StyleQueryModel, vocab: Vocab, texts: list[str], device: torch.device, batch_size: int
) -> torch.Tensor:
    """Text embeddings of ``texts``: (T, D) float32, in order."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens, lengths = pad_batch([vocab.encode(t) for t in texts[start : start + batch_size]])
        out.append(model.encode_text(tokens.to(device), lengths.to(device)).float())
    return torch.cat(out)


def select_queries(queries: list[tuple[int, int]], max_queries: int) -> list[tuple[int, int]]:
    """All queries, or ``max_queries`` of them evenly spread (deterministic)."""
    if max_queries <= 0 or max_queries >= len(queries):
        return list(queries)
    picks = np.linspace(0, len(queries) - 1, max_queries).round().astype(int)
    return [queries[i] for i in picks]


def split_queries(prepared: PreparedData, split: str, seed: int) -> list[tuple[int, int]]:
    """The prepared test queries; on validation every sibling caption of every image (2-3x the
    one sampled query per image, so the choice of best.pt rests on more queries); on the train
    split queries generated as for test."""
    if split == "test":
        return list(prepared.queries)
    if split == "val":
        return every_query(prepared.siblings(split))
    return sample_queries(prepared.siblings(split), seed)


@torch.no_grad()
def evaluate_model(
    model: StyleQueryModel,
    prepared: PreparedData,
    cfg: Config,
    device: torch.device,
    split: str | None = None,
    max_queries: int = 0,
    breakdown: bool = False,
    features: torch.Tensor | None = None,
    vocab: Vocab | None = None,
    encoding: Encoding | None = None,
) -> EvalResult:
    """Run the protocol for an in-memory model (restores its train/eval mode afterwards).

    ``vocab`` is the model's vocabulary (default: the prepared one it was trained with);
    ``encoding`` its image encoding (default: the one ``cfg`` trains with).
    """
    encoding = encoding or Encoding.from_config(cfg)
    split = split or cfg.eval.split
    queries = select_queries(split_queries(prepared, split, cfg.data.seed), max_queries)
    if not queries:
        raise DataError(f"{prepared.dir}: the {split} split has no queries to evaluate")
    was_training = model.training
    model.eval()
    try:
        raw = (  # (N, D) raw: gallery and query sources; features: frozen-encoder mode
            encode_split(model, prepared, split, cfg, encoding, device)
            if features is None
            else encode_images(model, features, encoding, device, normalize=False)
        )
        query_emb = _encode_queries(model, raw, prepared, split, queries, vocab, cfg)  # (Q, D)
    finally:
        model.train(was_training)
    items = prepared.split(split)
    source = torch.tensor([s for s, _ in queries])
    target = torch.tensor([t for _, t in queries])
    labels = torch.from_numpy(caption_labels(items))
    scores = query_emb @ F.normalize(raw, dim=-1).T  # (Q, N)
    ranks = first_hit_rank(scores, labels, labels[target], exclude=source)
    result = EvalResult(recall_at_k(ranks, cfg.eval.ks), len(queries), len(items), split)
    if breakdown:
        groups = [_change_group(items[s].caption, items[t].caption) for s, t in queries]
        result.breakdown = recall_by_group(ranks, groups, cfg.eval.ks)
        result.breakdown_counts = {g: groups.count(g) for g in sorted(set(groups))}
    return result


def _encode_queries(
    model: StyleQueryModel,
    raw: torch.Tensor,
    prepared: PreparedData,
    split: str,
    queries: list[tuple[int, int]],
    vocab: Vocab | None,
    cfg: Config,
) -> torch.Tensor:
    """Normalised composed queries (Q, D): each distinct modification text encoded once."""
    items = prepared.split(split)
    template = cfg.data.modification_template
    texts = [modification_text(items[s].caption, items[t].caption, template) for s, t in queries]
    unique = sorted(set(texts))
    device = raw.device
    text_emb = encode_texts(model, vocab or prepared.vocab, unique, device, cfg.eval.batch_size)
    position = {t: i for i, t in enumerate(unique)}
    text_ids = torch.tensor([position[t] for t in texts])
    source = torch.tensor([s for s, _ in queries])
    return compose_queries(model, raw, text_emb, source, text_ids, cfg.eval.batch_size)


def compose_queries(
    model: StyleQueryModel,
    raw_images: torch.Tensor,
    text_emb: torch.Tensor,
    source: torch.Tensor,
    text_ids: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """Normalised composed queries (Q, D) from raw image (N, D) and text (T, D) embeddings."""
    out = []
    for start in range(0, len(source), batch_size):
        s = source[start : start + batch_size].to(raw_images.device)
        t = text_ids[start : start + batch_size].to(text_emb.device)
        out.append(model.compose(raw_images[s], text_emb[t], normalize=True).float())  # (B, D)
    return torch.cat(out)


def _change_group(source_caption: str, target_caption: str) -> str:
    src, tgt = caption_difference(source_caption, target_caption)
    return "colour" if src in COLOUR_WORDS and tgt in COLOUR_WORDS else "other"


def evaluate(
    checkpoint: Path,
    cfg: Config | None = None,
    *,
    device: torch.device | str = "auto",
    prepared: Path | None = None,
    out: Path | None = None,
    breakdown: bool = False,
) -> EvalResult:
    """Evaluate a checkpoint (or export folder) on a prepared split.

    Args:
        checkpoint: A ``.pt`` checkpoint or an export folder.
        cfg: Data and eval settings (e.g. ``eval.split``); default: the checkpoint's own config.
            The model and its image encoding always come from the checkpoint.
        device: ``auto``, ``cpu``, ``cuda:N``, ``mps`` or a torch device.
        prepared: Prepared folder; default: the one ``cfg.data`` points at.
        out: Write the result as ``metrics.json`` here.
        breakdown: Also recall by changed word, colour vs other.
    """
    if cfg is not None:
        validate_config(cfg)
    device = resolve_device(device)
    loaded = load_model(checkpoint, device)
    cfg = replace(cfg or loaded.cfg, model=loaded.cfg.model)
    data = load_prepared(
        prepared or prepared_dir(cfg.data), None, cfg.data.val_fraction, cfg.data.seed
    )
    _check_vocab(data, loaded.vocab, checkpoint)
    result = evaluate_model(
        loaded.model,
        data,
        cfg,
        device,
        max_queries=cfg.eval.max_queries,
        breakdown=breakdown,
        vocab=Vocab(loaded.vocab),
        encoding=loaded.encoding,
    )
    if out is not None:
        record = result.to_json()
        record.update(
            checkpoint=str(checkpoint), fingerprint=loaded.fingerprint, config=config_to_dict(cfg)
        )
        write_json(out, record)
    return result


def test_best_checkpoint(
    best: Path, prepared: PreparedData, device: torch.device, out: Path
) -> EvalResult:
    """Test recall of a training run's ``best.pt`` (the run's one look at the test split),
    written to ``out`` beside the validation recall that chose the checkpoint."""
    loaded = load_model(best, device)
    result = evaluate_model(
        loaded.model, prepared, loaded.cfg, device, split="test", encoding=loaded.encoding
    )
    chosen_on = {k[4:]: v for k, v in loaded.metrics.items() if k.startswith("val_")}
    report = {
        "checkpoint": str(best),
        "iteration": loaded.iteration,
        "selected_on": "val",
        "best_metric": loaded.cfg.train.best_metric,
    }
    write_json(out, {**report, "val": chosen_on, "test": result.to_json()})
    logger.info("best.pt (iteration %d): test %s", loaded.iteration, format_metrics(result.metrics))
    return result


def format_metrics(metrics: dict[str, float]) -> str:
    """``recall@1 0.1234  recall@5 ...`` for log lines."""
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _check_vocab(prepared: PreparedData, vocab: list[str], checkpoint_path: Path) -> None:
    if list(prepared.vocab.tokens) != list(vocab):
        logger.warning(
            "%s was trained with another vocabulary than %s; unknown words map to <UNK>",
            checkpoint_path,
            prepared.dir,
        )
