"""IncrementalDetokenizer: streamed pieces never split a character and join to the final text; stop strings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minikv import LLM, LLMEngine, SamplingParams
from minikv.engine.detokenizer import IncrementalDetokenizer
from minikv.errors import InvalidRequestError
from minikv.models import load_tokenizer, resolve

TEXTS = ["héllo wörld", "emoji 👋🏽 and 世界, ünïcödé", "naïve café — “quotes” ½ €100", "plain ascii text\n\nnext"]


class Bytes:
    """A byte-level tokenizer: token i is byte i (multi-byte characters span tokens)."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def stream(detok: IncrementalDetokenizer, ids: list[int], step: int = 1) -> list[str]:
    pieces = []
    for i in range(0, len(ids), step):
        detok.push(ids[i:i + step])
        pieces.append(detok.take())
        if detok.stopped:
            break
    pieces.append(detok.take(finished=True))
    return pieces


@pytest.mark.parametrize("text", TEXTS)
def test_byte_tokens_never_split_a_character(text):
    pieces = stream(IncrementalDetokenizer(Bytes()), list(text.encode()))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return load_tokenizer(resolve("smollm2-135m"))


@pytest.mark.slow
@pytest.mark.parametrize("text", TEXTS)
def test_smollm2_tokens_stream_whole_characters(smollm2_tokenizer, text):
    tok = smollm2_tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    pieces = stream(IncrementalDetokenizer(tok), ids)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True) == text
    assert all("\ufffd" not in p for p in pieces)


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=0, max_size=40), stop=st.lists(st.text(min_size=1, max_size=4), max_size=3),
       step=st.integers(1, 4), include=st.booleans())
def test_pieces_are_a_prefix_of_the_final_text_and_stop_is_exact(text, stop, step, include):
    detok = IncrementalDetokenizer(Bytes(), stop, include_stop_str_in_output=include)
    pieces = stream(detok, list(text.encode()), step)
    out = "".join(pieces)
    assert out == detok.output_text
    if not any(s in text for s in stop):
        assert out == text and detok.stop_reason is None
        return
    # the text ends before the first occurrence of a stop string, and holds no whole stop string
    found = detok.stop_reason
    assert found in stop
    i = text.find(found)
    assert out == (text[:i + len(found)] if include else text[:i])
    assert not any(s in text[:i] for s in stop)


def test_holdback_keeps_a_possible_stop_unsent():
    detok = IncrementalDetokenizer(Bytes(), stop=["\n\n"])
    detok.push(list(b"line\n"))
    assert detok.take() == "line"  # the "\n" might begin "\n\n"
    detok.push(list(b"\n"))
    assert detok.stopped and detok.take() == "" and detok.output_text == "line"


@pytest.mark.parametrize("bad", [3, [""], ["ok", None], {"a": 1}])
def test_bad_stop_is_refused(bad):
    with pytest.raises(InvalidRequestError, match="stop"):
        SamplingParams(stop=bad)


def test_engine_stops_at_a_stop_string_and_frees_blocks():
    llm = LLM("tiny-llama", prefix_cache="radix", seed=0)
    prompt = "Once upon a time " * 4
    free = llm.generate(prompt, SamplingParams(max_tokens=24, temperature=0))[0]
    stop = free.text[6:9]
    cut = free.text[:free.text.index(stop)]
    out = llm.generate(prompt, SamplingParams(max_tokens=24, temperature=0, stop=[stop]))[0]
    assert out.text == cut and out.finish_reason == "stop" and out.stop_reason == stop
    assert len(out.token_ids) < len(free.token_ids)  # generation really ended there
    assert llm.cache_stats().num_used == 0
    kept = llm.generate(prompt, SamplingParams(max_tokens=24, temperature=0, stop=[stop],
                                               include_stop_str_in_output=True))[0]
    assert kept.text == cut + stop


def test_streamed_deltas_join_to_the_text():
    engine = LLMEngine("tiny-llama", seed=0)
    engine.add_request("a", "Tell me a story " * 3, SamplingParams(max_tokens=30, temperature=0, stop=["zz"]))
    pieces, final = [], None
    while engine.has_unfinished_requests():
        for out in engine.step():
            pieces.append(out.delta_text)
            assert out.text == "".join(pieces)
            final = out
    assert final.finished and "".join(pieces) == final.text
