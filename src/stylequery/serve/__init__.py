"""``stylequery serve``: an HTTP API and a web page over a loaded :class:`QueryEngine`.

The web stack (FastAPI, uvicorn, python-multipart) is the optional ``[serve]`` extra; this
module imports none of it, so the CLI can say how to install it when it is missing.
"""

from __future__ import annotations

import importlib.util

# import name -> distribution name of each package the server needs
REQUIREMENTS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}
INSTALL_HINT = "pip install 'stylequery[serve]'"


def missing_requirements() -> list[str]:
    """Distribution names of the server's packages that are not installed."""
    return [
        dist for module, dist in REQUIREMENTS.items() if importlib.util.find_spec(module) is None
    ]
