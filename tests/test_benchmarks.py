"""Smoke tests: every benchmark script runs once at a tiny size and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TINY = {
    "train_speed": ["--image-size", "32", "--products", "20", "--iterations", "1", "--warmup",
                    "0", "--batch-size", "4", "--workers", "0"],
    "eval_speed": ["--sizes", "60", "--image-size", "32", "--repeats", "1"],
    "embed_speed": ["--products", "6", "--repeats", "1", "--workers", "0", "--batch-size", "8"],
    "query_latency": ["--sizes", "500", "--dim", "16", "--image-size", "32", "--runs", "2",
                      "--repeats", "1"],
    "quality": ["--products", "30", "--set", "train.iterations=2", "--set", "train.batch_size=4",
                "--set", "data.image_size=32"],
}  # fmt: skip

KEYS = {
    "train_speed": {"variant", "images_per_s", "s_per_iter", "feature_cache_s"},
    "eval_speed": {"test_images", "queries", "encode_s", "rest_s", "total_s"},
    "embed_speed": {"shape", "embed_images_per_s", "forward_images_per_s", "forward_over_embed"},
    "query_latency": {"gallery", "dtype", "search_p50_ms", "search_p95_ms", "e2e_p50_ms"},
    "quality": {"composer", "recall@1", "recall@10", "recall@50"},
}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_runs_at_a_tiny_size(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    result = _load(name).main([*TINY[name], "--out", str(out), "--work", str(tmp_path / "work")])
    written = json.loads(out.read_text())
    assert written["benchmark"] == result["benchmark"] == name
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(written["machine"])
    assert written["rows"]
    for row in written["rows"]:
        assert KEYS[name] <= set(row)
