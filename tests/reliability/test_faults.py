"""Faults as a user meets them: ``kill -9`` mid-way, and two writers at once (subprocesses).

After each kill, what was there before is intact and the next run completes; a killed
training resumes to the weights of an uninterrupted run; two concurrent ``embed --append``
both end up in the index.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stylequery.errors import LockError
from stylequery.fileio import exclusive_lock
from stylequery.index import EmbeddingIndex
from stylequery.synth import synthesize

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[2] / "src"
TIMEOUT = 240.0  # seconds any one step may take on a loaded CI machine


def _cli(cwd: Path, *args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "stylequery", *map(str, args)]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    """Wait for a CLI process; it must exit 0. Returns its stderr."""
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return err


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; it must not have finished by then."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert proc.poll() is None, f"finished before the kill:\n{proc.communicate()[1]}"
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _locked(target: Path) -> Callable[[], bool]:
    def held() -> bool:
        try:
            with exclusive_lock(target, timeout=0):
                return False
        except LockError:
            return True

    return held


@pytest.fixture(scope="module")
def big_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue large enough that prepare and embed take a moment (~300 images of 64 px)."""
    root = tmp_path_factory.mktemp("faults") / "fashion"
    synthesize(root, products=150, image_size=64, seed=1)
    return root


def test_kill_9_during_prepare(big_catalogue: Path, tmp_path: Path) -> None:
    root = tmp_path / "fashion"
    shutil.copytree(big_catalogue, root)
    _finish(_cli(tmp_path, "prepare", f"data.root={root}"))
    out = root / "prepared" / "pants"
    before = _snapshot(out)
    proc = _cli(tmp_path, "prepare", f"data.root={root}", "--image-cache", "64")
    _kill_when(proc, lambda: any(out.parent.glob(".pants.*.tmp")))
    assert _snapshot(out) == before  # the earlier prepared folder is untouched
    assert any(out.parent.glob(".pants.*.tmp"))  # the killed run's leftover ...
    _finish(_cli(tmp_path, "prepare", f"data.root={root}", "--image-cache", "64"))
    assert not any(out.parent.glob(".pants.*.tmp"))  # ... is removed by the next run
    assert (out / "cache_train_64.npy").is_file()


def _train_args(catalogue: Path, prepared: Path, name: str) -> list[str]:
    return [
        "train", "-c", "tiny.yaml", f"data.root={catalogue}", f"data.prepared_dir={prepared}",
        "train.iterations=8", "train.checkpoint_every=4", f"train.name={name}", "--device", "cpu",
    ]  # fmt: skip


def test_kill_9_during_training_then_resume_matches(
    tiny_catalogue: Path, tiny_prepared: Path, tmp_path: Path
) -> None:
    straight = _cli(tmp_path, *_train_args(tiny_catalogue, tiny_prepared, "straight"))
    killed = _cli(tmp_path, *_train_args(tiny_catalogue, tiny_prepared, "killed"))
    last = tmp_path / "runs" / "train" / "killed" / "weights" / "last.pt"
    _kill_when(killed, last.is_file)
    _finish(straight)
    saved = torch.load(last, weights_only=True)  # the checkpoint written before the kill loads
    assert saved["iteration"] >= 4  # 4 unless a very slow machine let it reach the next save
    _finish(_cli(tmp_path, "train", "--resume", last.parent.parent, "--device", "cpu"))
    a = torch.load(tmp_path / "runs/train/straight/weights/last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["iteration"] == b["iteration"] == 8
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, msg=name)


def test_kill_9_during_embed_append(
    big_catalogue: Path, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    before = EmbeddingIndex.load(index)
    old = {"paths": list(before.paths), "rows": before.embeddings.copy()}
    args = ["embed", big_catalogue / "women", "--checkpoint", tiny_checkpoint, "--out", index]
    proc = _cli(tmp_path, *args, "--append", "--device", "cpu")
    _kill_when(proc, _locked(index))
    after = EmbeddingIndex.load(index)
    assert after.paths == old["paths"] and (after.embeddings == old["rows"]).all()
    _finish(_cli(tmp_path, *args, "--append", "--device", "cpu"))
    grown = EmbeddingIndex.load(index)
    assert grown.paths[: len(old["paths"])] == old["paths"] and len(grown) > len(old["paths"])


def test_two_concurrent_embed_appends_keep_both(
    big_catalogue: Path, tiny_checkpoint: Path, tiny_index: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    first = len(EmbeddingIndex.load(index))
    folders = sorted((big_catalogue / "women" / "pants").iterdir())[:2]
    common = ["--checkpoint", tiny_checkpoint, "--out", index, "--append", "--device", "cpu"]
    procs = [_cli(tmp_path, "embed", folder, *common) for folder in folders]
    for proc in procs:
        _finish(proc)
    paths = set(EmbeddingIndex.load(index).paths)
    for folder in folders:
        images = {str(p.resolve()) for p in folder.rglob("*.jpeg")}
        assert images and images <= paths, folder
    assert len(paths) == first + sum(len(list(f.rglob("*.jpeg"))) for f in folders)
