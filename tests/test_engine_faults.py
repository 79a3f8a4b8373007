"""An error anywhere in a step frees every block; the LLM stays usable and gives the tokens a fresh one gives.

Each test breaks one thing on the engine's road once (the k-th call of a
prefix cache's ``match`` / ``allocate`` / ``insert`` / ``release``, the pool's
copy-on-write, the model's forward, sampling), with every prefix cache. Then:
nothing is left allocated (read from the cache's own ledger, see
``pool_checks``), the next ``generate`` gives a fresh ``LLM``'s tokens, and
``reset_prefix_cache`` works. Also: one ledger (the pool keeps no count of its
own), and the admission leak of issue 9 (an error while admitting the 2nd of
4 prompts left the 1st one's blocks held for good).
"""

from __future__ import annotations

import functools
import itertools

import pytest

import minikv.engine.model_runner as model_runner
from minikv import LLM, SamplingParams
from minikv.engine.block_manager import BlockManager
from pool_checks import assert_nothing_allocated

NAME = "tiny-llama"
BLOCK_SIZE, NUM_BLOCKS = 4, 96
CACHES = {"none": ("none", {}), "hash": ("hash", {}), "radix": ("radix", {}), "radix-p1": ("radix", {"page_size": 1})}
PARAMS = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)


class Injected(Exception):
    """The error a test injects."""


def shared_prompts() -> list[dict]:
    """4 prompts on one 18-token prefix (not block-aligned, so the token-granular radix cache copies a block)."""
    prefix = [(5 * i + 2) % 200 for i in range(18)]
    return [{"prompt_token_ids": prefix + [210 + i, 3 + i]} for i in range(4)]


def distinct_prompts() -> list[dict]:
    """4 prompts that share nothing, so one step admits all four."""
    return [{"prompt_token_ids": [(11 * i + 7 * j) % 200 + 1 for j in range(9 + i)]} for i in range(4)]


def make_llm(cache: str) -> LLM:
    kind, opts = CACHES[cache]
    return LLM(NAME, device="cpu", prefix_cache=kind, prefix_cache_options=opts, block_size=BLOCK_SIZE,
               num_blocks=NUM_BLOCKS)


@functools.lru_cache(maxsize=None)
def fresh_tokens(cache: str, which: str) -> tuple[tuple[int, ...], ...]:
    prompts = shared_prompts() if which == "shared" else distinct_prompts()
    return tuple(tuple(o.token_ids) for o in make_llm(cache).generate(prompts, PARAMS))


def fail_on_call(monkeypatch, obj: object, name: str, k: int, exc: BaseException) -> list[int]:
    """Make ``obj.name`` raise ``exc`` on its k-th call (from 0), and only then; returns the call counter."""
    real, calls = getattr(obj, name), [0]

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k + 1:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, flaky)
    return calls


def check_recovers(llm: LLM, cache: str, which: str) -> None:
    """Nothing allocated; the next generate gives a fresh LLM's tokens; reset works; nothing allocated again."""
    assert_nothing_allocated(llm, "after the error")
    prompts = shared_prompts() if which == "shared" else distinct_prompts()
    want = [list(t) for t in fresh_tokens(cache, which)]
    assert [o.token_ids for o in llm.generate(prompts, PARAMS)] == want, "the next generate differs from a fresh LLM's"
    assert_nothing_allocated(llm)
    llm.reset_prefix_cache()
    assert [o.token_ids for o in llm.generate(prompts, PARAMS)] == want
    assert_nothing_allocated(llm)


# (where, k): the k-th call of the cache's method breaks; "copy" is the pool's copy-on-write (radix-p1 only)
CACHE_FAULTS = [("match", 0), ("match", 2), ("allocate", 1), ("allocate", 3), ("insert", 0), ("insert", 2),
                ("release", 0), ("release", 2)]


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize(("method", "k"), CACHE_FAULTS)
def test_a_failing_prefix_cache_call_frees_everything(monkeypatch, cache: str, method: str, k: int) -> None:
    llm = make_llm(cache)
    calls = fail_on_call(monkeypatch, llm.cache, method, k, Injected(f"{method} #{k}"))
    with pytest.raises(Injected):
        llm.generate(shared_prompts(), PARAMS)
    assert calls[0] > k
    monkeypatch.undo()
    check_recovers(llm, cache, "shared")


