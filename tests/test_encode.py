"""The one image-encoding path: the checkpoint's encoding record, and queries that match their
gallery exactly however the checkpoint was trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylequery.checkpoint import load_checkpoint, load_model, save_checkpoint
from stylequery.config import Config, load_config
from stylequery.data import load_image, load_prepared
from stylequery.encode import Encoding, encode_images
from stylequery.errors import CheckpointError
from stylequery.index import EmbeddingIndex
from stylequery.inference import QueryEngine, embed
from stylequery.loss import build_loss
from stylequery.model import build_model

CPU = torch.device("cpu")
TINY = [
    "data.image_size=32",
    "model.embed_dim=16",
    "model.word_dim=16",
    "model.text_hidden=16",
    "data.num_workers=0",
]


def _checkpoint(path: Path, cfg: Config, vocab: list[str]) -> Path:
    torch.manual_seed(0)
    model = build_model(cfg.model, len(vocab))
    loss = build_loss("batch_classification", 4.0)
    save_checkpoint(path, model=model, loss=loss, cfg=cfg, vocab=vocab, iteration=0)
    return path


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gallery_image_as_query_encodes_to_its_index_vector(
    precision: str, tiny_prepared: Path, tmp_path: Path
) -> None:
    cfg = load_config(None, [*TINY, f"train.precision={precision}"])
    vocab = list(load_prepared(tiny_prepared).vocab.tokens)
    checkpoint = _checkpoint(tmp_path / "weights" / "best.pt", cfg, vocab)
    embed(checkpoint, tiny_prepared, tmp_path / "index", CPU, batch_size=8, num_workers=0)
    index = EmbeddingIndex.load(tmp_path / "index")
    engine = QueryEngine(checkpoint, tmp_path / "index", CPU)
    assert engine.loaded.encoding.precision == precision
    stored = torch.from_numpy(index.embeddings[:5].astype("float32"))  # (5, D)
    images = [load_image(Path(p), engine.loaded.encoding.image_size) for p in index.paths[:5]]
    queried = torch.cat([engine.encode_image(image).cpu() for image in images])  # (5, D)
    torch.testing.assert_close(queried, stored, rtol=1e-3, atol=1e-3)
    # Without the checkpoint's autocast a bf16 gallery would not match its own images.
    with torch.no_grad():
        plain = engine.loaded.model.encode_image(torch.stack(images))  # (5, D) fp32
    gap = (plain - stored).abs().max().item()
    assert gap > 1e-3 if precision == "bf16" else gap < 1e-5


def test_encoding_record_round_trips_through_a_checkpoint(tiny_prepared: Path, tmp_path: Path):
    cfg = load_config(None, [*TINY, "train.precision=bf16", "train.channels_last=false"])
    path = _checkpoint(tmp_path / "m.pt", cfg, ["<UNK>", "black"])
    record = load_checkpoint(path)["encoding"]
    assert record == {
        "image_size": 32,
        "precision": "bf16",
        "channels_last": False,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    loaded = load_model(path, CPU)
    assert loaded.encoding == Encoding(32, "bf16", False)


def test_checkpoint_without_encoding_record_derives_it_from_its_config(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, "data.image_size=48", "train.precision=bf16"])
    path = _checkpoint(tmp_path / "old.pt", cfg, ["<UNK>", "black"])
    payload = load_checkpoint(path)
    del payload["encoding"]  # as written before the record existed
    torch.save(payload, path)
    assert load_model(path, CPU).encoding == Encoding(48, "bf16", True)


def test_encoding_mean_and_std_drive_the_model(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    path = _checkpoint(tmp_path / "m.pt", cfg, ["<UNK>"])
    payload = load_checkpoint(path)
    payload["encoding"]["mean"] = [0.5, 0.5, 0.5]
    torch.save(payload, path)
    loaded = load_model(path, CPU)
    assert loaded.model.image_encoder.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        ours = encode_images(loaded.model, images, loaded.encoding, CPU)
        standard = encode_images(build_model(cfg.model, 1), images, loaded.encoding, CPU)
    assert not torch.allclose(ours, standard)


def test_malformed_encoding_record_names_the_checkpoint(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "m.pt", load_config(None, TINY), ["<UNK>"])
    payload = load_checkpoint(path)
    payload["encoding"]["precision"] = "fp8"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: malformed encoding record"):
        load_model(path, CPU)


def test_features_and_images_encode_alike() -> None:
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = build_model(cfg.model, 1).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    encoding = Encoding.from_config(cfg)
    with torch.no_grad():
        direct = encode_images(model, images, encoding, CPU)
        via_features = encode_images(model, model.image_features(images), encoding, CPU)
    torch.testing.assert_close(direct, via_features)
    torch.testing.assert_close(direct.norm(dim=-1), torch.ones(3))
