"""Training: run folder contents, checkpoints, resume equivalence, NaN stop, fast mode, DDP."""

from __future__ import annotations

import csv
import importlib
import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from stylequery import runtime
from stylequery.checkpoint import fingerprint, load_checkpoint, load_model, save_checkpoint
from stylequery.config import Config, load_config
from stylequery.data import load_prepared
from stylequery.loss import build_loss
from stylequery.model import build_model
from stylequery.train import TrainingDiverged, cached_features, train

CPU = torch.device("cpu")


def _with(cfg: Config, *overrides: str) -> Config:
    return load_config(None, list(overrides), base=cfg)


def test_run_folder_holds_config_metrics_curves_and_weights(
    tiny_config: Config, tmp_path: Path
) -> None:
    cfg = _with(tiny_config, "train.iterations=4", "train.eval_every=2", "train.log_every=1")
    result = train(cfg, tmp_path / "run", CPU)
    run = result.run_dir
    assert load_config(run / "config.yaml") == cfg
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["iteration"] for r in rows if r["loss"]] == ["1", "2", "3", "4"]
    assert [r["iteration"] for r in rows if r["val_recall@10"]] == ["2", "4"]
    assert [r["iteration"] for r in rows if r["test_recall@10"]] == ["4"]  # once, at the end
    assert 0.0 <= float(rows[-1]["test_recall@10"]) <= 1.0
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG"
    last = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert last["iteration"] == 4
    assert {"model", "loss", "config", "vocab", "version", "fingerprint", "training"} <= set(last)
    assert {"optimizer", "scheduler", "rng", "scaler"} <= set(last["training"])
    best = load_checkpoint(run / "weights" / "best.pt")
    val_recalls = [v for k, v in best["metrics"].items() if k.startswith("val_recall@")]
    assert len(val_recalls) == len(cfg.eval.ks)  # best.pt is chosen on recall_mean by default
    assert sum(val_recalls) / len(val_recalls) == pytest.approx(result.best_value)
    assert best["training"] == {}  # weights for inference only: no optimiser, RNG or scaler
    assert best["encoding"]["image_size"] == tiny_config.data.image_size
    report = json.loads((run / "metrics.json").read_text())
    assert report["selected_on"] == "val" and report["test"]["split"] == "test"
    assert report["test"]["recall@10"] == pytest.approx(result.metrics["recall@10"])
    assert report["val"]["recall@10"] == pytest.approx(best["metrics"]["val_recall@10"])
    assert report["best_metric"] == "recall_mean"


def test_only_validation_chooses_and_test_is_read_once(
    tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits: list[str] = []
    train_module = importlib.import_module("stylequery.train")
    real = train_module.evaluate_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        splits.append(kwargs["split"])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_model", spy)  # validation
    monkeypatch.setattr(importlib.import_module("stylequery.evaluate"), "evaluate_model", spy)
    cfg = _with(
        tiny_config, "train.iterations=3", "train.eval_every=1", "train.best_metric=recall@10"
    )
    result = train(cfg, tmp_path / "run", CPU)
    assert splits == ["val", "val", "val", "test"]  # at iterations 1, 2, 3 (the end), then test
    best = load_checkpoint(result.best)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    validated = [
        (float(r["val_recall@10"]), int(r["iteration"])) for r in rows if r["val_recall@10"]
    ]
    top = max(value for value, _ in validated)
    assert best["metrics"]["val_recall@10"] == pytest.approx(top)
    assert best["iteration"] == next(it for value, it in validated if value == top)  # first best


def test_time_budget_stops_cleanly_and_cosine_decays_over_it(
    tiny_config: Config, tmp_path: Path
) -> None:
    budget = _with(
        tiny_config,
        "train.iterations=100000",
        "train.max_minutes=0.002",  # 0.12 s, spent after the first iterations
        "train.lr_schedule=cosine",
        "train.log_every=1",
    )
    result = train(budget, tmp_path / "budget", CPU)
    assert 1 <= result.iterations < 100000
    assert result.last.is_file() and result.best.is_file()
    assert json.loads((tmp_path / "budget" / "metrics.json").read_text())["test"]["recall@10"] >= 0
    rows = list(csv.DictReader((tmp_path / "budget" / "metrics.csv").open()))
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # fully decayed when spent
    steps = _with(
        tiny_config, "train.iterations=4", "train.lr_schedule=cosine", "train.log_every=1"
    )
    train(steps, tmp_path / "steps", CPU)
    rows = list(csv.DictReader((tmp_path / "steps" / "metrics.csv").open()))
    lrs = [float(r["lr"]) for r in rows if r["loss"]]
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(1, 5)]
    assert lrs == pytest.approx(expected, rel=1e-5)  # metrics.csv keeps 6 digits


def test_checkpoint_round_trip_gives_identical_embeddings(
    tiny_config: Config, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config.model, vocab_size=30).eval()
    loss = build_loss(tiny_config.train.loss, tiny_config.train.loss_scale)
    path = tmp_path / "m.pt"
    fp = save_checkpoint(
        path, model=model, loss=loss, cfg=tiny_config, vocab=["<UNK>"] * 30, iteration=7
    )
    loaded = load_model(path, CPU)
    assert loaded.fingerprint == fp == fingerprint(model.state_dict())
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    tokens, lengths = torch.randint(0, 30, (3, 5)), torch.tensor([5, 2, 3])
    with torch.no_grad():
        expected = model.encode_query(images, tokens, lengths)
        torch.testing.assert_close(loaded.model.encode_query(images, tokens, lengths), expected)
        torch.testing.assert_close(loaded.model.encode_image(images), model.encode_image(images))


