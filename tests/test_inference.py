"""embed and query: the index round trip, brute-force scores, append, fingerprints, warnings."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylequery.checkpoint import load_model
from stylequery.data import load_image
from stylequery.errors import IndexMismatchError, StyleQueryError
from stylequery.index import EmbeddingIndex
from stylequery.inference import QueryEngine, apply_changes, embed, parse_change
from stylequery.vocab import Vocab, pad_batch

CPU = torch.device("cpu")


def test_query_scores_equal_brute_force_cosine(tiny_checkpoint: Path, tiny_index: Path) -> None:
    index = EmbeddingIndex.load(tiny_index)
    engine = QueryEngine(tiny_checkpoint, tiny_index, CPU)
    image_path = Path(index.paths[3])
    result = engine.query(image_path, [("black", "green")], k=7)
    assert len(result.hits) == 7
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h.path in index.paths for h in result.hits)
    assert str(image_path) not in [h.path for h in result.hits]  # the query image is left out

    # Independently: encode the image and text with the loaded model, compose, cosine to all.
    loaded = load_model(tiny_checkpoint, CPU)
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
    tiny_checkpoint: Path, tiny_index: Path
) -> None:
    index = EmbeddingIndex.load(tiny_index)
    engine = QueryEngine(tiny_checkpoint, tiny_index, CPU)
    i = next(i for i, c in enumerate(index.captions) if c and "black" in c.split())
    result = engine.query(Path(index.paths[i]), [("black", "green")], k=len(index) - 1)
    assert result.target_caption == apply_changes(index.captions[i], [("black", "green")])
    assert all(h.hit == (h.caption == result.target_caption) for h in result.hits)


def test_append_adds_without_reencoding(
    tiny_checkpoint: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "imgs"
    images = sorted((tiny_prepared.parent.parent / "women").rglob("*.jpeg"))[:10]
    for n, src in enumerate(images):
        (folder / str(n % 2)).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / str(n % 2) / f"{n}.jpeg")
    out = tmp_path / "index"
    embed(tiny_checkpoint, folder / "0", out, CPU, num_workers=0)
    first = EmbeddingIndex.load(out)
    old_rows = np.array(first.embeddings)
    summary = embed(tiny_checkpoint, folder, out, CPU, num_workers=0, append=True)
    grown = EmbeddingIndex.load(out)
    assert (summary.added, len(grown)) == (5, 10)
    np.testing.assert_array_equal(np.array(grown.embeddings)[: len(old_rows)], old_rows)


def test_unreadable_images_are_skipped_and_listed(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(folder / "red.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    summary = embed(tiny_checkpoint, folder, tmp_path / "index", CPU, num_workers=0)
    assert summary.added == 1 and summary.total == 1
    assert [Path(p).name for p, _ in summary.skipped] == ["broken.jpg"]


def test_index_from_another_checkpoint_is_refused(
    make_checkpoint: Callable[..., Path], tiny_index: Path, tmp_path: Path
) -> None:
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(IndexMismatchError, match="embed"):
        QueryEngine(other, tiny_index, CPU)


def test_unknown_words_get_suggestions(tiny_checkpoint: Path, tiny_index: Path) -> None:
    engine = QueryEngine(tiny_checkpoint, tiny_index, CPU)
    warnings = engine.unknown_word_warnings(["change blak to green"])
    assert len(warnings) == 1 and "blak" in warnings[0] and "black" in warnings[0]


def test_parse_change() -> None:
    assert parse_change("Black:green") == ("black", "green")
    for bad in ("black", "black:", ":green", "a:b:c"):
        with pytest.raises(StyleQueryError, match="FROM:TO"):
            parse_change(bad)


def test_several_changes_apply_in_order(tiny_checkpoint: Path, tiny_index: Path) -> None:
    engine = QueryEngine(tiny_checkpoint, tiny_index, CPU)
    texts = engine.texts_for([("black", "green"), ("skinny", "cropped")], None)
    assert texts == ["change black to green", "change skinny to cropped"]
    assert apply_changes("black skinny pants", [("black", "green"), ("skinny", "wide")]) == (
        "green wide pants"
    )
    assert apply_changes("black skinny pants", [("blue", "green")]) is None


def test_query_sources_path_upload_and_row_give_the_same_answer(
    tiny_checkpoint: Path, tiny_index: Path
) -> None:
    from PIL import Image

    engine = QueryEngine(tiny_checkpoint, tiny_index, CPU)
    row, k = 4, len(engine.index)
    path = Path(engine.index.items([row])[0][0])
    by_path = engine.query(path, [("black", "green")], k=k)
    by_row = engine.query(row, [("black", "green")], k=k)
    with Image.open(path) as upload:
        by_upload = engine.query(upload, [("black", "green")], k=k)
    assert by_row.to_json() == by_path.to_json()
    assert len(by_row.hits) == k - 1  # a row id is left out of its results like its path
    assert str(path) not in [h.path for h in by_row.hits]
    # An upload is not known to be in the gallery: the photo itself is among its results.
    assert by_upload.source_caption is None and len(by_upload.hits) == k
    others = [(h.path, h.score) for h in by_upload.hits if h.path != str(path)]
    assert others == [(h.path, h.score) for h in by_path.hits]


def test_out_of_range_row_is_a_clear_error(tiny_checkpoint: Path, tiny_index: Path) -> None:
    engine = QueryEngine(tiny_checkpoint, tiny_index, CPU)
    with pytest.raises(StyleQueryError, match=r"gallery row 9999 is out of range"):
        engine.query(9999, [("black", "green")])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the test's own open
def test_an_opened_image_obeys_the_pixel_limit(
    tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    """A PIL image handed to the Python API is refused from its header, like a file."""
    from PIL import Image

    Image.new("1", (10_000, 10_000)).save(tmp_path / "bomb.png")  # 100 MP in 12 KB
    engine = QueryEngine(tiny_checkpoint, tiny_index, CPU)
    limit = r"10000 x 10000 pixels is above the limit"
    with Image.open(tmp_path / "bomb.png") as upload, pytest.raises(StyleQueryError, match=limit):
        engine.query(upload, [("black", "green")])


def test_image_paths_expands_folders_in_order(tmp_path: Path) -> None:
    from stylequery.inference import image_paths

    for name in ("b/2.png", "b/1.JPG", "b/notes.txt", "a.webp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = image_paths([tmp_path / "a.webp", tmp_path / "b"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.webp", "b/1.JPG", "b/2.png"]
    with pytest.raises(StyleQueryError, match=r"missing\.jpg: no such image file or folder"):
        image_paths([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(StyleQueryError, match=r"empty: no \.jpg"):
        image_paths([tmp_path / "empty"])
