"""The OpenAI request bodies the server accepts, checked, and turned into :class:`~minikv.SamplingParams`.

Fields follow OpenAI's API (and vLLM's extras ``cache_salt``, ``top_k``,
``ignore_eos``). Types are strict: ``"max_tokens": "16"`` is refused rather
than guessed at. Fields that would change what comes back but that minikv
does not do (``n`` > 1, ``logprobs``, ``echo``, penalties, tools...) are
refused with a message that names them; fields that change nothing
(``user``, ``stream_options`` without a stream...) are accepted. Every
refusal becomes :class:`~minikv.errors.InvalidRequestError` (HTTP 400).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from minikv.errors import InvalidRequestError
from minikv.sampling import SamplingParams

Number = Union[StrictInt, float]


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class _Common(BaseModel):
    """What completions and chat share."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    n: StrictInt = 1
    ignore_eos: StrictBool = False
    cache_salt: StrictStr | None = None
    include_stop_str_in_output: StrictBool = False
    user: StrictStr | None = None

    # field -> the value that means "not used"; anything else is refused
    UNSUPPORTED: ClassVar[dict[str, tuple[Any, ...]]] = {
        "best_of": (None, 1), "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False),
        "suffix": (None, ""), "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0),
        "repetition_penalty": (None, 1, 1.0), "logit_bias": (None, {}), "tools": (None, []),
        "tool_choice": (None, "none", "auto"), "functions": (None, []), "response_format": (None, {"type": "text"}),
        "prompt_logprobs": (None, 0),
    }

    def check_supported(self) -> None:
        if self.n != 1:
            raise InvalidRequestError(f"n must be 1 (got {self.n}): minikv returns one choice per request; "
                                      "send several requests instead")
        extra = self.model_extra or {}
        for name, allowed in self.UNSUPPORTED.items():
            if name in extra and extra[name] not in allowed:
                raise InvalidRequestError(f"{name}={extra[name]!r} is not supported by minikv; leave it out")

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        """The request as :class:`SamplingParams` (OpenAI's defaults: temperature 1, top_p 1)."""
        self.check_supported()
        return SamplingParams(
            max_tokens=max_tokens, temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p, top_k=-1 if self.top_k is None else self.top_k,
            seed=self.seed, stop=self.stop, ignore_eos=self.ignore_eos, cache_salt=self.cache_salt,
            include_stop_str_in_output=self.include_stop_str_in_output)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    """``POST /v1/completions``: one prompt, text or token ids (a list of one of them is accepted too)."""

    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]
    max_tokens: StrictInt | None = 16

    def prompt_input(self) -> str | dict[str, list[int]]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise InvalidRequestError(f"prompt holds {len(p)} prompts; minikv takes one prompt per request "
                                          "(send one request each)")
            p = p[0]
        if isinstance(p, list):
            if not p:
                raise InvalidRequestError("prompt is an empty list; give text or a non-empty list of token ids")
            return {"prompt_token_ids": list(p)}
        return p


class ContentPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: StrictStr | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``: messages rendered with the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def describe_validation_error(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A pydantic/FastAPI validation error as one sentence and the field it is about."""
    if not errors:
        return "the request body is not valid", None
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "the request body is not valid JSON; send a JSON object with Content-Type: application/json", None
    if kind == "missing":
        return f"the field {param!r} is required", param
    if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"the request body must be a JSON object, got {first.get('input')!r:.80}", None
    got = first.get("input")
    return f"{param}: {first.get('msg', 'is not valid')} (got {got!r:.80})", param
