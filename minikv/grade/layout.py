"""Where the course files live, and how a learner's file is imported fresh from disk.

Layout: ``solutions/chNN_topic.py`` (reference, with solution regions),
``exercises/chNN_topic.py`` (generated stubs the learner edits) and
``chapters/NN_topic.ipynb`` (the chapter that explains them), all under one
course root.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from pathlib import Path
from types import ModuleType

import minikv
from minikv.errors import MinikvError

IMPLS = ("exercises", "solutions")
_fresh = itertools.count()


def _is_root(path: Path) -> bool:
    return (path / "solutions").is_dir() or (path / "exercises").is_dir()


def repo_root() -> Path:
    """The course root: the folder above the ``minikv`` package if it holds ``solutions/``,
    else ``$MINIKV_ROOT``, else the nearest folder at or above the working directory
    that holds ``solutions/`` or ``exercises/``.
    """
    beside_package = Path(minikv.__file__).resolve().parents[1]
    if (beside_package / "solutions").is_dir():
        return beside_package
    env = os.environ.get("MINIKV_ROOT")
    if env:
        root = Path(env).expanduser().resolve()
        if not _is_root(root):
            raise MinikvError(f"MINIKV_ROOT={env} holds no solutions/ or exercises/ folder; point it at the course folder")
        return root
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_root(folder):
            return folder
    raise MinikvError(
        "cannot find the course folder (the one holding solutions/ and exercises/); "
        "run from inside it or set MINIKV_ROOT=/path/to/minikv"
    )


def chapter_of(stem: str) -> int:
    """``"ch01_kv_cache"`` -> 1."""
    if not (stem.startswith("ch") and stem[2:4].isdigit()):
        raise MinikvError(f"{stem!r} is not a chapter module name; expected chNN_topic, e.g. ch01_kv_cache")
    return int(stem[2:4])


def notebook_for(stem: str) -> str:
    """``"ch01_kv_cache"`` -> ``"chapters/01_kv_cache.ipynb"`` (relative to the root)."""
    chapter_of(stem)
    return f"chapters/{stem[2:]}.ipynb"


def impl_path(stem: str, impl: str, root: Path | None = None) -> Path:
    """``<root>/<impl>/<stem>.py`` for ``impl`` in ``("exercises", "solutions")``."""
    if impl not in IMPLS:
        raise MinikvError(f"impl={impl!r} is unknown; choose from {IMPLS}")
    return (root or repo_root()) / impl / f"{stem}.py"


def default_impl() -> str:
    """``$MINIKV_IMPL`` (``exercises`` or ``solutions``), ``exercises`` when unset."""
    impl = os.environ.get("MINIKV_IMPL", "").strip() or "exercises"
    if impl not in IMPLS:
        raise MinikvError(f"MINIKV_IMPL={impl!r} is unknown; set it to one of {IMPLS} or unset it")
    return impl


def load_file(path: str | Path) -> ModuleType:
    """Import the Python file at ``path`` under a new module name, so every call reads the file anew."""
    path = Path(path).resolve()
    if not path.is_file():
        raise MinikvError(f"{path} does not exist; run `minikv exercises` to create the exercise files")
    name = f"_minikv_learner_{path.stem}_{os.getpid()}_{next(_fresh)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def learner_module(stem: str, impl: str | None = None) -> ModuleType:
    """The learner's ``exercises/<stem>.py``, freshly imported (``solutions/`` when
    ``impl="solutions"`` or ``$MINIKV_IMPL=solutions``), to plug into the engine.

    >>> KVCache = learner_module("ch01_kv_cache").KVCache   # doctest: +SKIP
    """
    return load_file(impl_path(stem, impl or default_impl()))


def relative(path: str | Path, root: Path | None = None) -> str:
    """``path`` relative to the course root when it lies inside, else as given."""
    try:
        return str(Path(path).resolve().relative_to((root or repo_root()).resolve()))
    except (ValueError, OSError, MinikvError):
        return str(path)