def test_a_failing_copy_on_write_releases_what_allocate_took(monkeypatch) -> None:
    llm = make_llm("radix-p1")
    calls = fail_on_call(monkeypatch, llm.kv_pool, "copy_block", 0, Injected("copy"))
    with pytest.raises(Injected):
        llm.generate(shared_prompts(), PARAMS)
    assert calls[0] == 1, "the radix cache at page_size=1 should have asked for a copy"
    monkeypatch.undo()
    check_recovers(llm, "radix-p1", "shared")


def test_block_manager_allocate_is_all_or_nothing(monkeypatch) -> None:
    """A copy that fails inside allocate releases the hit and the fresh blocks before the error leaves."""
    llm = make_llm("radix-p1")
    prompts = shared_prompts()
    llm.generate(prompts[0], PARAMS)  # cache the prefix
    manager = llm.block_manager
    seq = llm.make_sequence(prompts[1], PARAMS)
    fail_on_call(monkeypatch, llm.kv_pool, "copy_block", 0, Injected("copy"))
    with pytest.raises(Injected):
        manager.allocate(seq)
    assert seq.block_table is None and not manager.holders
    assert_nothing_allocated(llm, "after a failed allocate")


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("k", [0, 1, 4])  # the prefill, the second forward, a later decode step
def test_a_failing_model_forward_frees_everything(monkeypatch, cache: str, k: int) -> None:
    llm = make_llm(cache)
    fail_on_call(monkeypatch, llm.model, "forward", k, Injected(f"forward #{k}"))
    with pytest.raises(Injected):
        llm.generate(shared_prompts(), PARAMS)
    monkeypatch.undo()
    check_recovers(llm, cache, "shared")


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("k", [0, 3])
def test_a_failing_sampler_frees_everything(monkeypatch, cache: str, k: int) -> None:
    llm = make_llm(cache)
    fail_on_call(monkeypatch, model_runner, "sample", k, Injected(f"sample #{k}"))
    with pytest.raises(Injected):
        llm.generate(shared_prompts(), PARAMS)
    monkeypatch.undo()
    check_recovers(llm, cache, "shared")


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("exc", [KeyboardInterrupt(), Injected("match")], ids=["interrupt", "error"])
def test_an_error_admitting_the_second_of_four_prompts_leaks_nothing(monkeypatch, cache: str,
                                                                   exc: BaseException) -> None:
    """Issue 9's leak: the 1st prompt is admitted (holds blocks) when the 2nd one's ``match`` raises."""
    llm = make_llm(cache)
    fail_on_call(monkeypatch, llm.cache, "match", 1, exc)
    with pytest.raises(type(exc)):
        llm.generate(distinct_prompts(), PARAMS)
    monkeypatch.undo()
    check_recovers(llm, cache, "distinct")


@pytest.mark.parametrize("cache", CACHES)
def test_one_ledger_counts_what_the_running_sequences_hold(monkeypatch, cache: str) -> None:
    """Mid-generation the cache's stats count exactly the blocks the sequences hold; the pool keeps no count."""
    llm = make_llm(cache)
    seen = []
    real = BlockManager.make_room

    def spy(self, seq, *args):
        real(self, seq, *args)
        stats = llm.cache.stats()
        second = getattr(llm.kv_pool, "allocator", None)
        assert second is None, (f"a second ledger: kv_pool.allocator says {second.num_used} blocks used, "
                                f"the prefix cache {stats.num_used}")
        held = self.held_blocks()
        seen.append((stats.num_used, stats.num_evictable, stats.num_free, len(held)))

    monkeypatch.setattr(BlockManager, "make_room", spy)
    llm.generate(distinct_prompts(), PARAMS)
    assert seen and all(used == held > 0 for used, _, _, held in seen), seen
    assert all(used + evictable + free == NUM_BLOCKS for used, evictable, free, _ in seen)
    assert_nothing_allocated(llm)


