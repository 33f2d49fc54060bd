"""stylequery: composed image retrieval for fashion.

A product photo plus a change in words ("black to green") in, the matching catalogue
images out. The public API::

    load_config(path, overrides) -> Config
    prepare(cfg.data, out) -> PrepareSummary
    train(cfg, run_dir, device) -> TrainResult
    evaluate(checkpoint, cfg, device=...) -> EvalResult
    embed(checkpoint, source, out, device) -> EmbedSummary
    QueryEngine(checkpoint, index_dir, device).query(image, [("black", "green")])
    export_model(checkpoint, out_dir) -> Path

Names are imported on first use (PEP 562), so ``import stylequery`` does not import torch.
``stylequery.train``, ``.evaluate`` and ``.prepare`` are always these functions, even after
their modules of the same name are imported (reach a module with ``importlib.import_module``
or ``from stylequery.train import ...``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "load_config": "stylequery.config",
    "prepare": "stylequery.prepare",
    "train": "stylequery.train",
    "evaluate": "stylequery.evaluate",
    "embed": "stylequery.inference",
    "QueryEngine": "stylequery.inference",
    "export_model": "stylequery.checkpoint",
}

__all__ = [
    "QueryEngine",
    "__version__",
    "embed",
    "evaluate",
    "export_model",
    "load_config",
    "prepare",
    "train",
]

if TYPE_CHECKING:
    from stylequery.checkpoint import export_model
    from stylequery.config import load_config
    from stylequery.evaluate import evaluate
    from stylequery.inference import QueryEngine, embed
    from stylequery.prepare import prepare
    from stylequery.train import train


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    if name not in _API:
        raise AttributeError(f"module 'stylequery' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """The package module, refusing to let a submodule hide the public function of its name."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing stylequery.train binds it here as an attribute; the function stays instead.
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
