"""Checksums of the label files of the real Fashion200k release.

The dataset itself is not redistributable, so only its fingerprints live here (size in bytes
and sha256, as recorded by a public Git LFS copy). ``prepare`` uses them to tell a user
whether the label files under their root are the published ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple


class ReleaseFile(NamedTuple):
    size: int  # bytes
    sha256: str


# path relative to the catalogue root -> fingerprint of the released file
KNOWN_LABEL_FILES: dict[str, ReleaseFile] = {
    "labels/dress_test_detect_all.txt": ReleaseFile(
        611753, "15c8feea1915bbf14218377f84be3bf9e792ec04ccb0bff7e745be4fd04c5865"
    ),
    "labels/dress_train_detect_all.txt": ReleaseFile(
        5289154, "6b9857a348de383eefa4e10a793e2a50b0d42068fa616f169f6148c5d588ddee"
    ),
    "labels/jacket_test_detect_all.txt": ReleaseFile(
        453608, "faeb7a15fe79bdbc4454cdb96eeba88048e353e0494c8d7908e6a303c450cdc8"
    ),
    "labels/jacket_train_detect_all.txt": ReleaseFile(
        2302682, "5a4030138e47ca264af7800c4254d54ce07bcb523fe45bf1f6f2c70e91298f11"
    ),
    "labels/pants_test_detect_all.txt": ReleaseFile(
        517476, "06a4713fba9626181ff24cfbf12e6dcbb7f1d2abae3fbad9811272bccdabf780"
    ),
    "labels/pants_train_detect_all.txt": ReleaseFile(
        2554431, "3fd9a5c701b3738ef225c6dc276f63fa1c24d10b9f78df47915f2e6e9a8c6b91"
    ),
    "labels/skirt_test_detect_all.txt": ReleaseFile(
        546435, "8fa61a8aac43823a414c5ac216371213a83b44aa5e21f7d0b740e13596ec531e"
    ),
    "labels/skirt_train_detect_all.txt": ReleaseFile(
        2811576, "6691a4a7c6f440dd2329fa6d31830022fe02c9784fac97018fceea622b1de678"
    ),
    "labels/top_test_detect_all.txt": ReleaseFile(
        741507, "41f499b4fab6094ecbfba2b2ced630451bd80ff7c7628ef339c26e0210ca3977"
    ),
    "labels/top_train_detect_all.txt": ReleaseFile(
        3699504, "f5ada4884a81851e9f746825fa0e711e03de08a7cf37607a9de347a6541a89c0"
    ),
}


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def matches_release(path: Path, name: str, sha256: str | None = None) -> bool | None:
    """Whether the file at ``path`` is the released file ``name`` (e.g. ``labels/x.txt``).

    The size is compared first; the content is hashed only when the size matches (or the
    hash is reused when the caller already has it).

    Args:
        path: The file on disk.
        name: Its path relative to the catalogue root.
        sha256: Its hex digest when already computed.

    Returns:
        True or False, or None when ``name`` is not a file of the release.
    """
    known = KNOWN_LABEL_FILES.get(name)
    if known is None:
        return None
    if Path(path).stat().st_size != known.size:
        return False
    return (sha256 or sha256_file(path)) == known.sha256


def combine_release_matches(matches: list[bool | None]) -> bool | None:
    """One verdict for several files: None if none is a release file, else all must match."""
    relevant = [m for m in matches if m is not None]
    if not relevant:
        return None
    return all(relevant) and len(relevant) == len(matches)
