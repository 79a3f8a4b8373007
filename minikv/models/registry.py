"""Turn a model name into a local Hugging Face checkpoint directory.

Accepted names, in the order they are tried:

* ``"smollm2-135m"`` (the default): the embedded SmolLM2-135M-Instruct, converted once into the cache;
* ``"tiny-llama"``, ``"tiny-qwen2"`` and variants (``"tiny-llama:heads=6,kv_heads=2"``): random test models;
* a path to a local directory with ``config.json``, ``*.safetensors`` and a tokenizer;
* a Hugging Face hub id (``"org/name"``), downloaded when the machine is online or found in the HF cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from minikv.errors import ModelNotFoundError
from minikv.models import smollm2, tiny
from minikv.paths import cache_dir

DEFAULT_MODEL = "smollm2-135m"
ALIASES = {"smollm2-135m": DEFAULT_MODEL, "smollm2": DEFAULT_MODEL, "smollm2-135m-instruct": DEFAULT_MODEL}


def known_names() -> list[str]:
    return [DEFAULT_MODEL, *tiny.BASE]


def resolve(name: str) -> Path:
    """The checkpoint directory for ``name``, creating or converting it on first use."""
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ModelNotFoundError(f"model must be a name or a path, got {name!r}; known names: {', '.join(known_names())}")
    name = str(name)
    if name.lower() in ALIASES:
        dest = cache_dir() / smollm2.CACHE_NAME
        if not (dest / "config.json").exists():
            smollm2.convert(dest)
        return dest
    if tiny.is_tiny_name(name):
        settings = tiny.parse_tiny_name(name)  # validates before anything is written
        key = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:12]
        dest = cache_dir() / "tiny" / f"{name.split(':')[0]}-{key}"
        if not (dest / "config.json").exists():
            tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tiny.write_tiny_model(name, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        return dest
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} has no config.json; point at a Hugging Face checkpoint directory")
        return path
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _from_hub(name)
    raise ModelNotFoundError(
        f"unknown model {name!r}: not a known name ({', '.join(known_names())}), not a local directory, "
        "not a hub id like 'org/name'"
    )


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja"]))
    except Exception as first:  # offline, unknown repo, gated...
        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:
            raise ModelNotFoundError(
                f"cannot get {repo_id!r} from the Hugging Face hub ({type(first).__name__}) and it is not in the "
                "local HF cache; download it on a machine that is online, or pass a local checkpoint directory"
            ) from None


def cached_models() -> list[tuple[str, int]]:
    """(folder, size in bytes) of every model in the minikv cache, for ``minikv doctor``."""
    root = cache_dir()
    found = []
    for cfg in sorted(root.glob("**/config.json")):
        size = sum(f.stat().st_size for f in cfg.parent.iterdir() if f.is_file())
        found.append((str(cfg.parent.relative_to(root)), size))
    return found
