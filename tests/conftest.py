"""Shared fixtures: a tiny synthetic catalogue, its prepared folder and a tiny config.

The catalogue and prepared folder are built once per test session; tests must not modify
them (copy the catalogue with ``tiny_catalogue_copy`` to break things).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stylequery.config import Config
from stylequery.data import prepare
from stylequery.synth import synthesize

TINY_PRODUCTS = 36
TINY_IMAGE_SIZE = 32


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a synthetic catalogue of 36 products (32 x 32 JPEGs, Fashion200k layout).

    About 45 train and 20 test images; captions of a family differ in one word.
    """
    root = tmp_path_factory.mktemp("catalogue") / "fashion"
    synthesize(root, products=TINY_PRODUCTS, image_size=TINY_IMAGE_SIZE, seed=0, test_fraction=0.25)
    return root


@pytest.fixture(scope="session")
def tiny_prepared(tiny_catalogue: Path) -> Path:
    """Prepared folder of the tiny catalogue, at ``ROOT/prepared/pants``, with a 32px cache."""
    cfg = Config().data
    cfg.root = str(tiny_catalogue)
    return prepare(cfg, image_cache=TINY_IMAGE_SIZE).out


@pytest.fixture
def tiny_config(tiny_catalogue: Path, tiny_prepared: Path) -> Config:
    """A fresh Config for seconds-long CPU runs on the tiny catalogue."""
    cfg = Config()
    cfg.data.root = str(tiny_catalogue)
    cfg.data.prepared_dir = str(tiny_prepared)
    cfg.data.image_size = TINY_IMAGE_SIZE
    cfg.data.num_workers = 0
    cfg.model.embed_dim = 16
    cfg.model.word_dim = 16
    cfg.model.text_hidden = 16
    cfg.train.batch_size = 8
    cfg.train.iterations = 4
    cfg.train.eval_every = 0
    cfg.train.precision = "fp32"
    return cfg


@pytest.fixture
def tiny_catalogue_copy(tiny_catalogue: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny catalogue (without its prepared folder) to modify."""
    root = tmp_path / "fashion"
    shutil.copytree(tiny_catalogue, root, ignore=shutil.ignore_patterns("prepared"))
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP contention on a shared CPU (several times faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
