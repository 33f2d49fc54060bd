"""The one image-encoding path: the checkpoint's encoding record, and queries that match their
gallery exactly however the checkpoint was trained."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stylequery.checkpoint import load_checkpoint, load_model
from stylequery.config import load_config
from stylequery.data import load_image
from stylequery.encode import Encoding, encode_images
from stylequery.errors import CheckpointError
from stylequery.index import EmbeddingIndex
from stylequery.inference import QueryEngine, embed
from stylequery.model import build_model

CPU = torch.device("cpu")
MakeCheckpoint = Callable[..., Path]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gallery_image_as_query_encodes_to_its_index_vector(
    precision: str, make_checkpoint: MakeCheckpoint, tiny_prepared: Path, tmp_path: Path
) -> None:
    checkpoint = make_checkpoint(tmp_path / "best.pt", 0, f"train.precision={precision}")
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


def test_encoding_record_round_trips_through_a_checkpoint(
    make_checkpoint: MakeCheckpoint, tmp_path: Path
) -> None:
    settings = ["train.precision=bf16", "train.channels_last=false"]
    path = make_checkpoint(tmp_path / "m.pt", 0, *settings)
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


def test_checkpoint_without_encoding_record_derives_it_from_its_config(
    make_checkpoint: MakeCheckpoint, tmp_path: Path
) -> None:
    path = make_checkpoint(tmp_path / "old.pt", 0, "data.image_size=48", "train.precision=bf16")
    payload = load_checkpoint(path)
    del payload["encoding"]  # as written before the record existed
    torch.save(payload, path)
    assert load_model(path, CPU).encoding == Encoding(48, "bf16", True)


def test_encoding_mean_and_std_drive_the_model(
    make_checkpoint: MakeCheckpoint, tmp_path: Path
) -> None:
    path = make_checkpoint(tmp_path / "m.pt")
    payload = load_checkpoint(path)
    payload["encoding"]["mean"] = [0.5, 0.5, 0.5]
    torch.save(payload, path)
    loaded = load_model(path, CPU)
    assert loaded.model.image_encoder.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        ours = encode_images(loaded.model, images, loaded.encoding, CPU)
        standard = encode_images(build_model(loaded.cfg.model, 1), images, loaded.encoding, CPU)
    assert not torch.allclose(ours, standard)


def test_malformed_encoding_record_names_the_checkpoint(
    make_checkpoint: MakeCheckpoint, tmp_path: Path
) -> None:
    path = make_checkpoint(tmp_path / "m.pt")
    payload = load_checkpoint(path)
    payload["encoding"]["precision"] = "fp8"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: malformed encoding record"):
        load_model(path, CPU)


def test_features_and_images_encode_alike() -> None:
    cfg = load_config("tiny.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, 1).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    encoding = Encoding.from_config(cfg)
    with torch.no_grad():
        direct = encode_images(model, images, encoding, CPU)
        via_features = encode_images(model, model.image_features(images), encoding, CPU)
    torch.testing.assert_close(direct, via_features)
    torch.testing.assert_close(direct.norm(dim=-1), torch.ones(3))
