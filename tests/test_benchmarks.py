"""Smoke tests: every benchmark script runs once at a tiny size and writes its JSON."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

TINY = {
    "train_speed": ["--device", "cpu", "--image-size", "32", "--products", "20", "--jpeg-size",
                    "48", "--batch-size", "4", "--iterations", "1", "--warmup", "0",
                    "--min-seconds", "0", "--workers", "0", "--repeats", "1"],
    "eval_speed": ["--device", "cpu", "--sizes", "40", "--shape", "tiny", "--jpeg-size", "32",
                   "--repeats", "1"],
    "embed_speed": ["--device", "cpu", "--shapes", "tiny", "--products", "6", "--workers", "0",
                    "--repeats", "1"],
    "index_scale": ["--sizes", "2000", "--dims", "16", "--queries", "64", "--single", "2",
                    "--batches", "1", "--nprobe", "4", "--qdrant-max", "2000"],
    "query_latency": ["--device", "cpu", "--sizes", "1000", "--shapes", "tiny", "--dtypes",
                      "float16", "--runs", "2", "--repeats", "1"],
    "serve_latency": ["--device", "cpu", "--sizes", "1000", "--shapes", "tiny", "--clients", "1",
                      "2", "--requests", "2", "--repeats", "1"],
    "budget": ["--device", "cpu", "--products", "30", "--minutes", "0.01", "--seeds", "0",
               "--recipes", "reference", "cpu", "image_only", "--jobs", "2", "--set",
               "data.image_size=32"],
    "quality": ["--device", "cpu", "--products", "20", "--seeds", "0", "--set",
                "train.iterations=1", "--set", "train.batch_size=4", "--set",
                "data.image_size=32"],
    "strict_check": ["--products", "6", "--jpeg-size", "32", "--repeats", "1"],
    "ceiling": ["--products", "60"],
}  # fmt: skip

ROW_KEYS = {
    "index_scale": {"kind", "gallery", "dim", "backend", "build_s", "single_p50_ms", "recall@10"},
    "train_speed": {"variant", "images_per_s", "s_per_iter", "runs"},
    "eval_speed": {"test_images", "queries", "total_s", "encode_s", "rest_s"},
    "embed_speed": {"shape", "workers", "embed_images_per_s", "forward_images_per_s"},
    "query_latency": {"gallery", "dim", "dtype", "search_p50_ms", "search_p95_ms", "e2e_p95_ms"},
    "quality": {"composer", "recall@1", "recall@10", "recall@50"},
    "strict_check": {"check", "images", "prepare_s", "images_per_s"},
    "serve_latency": {"shape", "gallery", "clients", "errors", "p50_ms", "p95_ms"},
    "budget": {"recipe", "seeds", "recall@1", "recall@5", "recall@10", "recall@50"},
    "ceiling": {"split", "gallery", "queries", "recall@1", "recall@5", "recall@10"},
}
EXTRA_KEYS = {
    "train_speed": {"ratios", "feature_caching"},
    "query_latency": {"cold"},
    "serve_latency": {"cold"},
    "quality": {"per_run"},
    "strict_check": {"strict_over_header"},
    "budget": {"per_run", "curves", "goals"},
}


def load_benchmark(name: str) -> ModuleType:
    """The script as a module of its own name (conftest.py puts benchmarks/ on sys.path), so
    the worker processes that ``budget.py --jobs`` spawns, which receive that sys.path, can
    import it again."""
    return importlib.import_module(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_runs_at_a_tiny_size_and_writes_json(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    argv = [*TINY[name], "--out", str(out), "--work", str(tmp_path / "work")]
    returned = load_benchmark(name).main(argv)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned, default=str))
    assert written["benchmark"] == name
    assert written["command"].startswith(f"python benchmarks/{name}.py ")
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(written["machine"])
    assert written["rows"]
    for row in written["rows"]:
        assert ROW_KEYS[name] <= set(row)
    assert EXTRA_KEYS.get(name, set()) <= set(written)
    if name == "query_latency":
        (cold,) = written["cold"]
        assert cold["cli_s"] > 0
        assert 0 < cold["rss_imports_mb"] <= cold["rss_engine_mb"] <= cold["rss_peak_mb"]
    if name == "serve_latency":
        assert all(row["errors"] == 0 and row["p50_ms"] > 0 for row in written["rows"])
        (cold,) = written["cold"]
        assert cold["cli_s"] > 0 and cold["speedup"] > 0


@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_help_works(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark(name).main(["--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out
