"""Where minikv keeps converted and generated models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$MINIKV_CACHE`` if set, else the user cache dir (``~/.cache/minikv`` on Linux)."""
    env = os.environ.get("MINIKV_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("minikv", appauthor=False))