def test_resume_reaches_the_same_weights(tiny_config: Config, tmp_path: Path) -> None:
    cfg = _with(
        tiny_config,
        "train.iterations=6",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.log_every=1",
    )
    straight = train(cfg, tmp_path / "straight", CPU)
    half = _with(cfg, "train.iterations=3")
    train(half, tmp_path / "resumed", CPU)
    resumed = train(cfg, tmp_path / "resumed", CPU, resume=True)
    assert resumed.iterations == straight.iterations == 6
    a = torch.load(straight.last, weights_only=True)
    b = torch.load(resumed.last, weights_only=True)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, msg=name)
    torch.testing.assert_close(b["loss"]["scale"], a["loss"]["scale"])
    rows = list(csv.DictReader((tmp_path / "resumed" / "metrics.csv").open()))
    assert [r["iteration"] for r in rows if r["loss"]] == [str(i) for i in range(1, 7)]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Poisoned(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            value = self.inner(*args)
            return value * float("nan") if self.calls >= 3 else value

    monkeypatch.setattr(
        importlib.import_module("stylequery.train"),
        "build_loss",
        lambda name, scale: Poisoned(build_loss(name, scale)),
    )
    cfg = _with(tiny_config, "train.iterations=5", "train.checkpoint_every=1", "train.eval_every=0")
    with pytest.raises(TrainingDiverged, match="iteration 3"):
        train(cfg, tmp_path / "run", CPU)
    last = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)
    assert last["iteration"] == 2
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_frozen_image_encoder_trains_only_the_rest(tiny_config: Config, tmp_path: Path) -> None:
    cfg = _with(tiny_config, "model.freeze_image_encoder=true", "train.iterations=3")
    result = train(cfg, tmp_path / "run", CPU)
    assert list((tmp_path / "run" / "features").glob("train_*.pt"))
    runtime.seed_everything(cfg.train.seed)
    initial = build_model(cfg.model, len(load_checkpoint(result.last)["vocab"])).state_dict()
    trained = load_checkpoint(result.last)["model"]
    backbone = [
        k
        for k in initial
        if k.startswith("image_encoder.")
        and ".fc" not in k
        and "proj" not in k
        and "num_batches" not in k
    ]
    assert backbone
    for name in backbone:
        torch.testing.assert_close(trained[name], initial[name], msg=name)
    changed = [k for k in initial if not torch.equal(trained[k], initial[k])]
    assert any(k.startswith("text_encoder.") for k in changed)
    assert any(k.startswith("composer.") for k in changed)


def test_partly_frozen_encoder_trains_the_later_stages_from_cached_maps(
    tiny_config: Config, tmp_path: Path
) -> None:
    cfg = _with(tiny_config, "model.frozen_stages=2", "train.iterations=3")
    result = train(cfg, tmp_path / "run", CPU)
    cached = torch.load(next((tmp_path / "run" / "features").glob("train_*.pt")), weights_only=True)
    assert cached.shape[1:] == (128, 4, 4)  # layer2 output of 32 px images
    runtime.seed_everything(cfg.train.seed)
    initial = build_model(cfg.model, len(load_checkpoint(result.last)["vocab"])).state_dict()
    trained = load_checkpoint(result.last)["model"]
    for name, value in initial.items():
        if "num_batches" in name or not name.startswith("image_encoder.backbone."):
            continue
        stage = name.split(".")[2]
        frozen = stage in {"conv1", "bn1", "layer1", "layer2"}
        assert torch.equal(trained[name], value) == frozen, name


def test_mirrored_cache_keeps_flipping_an_augmentation(
    tiny_config: Config, tiny_prepared: Path, tmp_path: Path
) -> None:
    cfg = _with(tiny_config, "model.frozen_stages=2", "data.hflip=true", "train.iterations=2")
    result = train(cfg, tmp_path / "run", CPU)
    folder = tmp_path / "run" / "features"
    plain = torch.load(next(folder.glob("train_32_*.pt")), weights_only=True)
    mirrored = torch.load(next(folder.glob("train_flipped_32_*.pt")), weights_only=True)
    assert mirrored.shape == plain.shape
    # Row i is the frozen stages' output of training image i seen in a mirror.
    model = load_model(result.last, CPU).model
    pixels = torch.from_numpy(load_prepared(tiny_prepared).image_cache("train", 32)[:3].copy())
    images = pixels.permute(0, 3, 1, 2)  # (3, 3, S, S) uint8
    with torch.no_grad():
        expected = model.image_features(images.flip(-1))
    torch.testing.assert_close(mirrored[:3], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain[:3], expected, atol=1e-2)
    # A batch takes each image's mirrored row exactly where its flag says so.
    batch = {
        "source_index": torch.tensor([0, 1, 2]),
        "source_flip": torch.tensor([True, False, True]),
    }
    picked = cached_features({"train": plain, "train_flipped": mirrored}, batch, "source")
    assert torch.equal(picked[0], mirrored[0]) and torch.equal(picked[1], plain[1])
    assert torch.equal(picked[2], mirrored[2])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, cfg: Config, run_dir: Path, out: Path) -> None:
    import os

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    runtime.init_distributed(CPU)
    try:
        result = train(cfg, run_dir, CPU)
        # Each rank reports the fingerprint of the weights it holds in memory.
        out.joinpath(f"rank{rank}.txt").write_text(result.fingerprint)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_on_gloo_keeps_ranks_identical(tiny_config: Config, tmp_path: Path) -> None:
    cfg = _with(tiny_config, "train.iterations=3", "train.eval_every=0", "train.batch_size=4")
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, tmp_path / "run", tmp_path), nprocs=2)
    fp0 = (tmp_path / "rank0.txt").read_text()
    fp1 = (tmp_path / "rank1.txt").read_text()
    assert fp0 == fp1
    assert load_checkpoint(tmp_path / "run" / "weights" / "last.pt")["fingerprint"] == fp0
