"""The evaluation protocol on a tiny catalogue: determinism, outputs, query selection."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stylequery.checkpoint import read_config
from stylequery.config import Config, load_config
from stylequery.data import PreparedData, caption_difference, load_prepared
from stylequery.evaluate import evaluate, evaluate_model, select_queries

CPU = torch.device("cpu")


def test_evaluate_is_deterministic_and_writes_metrics(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    first = evaluate(tiny_checkpoint, device=CPU, out=tmp_path / "a.json", breakdown=True)
    second = evaluate(tiny_checkpoint, device=CPU, out=tmp_path / "b.json", breakdown=True)
    assert first.metrics == second.metrics
    data = json.loads((tmp_path / "a.json").read_text())
    assert [k for k in data if k.startswith("recall@")] == [
        "recall@1",
        "recall@5",
        "recall@10",
        "recall@50",
        "recall@100",
    ]
    assert data["num_queries"] == first.num_queries > 0
    assert data["gallery_size"] == first.gallery_size
    assert sum(first.breakdown_counts.values()) == first.num_queries
    assert "black" in data["colour_words"]
    for value in first.metrics.values():
        assert 0.0 <= value <= 1.0
    recalls = list(first.metrics.values())
    assert recalls == sorted(recalls)  # recall@K never falls as K grows


def test_gallery_is_the_whole_split(tiny_checkpoint: Path, tiny_prepared: Path) -> None:
    result = evaluate(tiny_checkpoint, device=CPU)
    prepared = load_prepared(tiny_prepared)
    assert result.gallery_size == len(prepared.split("test"))
    assert result.num_queries == len(prepared.queries)


def test_train_split_and_query_cap(tiny_checkpoint: Path, tiny_prepared: Path) -> None:
    base = read_config(tiny_checkpoint)
    cfg = load_config(None, ["eval.split=train", "eval.max_queries=5"], base=base)
    result = evaluate(tiny_checkpoint, cfg, device=CPU)
    assert result.split == "train" and result.num_queries == 5
    carved = load_prepared(tiny_prepared, None, 0.1, 0)  # the checkpoint's data.val_fraction
    assert result.gallery_size == len(carved.split("train"))


def test_val_split_is_the_one_training_chose_on(tiny_checkpoint: Path, tiny_prepared: Path) -> None:
    cfg = load_config(None, ["eval.split=val"], base=read_config(tiny_checkpoint))
    result = evaluate(tiny_checkpoint, cfg, device=CPU)
    carved = load_prepared(tiny_prepared, None, 0.1, 0)  # the checkpoint's data.val_fraction
    val, siblings = carved.split("val"), carved.siblings("val")
    assert result.split == "val" and result.gallery_size == len(val) > 0
    every_pair = sum(siblings.num_siblings(int(siblings.labels[i])) for i in range(len(val)))
    assert result.num_queries == every_pair > len(val)  # every sibling caption of every image


def test_select_queries_spreads_evenly() -> None:
    queries = [(i, i + 1) for i in range(10)]
    assert select_queries(queries, 0) == queries
    assert select_queries(queries, 3) == [(0, 1), (4, 5), (9, 10)]


def test_a_perfect_model_scores_full_recall(tiny_prepared: Path, tiny_config: Config) -> None:
    """An oracle whose query lands exactly on the target caption's images gets recall 1."""
    prepared = load_prepared(tiny_prepared)
    cfg = load_config(None, ["eval.ks=[1,10]"], base=tiny_config)
    oracle = _CaptionOracle(prepared)
    result = evaluate_model(oracle, prepared, cfg, CPU, features=oracle.features)
    assert result.metrics == {"recall@1": 1.0, "recall@10": 1.0}


class _CaptionOracle(torch.nn.Module):
    """Images embed as one-hot captions; a text embeds as the id of its (from, to) words, and
    composing swaps that word in the image's caption."""

    def __init__(self, prepared: PreparedData) -> None:
        super().__init__()
        items = prepared.split("test")
        self.captions = sorted({it.caption for it in items})
        ids = torch.tensor([self.captions.index(it.caption) for it in items])
        self.features = torch.nn.functional.one_hot(ids, len(self.captions)).float()
        self.changes: list[tuple[str, str]] = []
        self.by_tokens: dict[tuple[int, ...], int] = {}
        template = load_config().data.modification_template
        for s, t in prepared.queries:
            change = caption_difference(items[s].caption, items[t].caption)
            tokens = tuple(prepared.vocab.encode(template.format(src=change[0], tgt=change[1])))
            self.by_tokens.setdefault(tokens, len(self.changes))
            if self.by_tokens[tokens] == len(self.changes):
                self.changes.append(change)

    def project_image(self, feats: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return feats

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keys = [tuple(row[: int(n)].tolist()) for row, n in zip(tokens, lengths, strict=True)]
        return torch.tensor([[float(self.by_tokens[k])] for k in keys])

    def compose(
        self, image: torch.Tensor, text: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        out = torch.zeros_like(image)
        for row, (img, txt) in enumerate(zip(image, text, strict=True)):
            words = self.captions[int(img.argmax())].split()
            src, tgt = self.changes[int(txt[0])]
            words[words.index(src)] = tgt
            out[row, self.captions.index(" ".join(words))] = 1.0
        return out
