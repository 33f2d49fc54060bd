"""fileio: atomic writes and the write lock, held across processes and freed by kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylequery.errors import DataError, LockError, StyleQueryError
from stylequery.fileio import (
    atomic_dir,
    exclusive_lock,
    lock_path,
    read_json,
    write_json,
    write_text,
)

HOLDER = """
import sys, time
from pathlib import Path
from stylequery.fileio import exclusive_lock
with exclusive_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(target: Path, seconds: float) -> subprocess.Popen[str]:
    """Start a process that holds the lock of ``target`` and wait until it has it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_file_sits_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with exclusive_lock(target) as path:
        assert path == lock_path(target) == tmp_path / ".index.lock"
        assert path.exists()


def test_lock_is_released_after_the_block_even_on_error(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with pytest.raises(RuntimeError), exclusive_lock(target):
        raise RuntimeError("boom")
    with exclusive_lock(target, timeout=0):
        pass


def test_second_process_fails_with_one_line_naming_the_path(tmp_path: Path) -> None:
    target = tmp_path / "my index"
    holder = _hold(target, 30)
    try:
        start = time.monotonic()
        with pytest.raises(LockError) as info, exclusive_lock(target, timeout=0.3):
            pass
        assert time.monotonic() - start >= 0.3
        message = str(info.value)
        assert isinstance(info.value, StyleQueryError)
        assert "\n" not in message and str(target) in message
        with exclusive_lock(tmp_path / "other", timeout=0):  # other targets are free
            pass
    finally:
        holder.kill()
        holder.wait()


def test_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    target = tmp_path / "index"
    holder = _hold(target, 0.5)
    start = time.monotonic()
    with exclusive_lock(target, timeout=30):
        waited = time.monotonic() - start
    holder.wait()
    assert waited > 0.3  # the holder kept it for 0.5 s after saying so


def test_kill_9_frees_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "index"
    holder = _hold(target, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(target).exists()  # the stale file stays, but it no longer locks anything
    with exclusive_lock(target, timeout=5):
        pass


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    write_text(target / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_lock_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    target = tmp_path / "out [1]"
    write_text(target / "a.txt", "kept")
    stale_dir = tmp_path / ".out [1].abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "big.npy").write_bytes(b"x" * 100)
    (tmp_path / ".out [1].old").mkdir()
    (tmp_path / ".out [1].xyz.tmp").write_text("partial file")
    neighbour = tmp_path / ".other.abc.tmp"  # another target's temporary is not ours to remove
    neighbour.mkdir()
    with exclusive_lock(target):
        pass
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".other.abc.tmp", ".out [1].lock", "out [1]"]
    assert (target / "a.txt").read_text() == "kept"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "manifest not found"),
        (b"{'single': 'quotes'}", "unreadable manifest (Expecting property name"),
        (b"\xff\xfe\x00", "unreadable manifest ('utf-8' codec"),
    ],
)
def test_read_json_fails_as_one_line_naming_file_and_role(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_json(path, "manifest", DataError)
    assert str(info.value).startswith(f"{path}: {needle}") and "\n" not in str(info.value)


def test_read_json_reads_what_write_json_wrote(tmp_path: Path) -> None:
    data = {"format": "x", "rows": [1, 2.5, None], "name": "schwarz → grün"}
    assert read_json(write_json(tmp_path / "a.json", data), "a", DataError) == data
