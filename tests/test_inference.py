"""embed and query: the index round trip, brute-force scores, append, fingerprints, warnings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylequery.checkpoint import load_model, save_checkpoint
from stylequery.config import load_config
from stylequery.data import load_image
from stylequery.errors import IndexMismatchError, StyleQueryError
from stylequery.index import EmbeddingIndex
from stylequery.inference import QueryEngine, apply_changes, embed, parse_change
from stylequery.loss import build_loss
from stylequery.model import build_model
from stylequery.vocab import Vocab, pad_batch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoint(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model saved as a checkpoint over the tiny catalogue's vocabulary."""
    from stylequery.data import load_prepared

    cfg = load_config(
        None,
        [
            "data.image_size=32",
            "model.embed_dim=16",
            "model.word_dim=16",
            "model.text_hidden=16",
            "data.num_workers=0",
        ],
    )
    vocab = list(load_prepared(tiny_prepared).vocab.tokens)
    torch.manual_seed(0)
    model = build_model(cfg.model, len(vocab))
    path = tmp_path_factory.mktemp("ckpt") / "weights" / "best.pt"
    save_checkpoint(
        path,
        model=model,
        loss=build_loss("batch_classification", 4.0),
        cfg=cfg,
        vocab=vocab,
        iteration=0,
    )
    return path


@pytest.fixture(scope="module")
def index_dir(checkpoint: Path, tiny_prepared: Path) -> Path:
    out = checkpoint.parent.parent / "index"
    embed(checkpoint, tiny_prepared, out, CPU, num_workers=0)
    return out


def test_query_scores_equal_brute_force_cosine(checkpoint: Path, index_dir: Path) -> None:
    index = EmbeddingIndex.load(index_dir)
    engine = QueryEngine(checkpoint, index_dir, CPU)
    image_path = Path(index.paths[3])
    result = engine.query(image_path, [("black", "green")], k=7)
    assert len(result.hits) == 7
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h.path in index.paths for h in result.hits)
    assert str(image_path) not in [h.path for h in result.hits]  # the query image is left out

    # Independently: encode the image and text with the loaded model, compose, cosine to all.
    loaded = load_model(checkpoint, CPU)
    vocab = Vocab(loaded.vocab)
    with torch.no_grad():
        image = load_image(image_path, loaded.cfg.data.image_size)[None]
        tokens, lengths = pad_batch([vocab.encode("change black to green")])
        query = loaded.model.encode_query(image, tokens, lengths)  # (1, D)
        gallery = F.normalize(torch.from_numpy(np.array(index.embeddings, np.float32)), dim=-1)
    cosine = (query @ gallery.T)[0]
    for hit in result.hits:
        expected = float(cosine[index.paths.index(hit.path)])
        assert hit.score == pytest.approx(expected, abs=1e-5)
    others = [i for i, p in enumerate(index.paths) if p != str(image_path)]
    assert scores[0] == pytest.approx(float(cosine[others].max()), abs=1e-5)


def test_hits_are_marked_when_the_source_caption_is_known(
    checkpoint: Path, index_dir: Path
) -> None:
    index = EmbeddingIndex.load(index_dir)
    engine = QueryEngine(checkpoint, index_dir, CPU)
    i = next(i for i, c in enumerate(index.captions) if c and "black" in c.split())
    result = engine.query(Path(index.paths[i]), [("black", "green")], k=len(index) - 1)
    assert result.target_caption == apply_changes(index.captions[i], [("black", "green")])
    assert all(h.hit == (h.caption == result.target_caption) for h in result.hits)


def test_append_adds_without_reencoding(
    checkpoint: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    full = (
        EmbeddingIndex.load(checkpoint.parent.parent / "index")
        if (checkpoint.parent.parent / "index" / "index.json").is_file()
        else None
    )
    folder = tmp_path / "imgs"
    images = sorted((tiny_prepared.parent.parent / "women").rglob("*.jpeg"))[:10]
    for n, src in enumerate(images):
        (folder / str(n % 2)).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / str(n % 2) / f"{n}.jpeg")
    out = tmp_path / "index"
    embed(checkpoint, folder / "0", out, CPU, num_workers=0)
    first = EmbeddingIndex.load(out)
    old_rows = np.array(first.embeddings)
    summary = embed(checkpoint, folder, out, CPU, num_workers=0, append=True)
    grown = EmbeddingIndex.load(out)
    assert (summary.added, len(grown)) == (5, 10)
    np.testing.assert_array_equal(np.array(grown.embeddings)[: len(old_rows)], old_rows)
    assert full is None or len(full) > 0


def test_unreadable_images_are_skipped_and_listed(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(folder / "red.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    summary = embed(checkpoint, folder, tmp_path / "index", CPU, num_workers=0)
    assert summary.added == 1 and summary.total == 1
    assert [Path(p).name for p, _ in summary.skipped] == ["broken.jpg"]


def test_index_from_another_checkpoint_is_refused(
    checkpoint: Path, index_dir: Path, tmp_path: Path
) -> None:
    payload = torch.load(checkpoint, weights_only=True)
    cfg = load_config(
        None,
        ["data.image_size=32", "model.embed_dim=16", "model.word_dim=16", "model.text_hidden=16"],
    )
    torch.manual_seed(1)
    other = build_model(cfg.model, len(payload["vocab"]))
    other_path = tmp_path / "other.pt"
    save_checkpoint(
        other_path,
        model=other,
        loss=build_loss("batch_classification", 4.0),
        cfg=cfg,
        vocab=payload["vocab"],
        iteration=0,
    )
    with pytest.raises(IndexMismatchError, match="embed"):
        QueryEngine(other_path, index_dir, CPU)


def test_unknown_words_get_suggestions(checkpoint: Path, index_dir: Path) -> None:
    engine = QueryEngine(checkpoint, index_dir, CPU)
    warnings = engine.unknown_word_warnings(["change blak to green"])
    assert len(warnings) == 1 and "blak" in warnings[0] and "black" in warnings[0]


def test_parse_change() -> None:
    assert parse_change("Black:green") == ("black", "green")
    for bad in ("black", "black:", ":green", "a:b:c"):
        with pytest.raises(StyleQueryError, match="FROM:TO"):
            parse_change(bad)


def test_several_changes_apply_in_order(checkpoint: Path, index_dir: Path) -> None:
    engine = QueryEngine(checkpoint, index_dir, CPU)
    texts = engine.texts_for([("black", "green"), ("skinny", "cropped")], None)
    assert texts == ["change black to green", "change skinny to cropped"]
    assert apply_changes("black skinny pants", [("black", "green"), ("skinny", "wide")]) == (
        "green wide pants"
    )
    assert apply_changes("black skinny pants", [("blue", "green")]) is None