def test_a_failing_release_is_retried_on_abort(monkeypatch) -> None:
    """``free`` keeps a sequence as a holder when ``release`` raises, so the abort gives its blocks back."""
    llm = make_llm("hash")
    calls = fail_on_call(monkeypatch, llm.cache, "release", 0, Injected("release"))
    with pytest.raises(Injected):
        llm.generate(distinct_prompts()[:1], PARAMS)
    assert calls[0] == 2, "release should have been called again by the abort"
    assert_nothing_allocated(llm)


def test_contiguous_rows_are_freed_after_an_error(monkeypatch) -> None:
    llm = LLM(NAME, device="cpu", kv_layout="contiguous")
    counter = itertools.count()
    real = model_runner.ModelRunner.run

    def flaky(self, seqs):
        rows = [s.kv_row for s, _ in seqs]
        assert None not in rows and len(set(rows)) == len(rows), f"rows {rows}"
        if next(counter) == 2:
            raise Injected("run")
        return real(self, seqs)

    monkeypatch.setattr(model_runner.ModelRunner, "run", flaky)
    prompts = distinct_prompts()
    with pytest.raises(Injected):
        llm.generate(prompts, PARAMS)
    monkeypatch.undo()
    assert [o.token_ids for o in llm.generate(prompts, PARAMS)] == [list(t) for t in fresh_tokens("none", "distinct")]


@pytest.mark.parametrize("together", [True, False], ids=["one-call", "two-calls"])
def test_a_partial_hit_that_pins_one_block_more_still_gets_admitted(together: bool) -> None:
    """Radix at page_size=1: a hit ending inside a block pins its source on top of the need.

    Here the second prompt needs the whole 3-block pool; its 1-token partial hit on the first one's
    cached block would pin a 4th. The engine drops the evictable prefix and admits it (it used to
    raise KVCacheFull, though the request fits the pool).
    """
    llm = LLM(NAME, device="cpu", prefix_cache="radix", prefix_cache_options={"page_size": 1}, block_size=2,
              num_blocks=3)
    prompts = [{"prompt_token_ids": [1]}, {"prompt_token_ids": [1, 1]}]
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    want = [o.token_ids for o in LLM(NAME, device="cpu", block_size=2, num_blocks=3).generate(prompts, params)]
    got = llm.generate(prompts, params) if together else [llm.generate(p, params)[0] for p in prompts]
    assert [o.token_ids for o in got] == want
    assert_nothing_allocated(llm)


def test_a_partial_hit_that_does_not_fit_yet_waits_for_the_running_ones(monkeypatch) -> None:
    """Same pin, with another sequence running: the waves scheduler keeps the new one waiting instead of failing."""
    llm = LLM(NAME, device="cpu", prefix_cache="radix", prefix_cache_options={"page_size": 1}, block_size=2,
              num_blocks=5, scheduler="waves")
    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    llm.generate({"prompt_token_ids": [1]}, params)  # caches a block holding token 1 (a partial page)
    prompts = [{"prompt_token_ids": [5, 5, 5]}, {"prompt_token_ids": [1, 1]}]
    params = [params, SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)]
    waits = []
    real = BlockManager.allocate

    def spy(self, seq):
        try:
            real(self, seq)
        except Exception as e:
            waits.append((seq.prompt_token_ids, type(e).__name__, sorted(self.holders)))
            raise

    monkeypatch.setattr(BlockManager, "allocate", spy)
    got = llm.generate(prompts, params)
    assert waits == [([1, 1], "KVCacheFull", [got[0].request_id])], "the 2nd prompt should have waited once"
    want = LLM(NAME, device="cpu", block_size=2, num_blocks=5).generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert got[1].num_cached_tokens == 1
    assert_nothing_allocated(llm)
