"""Hostile checkpoints: nothing in them runs, and each gets one line in stylequery's words."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import random
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from stylequery.checkpoint import FORMAT, load_checkpoint, load_model
from stylequery.errors import CheckpointError
from stylequery.index import EmbeddingIndex

CPU = torch.device("cpu")


class _Payload:
    """Unpickling this would create the file named by ``marker``."""

    marker = ""

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _hostile(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "pickle payload":
        _Payload.marker = str(folder / "pwned")
        torch.save({"format": FORMAT, "model": _Payload()}, path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps({"format": FORMAT}))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(random.Random(kind).randbytes(4096))
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) * 6 // 10])
    elif kind == "format only":
        torch.save({"format": FORMAT}, path)
    elif kind == "wrong types":
        payload = torch.load(good, weights_only=True)
        torch.save({**payload, "vocab": "black", "model": {"w": 1}}, path)
    elif kind == "other model":
        payload = torch.load(good, weights_only=True)
        model = dict(payload["model"])
        name = next(iter(model))
        model[name] = torch.zeros(3, 3)
        del model[sorted(model)[-1]]
        torch.save({**payload, "model": model}, path)
    elif kind == "a folder":
        path.mkdir()
    return path


CASES = {
    "pickle payload": "Python objects (which stylequery never loads)",
    "plain pickle": "Python objects (which stylequery never loads)",
    "empty": "not a readable checkpoint",
    "random bytes": "not a",  # may look like an old-style pickle, or like nothing at all
    "truncated": "not a readable checkpoint",
    "format only": "lacks 'fingerprint', 'iteration', 'config', 'vocab', 'model', 'loss'",
    "wrong types": "'vocab' of the wrong type",
    "other model": "weights do not fit the model of its config: missing",
    "a folder": "not a checkpoint file nor an export folder",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_hostile_checkpoint_is_one_line(kind: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _hostile(kind, tmp_path, tiny_checkpoint)
    with pytest.raises(CheckpointError) as info:
        load_model(path, CPU)
    message = str(info.value)
    assert CASES[kind] in message and str(path) in message
    assert "\n" not in message and "weights_only" not in message.lower()
    assert not (tmp_path / "pwned").exists()


def test_cli_names_the_file_in_one_line(
    cli, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    path = _hostile("pickle payload", tmp_path, tiny_checkpoint)
    image = EmbeddingIndex.load(tiny_index).paths[0]
    cli.fails("query", image, "--checkpoint", path, "--index", tiny_index, "--change", "a:b",
              needle="never loads")  # fmt: skip
    result = cli.run(
        "evaluate", "--checkpoint", _hostile("random bytes", tmp_path, tiny_checkpoint)
    )
    assert result.exit_code == 1 and "weights_only" not in result.output
    assert not (tmp_path / "pwned").exists()


def _damaged(good: bytes, rng: random.Random) -> bytes:
    """Random bytes, or ``good`` with its pickle stream damaged inside an intact zip (so the
    damage reaches torch's unpickler instead of failing the zip's checksum)."""
    if rng.random() < 0.2:
        return rng.randbytes(rng.choice([1, 7, 64, 4096]))
    archive = zipfile.ZipFile(io.BytesIO(good))
    names = archive.namelist()
    pkl = next(name for name in names if name.endswith("data.pkl"))
    stream = bytearray(archive.read(pkl))
    at = rng.randrange(len(stream))
    how = rng.randrange(3)
    if how == 0:
        stream[at] = rng.randrange(256)
    elif how == 1:
        opcode = rng.choice(pickletools.opcodes).code.encode("latin-1")
        stream[at:at] = opcode + rng.randbytes(rng.randrange(4))
    else:
        del stream[at : at + rng.randrange(1, 6)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
        for name in names:
            rebuilt.writestr(name, bytes(stream) if name == pkl else archive.read(name))
    return out.getvalue()


def _damaged_files(folder: Path, count: int) -> Iterator[Path]:
    good = io.BytesIO()
    model = {"w": torch.ones(2, 2)}
    payload = {"format": FORMAT, "fingerprint": "f", "iteration": 3, "config": {"a": 1.5},
               "vocab": ["black", "green"], "model": model, "loss": {}}  # fmt: skip
    torch.save(payload, good)
    rng = random.Random(0)
    for i in range(count):
        path = folder / f"{i}.pt"
        path.write_bytes(_damaged(good.getvalue(), rng))
        yield path


def test_damaged_torch_files_fail_as_one_line(tmp_path: Path) -> None:
    """Whatever the unpickler trips over (IndexError, KeyError, struct.error, ...) is one
    CheckpointError; a damage the loader survives still has to pass the structure check."""
    loaded = 0
    for path in _damaged_files(tmp_path, 600):
        try:
            load_checkpoint(path)
            loaded += 1
        except CheckpointError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            assert "weights_only" not in str(exc).lower()
    assert loaded < 60  # nearly every damage is caught, not silently loaded
