"""Atomic writes and write locks: a file or folder appears whole, and one writer at a time.

Everything the project writes that a person would hate to lose (prepared data, checkpoints,
indexes, metrics) goes through these helpers: the content is written next to the target
under a temporary name and then renamed, which is atomic on POSIX file systems.

A read-modify-write of a shared file or folder (``embed --append`` on an index, a prepared
folder, a run folder) also holds :func:`exclusive_lock`, so two processes never both read the
old state and the last writer never silently drops the first one's work.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import pickle
import shutil
import struct
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stylequery.errors import LockError, StyleQueryError, one_line

DEFAULT_LOCK_TIMEOUT = 60.0  # seconds a writer waits for another one before giving up
_LOCK_POLL = 0.05  # seconds between attempts while waiting


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; give it normal permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; swap it in for ``path`` if the block succeeds.

    An existing folder at ``path`` stays untouched until the new one is complete, so a
    failure inside the block leaves earlier results intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; give it normal permissions
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, data: Any) -> Path:
    """Write pretty-printed JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# What torch's weights-only unpickler raises on bytes that are not a well-formed torch file.
# It is pure Python, so a malformed stream fails with whichever builtin error the broken
# opcode trips over; fuzzing torch.load with random and mutated files met all of these.
_MALFORMED = (
    RuntimeError,
    OSError,
    EOFError,
    ValueError,  # UnicodeDecodeError too
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    AssertionError,
    struct.error,
    OverflowError,
    MemoryError,
)


def read_torch(
    path: Path, what: str, error: type[StyleQueryError], map_location: Any = "cpu"
) -> Any:
    """``torch.load(weights_only=True)`` of a file that may hold anything.

    Nothing in the file is executed. Every way it can fail becomes one ``error`` line that
    names the file and says what is wrong in stylequery's words (never torch's hint to load
    an untrusted file without ``weights_only``). ``what`` names the file's role ("checkpoint").
    """
    import torch  # fileio stays importable without torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on pickle protocols
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise error(
            f"{path}: not a {what}: unreadable, or holding Python objects "
            "(which stylequery never loads)"
        ) from None
    except _MALFORMED:
        raise error(
            f"{path}: not a readable {what} (empty, truncated, corrupt or not a torch file)"
        ) from None


def read_json(path: Path, what: str, error: type[StyleQueryError]) -> Any:
    """The JSON value in ``path``; a missing, unreadable or malformed file is one ``error``
    line that names the file and its role (``what``, e.g. "manifest")."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable {what} ({one_line(exc)})") from None


def lock_path(target: Path) -> Path:
    """The hidden lock file that guards ``target``: beside it, so swapping a folder keeps it."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextmanager
def exclusive_lock(target: Path, timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[Path]:
    """Hold the write lock of a file or folder for the duration of the block.

    The lock is an ``fcntl.flock`` on :func:`lock_path` (``.NAME.lock`` beside the target), so
    the operating system releases it when the holder exits, even after ``kill -9``: a stale lock
    file never blocks anyone. The lock is per process and not re-entrant: taking it twice in one
    process waits on itself and times out.

    Args:
        target: The file or folder about to be read, changed and written back.
        timeout: Seconds to wait for another holder; 0 fails at once if it is held.

    Yields:
        The lock file's path.

    Raises:
        LockError: Another process held the lock for longer than ``timeout``.
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, Path(target), timeout)
        try:
            remove_leftovers(Path(target))
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, target: Path, timeout: float) -> None:
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockError(f"cannot lock {target}: {exc.strerror}") from exc
        if time.monotonic() >= deadline:
            raise LockError(
                f"{target} is being written by another stylequery process "
                f"(waited {timeout:g} s); try again when it has finished"
            )
        time.sleep(_LOCK_POLL)


def remove_leftovers(target: Path) -> list[Path]:
    """Delete the temporaries a killed atomic write of ``target`` left beside it.

    Only safe while holding :func:`exclusive_lock` on ``target`` (which calls it).

    Returns:
        The paths removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = [*target.parent.glob(f".{glob.escape(target.name)}.*.tmp")]
    stale += [p for p in [target.with_name(f".{target.name}.old")] if p.exists()]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale
