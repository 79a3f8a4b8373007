"""What ``LLM.generate`` accepts as prompts and sampling parameters, checked before any work.

Prompts follow vLLM's forms:

- a string: the text, encoded with the model's tokenizer (wrapped in the chat
  template when ``generate(..., chat=True)``);
- ``{"prompt": "text"}`` (vLLM's ``TextPrompt``): the same as the string;
- ``{"prompt_token_ids": ids}`` (vLLM's ``TokensPrompt``): the ids as given,
  ``chat`` ignored. ``ids`` is a list or tuple of ints, or a 1-D integer torch
  tensor (converted with ``.tolist()``); bools are refused. An optional
  ``"prompt"`` beside them is only a label, copied to the output;
- a list (or other iterable) of the above.

Anything else (``None``, a number, bytes, unknown dict keys, a list of bare
ints) raises :class:`~minikv.errors.InvalidRequestError` naming the prompt and
the form to use. The tokenizer-dependent checks (vocabulary, context length)
are in :func:`check_prompt_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from minikv.errors import InvalidRequestError
from minikv.sampling import SamplingParams
from minikv.validation import check_token_ids, describe, is_int

PromptLike = str | dict[str, Any]
PROMPT_KEYS = ("prompt", "prompt_token_ids")
FORMS = "a string, {'prompt': text} or {'prompt_token_ids': [ints]}"


@dataclass(frozen=True)
class ParsedPrompt:
    """One prompt's pieces: ``text`` to encode (when ``token_ids`` is None) or a label; ``token_ids`` as given."""

    text: str | None
    token_ids: list[int] | None


def as_prompt_list(prompts: Any) -> list[Any]:
    """``prompts`` as a list of single prompts (one prompt is wrapped); the container itself is checked here."""
    if isinstance(prompts, (str, dict)):
        return [prompts]
    if isinstance(prompts, (bytes, bytearray)):
        raise InvalidRequestError(f"prompts must be text, got bytes {prompts[:20]!r}; decode them first, "
                                  "e.g. data.decode('utf-8')")
    if isinstance(prompts, torch.Tensor):
        raise InvalidRequestError("token ids go in a dict: generate({'prompt_token_ids': ids}); "
                                  f"got a bare tensor of shape {list(prompts.shape)}")
    if prompts is None or not hasattr(prompts, "__iter__"):
        raise InvalidRequestError(f"prompts must be {FORMS}, or a list of them; got {describe(prompts)}")
    items = list(prompts)
    if items and all(is_int(p) for p in items):
        raise InvalidRequestError("prompts is a list of ints; token ids go in a dict: "
                                  "generate({'prompt_token_ids': [...]})")
    return items


def parse_prompt(prompt: Any, where: str = "the prompt") -> ParsedPrompt:
    """Check one prompt's form (not its tokens' range); ``where`` names it in messages ("prompt 2")."""
    if isinstance(prompt, str):
        return ParsedPrompt(_check_text(prompt, where), None)
    if isinstance(prompt, (bytes, bytearray)):
        raise InvalidRequestError(f"{where} is bytes ({prompt[:20]!r}); decode it to a string first, "
                                  "e.g. data.decode('utf-8')")
    if not isinstance(prompt, dict):
        raise InvalidRequestError(f"{where} must be a string or a dict ({FORMS}), got {describe(prompt)}")
    unknown = [k for k in prompt if k not in PROMPT_KEYS]
    if unknown or not prompt:
        what = f"has unknown key(s) {', '.join(map(repr, unknown))}" if unknown else "is an empty dict"
        raise InvalidRequestError(f"{where} {what}; a prompt dict takes 'prompt' (text) and/or "
                                  "'prompt_token_ids' (a list of ints)")
    text = prompt.get("prompt")
    if text is not None and not isinstance(text, str):
        raise InvalidRequestError(f"{where}: 'prompt' must be a string, got {describe(text)}")
    if "prompt_token_ids" not in prompt:
        if text is None:
            raise InvalidRequestError(f"{where} has 'prompt': None and no 'prompt_token_ids'; give the text "
                                      "or the token ids")
        return ParsedPrompt(_check_text(text, where), None)
    ids = prompt["prompt_token_ids"]
    if isinstance(ids, torch.Tensor):
        ids = _tensor_ids(ids, where)
    ids = check_token_ids(f"{where}: prompt_token_ids", ids, nonnegative=False,
                          hint="give a list of ints or a 1-D integer torch tensor")
    return ParsedPrompt(text, ids)


def _check_text(text: str, where: str) -> str:
    if not text.strip():
        raise InvalidRequestError(f"{where} is empty; give at least one non-blank character")
    return text


def _tensor_ids(ids: torch.Tensor, where: str) -> list[int]:
    """A 1-D integer tensor's ids; other shapes or dtypes say what to pass."""
    if ids.dtype == torch.bool or ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise InvalidRequestError(f"{where}: prompt_token_ids is a {ids.dtype} tensor; token ids are integers, "
                                  "e.g. torch.tensor([1, 2, 3]) or ids.long()")
    if ids.dim() != 1:
        raise InvalidRequestError(f"{where}: prompt_token_ids must be 1-D (one prompt), got shape "
                                  f"{list(ids.shape)}; give one dict per row, e.g. "
                                  "[{'prompt_token_ids': row} for row in ids]")
    return ids.tolist()


def check_prompt_ids(ids: list[int], vocab_size: int, max_model_len: int, where: str = "the prompt") -> None:
    """Not empty, every id in the vocabulary, and room in the context for at least one new token."""
    if not ids:
        raise InvalidRequestError(f"{where} has no tokens; give at least one token")
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"token id {bad} of {where} is outside the vocabulary (0..{vocab_size - 1}); "
            "encode prompts with this model's tokenizer"
        )
    if len(ids) >= max_model_len:
        raise InvalidRequestError(
            f"{where} has {len(ids)} tokens but the model's context is {max_model_len}; "
            f"shorten it to at most {max_model_len - 1} tokens"
        )


def as_params_list(sampling_params: Any, num_prompts: int) -> list[SamplingParams]:
    """One :class:`SamplingParams` per prompt: ``None`` (defaults), one for all, or a list of exactly one each."""
    if sampling_params is None:
        return [SamplingParams()] * num_prompts
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * num_prompts
    if isinstance(sampling_params, dict):
        raise InvalidRequestError("sampling_params must be SamplingParams, got a dict; "
                                  "write SamplingParams(**your_dict)")
    if not isinstance(sampling_params, (list, tuple)):
        raise InvalidRequestError(f"sampling_params must be SamplingParams or a list of them (one per prompt), "
                                  f"got {describe(sampling_params)}")
    for i, sp in enumerate(sampling_params):
        if not isinstance(sp, SamplingParams):
            raise InvalidRequestError(f"sampling_params[{i}] must be SamplingParams, got {describe(sp)}"
                                      + ("; write SamplingParams(**that_dict)" if isinstance(sp, dict) else ""))
    if len(sampling_params) != num_prompts:
        raise InvalidRequestError(f"got {len(sampling_params)} SamplingParams for {num_prompts} prompts; "
                                  "give one for all, or one per prompt")
    return list(sampling_params)


def prompt_name(index: int, count: int) -> str:
    """How messages name a prompt: "the prompt" alone, "prompt 2" in a batch (0-based, as in the list)."""
    return "the prompt" if count == 1 else f"prompt {index}"
