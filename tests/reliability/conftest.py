"""Fixtures of the reliability suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus import write_corpus  # tests/reliability/corpus.py


@pytest.fixture(scope="session")
def hostile_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every image of ``corpus.HOSTILE``, written into one folder; name -> path."""
    return write_corpus(tmp_path_factory.mktemp("hostile"))
