"""The public API: lazy imports, and the README's Python example run exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python example"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", readme_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("{'recall@1': ")
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"]
    assert lines[4].startswith("QueryHit(rank=1, ")
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "train" / "example" / "index" / "index.json").is_file()


def test_import_stylequery_does_not_import_torch() -> None:
    code = "import sys, stylequery, stylequery.config; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_api_names_stay_functions_after_their_modules_are_imported() -> None:
    code = (
        "import stylequery as sq\n"
        "import stylequery.train, stylequery.evaluate, stylequery.prepare\n"
        "from stylequery.evaluate import EvalResult\n"
        "print(all(callable(getattr(sq, n)) and not isinstance(getattr(sq, n), type(sq))"
        " for n in sq.__all__ if n != '__version__'))\n"
        "print(sorted(n for n in sq.__all__ if n != '__version__'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        "True",
        "['QueryEngine', 'embed', 'evaluate', 'export_model', 'load_config', 'prepare', 'train']",
    ]


def test_a_config_built_in_python_is_validated_before_anything_is_written(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    import stylequery
    from stylequery.config import Config
    from stylequery.errors import ConfigError

    cfg = Config()
    cfg.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"'train\.batch_size': 0 is out of range"):
        stylequery.train(cfg, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()
    cfg = Config()
    cfg.eval.ks = [0]
    with pytest.raises(ConfigError, match=r"'eval\.ks'"):
        stylequery.evaluate(tiny_checkpoint, cfg, device="cpu")
