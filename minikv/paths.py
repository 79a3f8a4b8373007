"""Where minikv keeps converted and generated models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$MINIKV_CACHE`` if set, else the user cache dir (``~/.cache/minikv`` on Linux)."""
    env = os.environ.get("MINIKV_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # platformdirs is a dependency, but keep a sane default without it
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minikv"
    return Path(user_cache_dir("minikv", appauthor=False))
