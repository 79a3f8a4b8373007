"""Chapter 03 (prefix caching with block hashes): 3.1 chain block hashes, 3.2 longest cache hit, 3.3 ref-counted LRU block pool.

References: :func:`minikv.prefix.chain_block_hashes` (byte for byte),
:meth:`minikv.prefix.BlockHashCache.match` and the whole of
:class:`minikv.prefix.BlockHashCache` (differential checks over hypothesis-drawn
request streams, and the worked example of vLLM's prefix caching design
document). The final check of 3.3 plugs the learner's pool into
``LLM("tiny-llama", prefix_cache=factory)`` (``factory(num_blocks, block_size)``
builds a ``BlockPool``) and compares greedy tokens and cached-token counts with
``prefix_cache="hash"``.

3.2 and 3.3 call the learner's earlier pieces (``chain_block_hashes``,
``longest_cache_hit``) through their module. Where such a piece is not done
or not right, the check puts minikv's in its place first, so each exercise's
grade depends on its own code alone.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.errors import InvalidRequestError, KVCacheFull
from minikv.grade.compare import CheckFailed, expect_same_engine_runs, call, describe_exception, forall, one_line
from minikv.grade.memo import shared
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.kv.block_table import cdiv
from minikv.prefix import ROOT_HASH, BlockHashCache, max_cached_blocks
from minikv.prefix import chain_block_hashes as ref_chain
from minikv.prefix.hashing import encode_block

MODULE = "ch03_prefix_hashing"


def _short(tokens: Sequence[int], limit: int = 8) -> str:
    tokens = list(tokens)
    if len(tokens) <= limit:
        return str(tokens)
    return "[" + ", ".join(map(str, tokens[:limit])) + f", ... ({len(tokens)} tokens)]"


def _hex(h: Any) -> str:
    return h.hex()[:12] + "..." if isinstance(h, (bytes, bytearray)) else repr(h)


def reference_longest_cache_hit(cached: dict[bytes, int], token_ids: Sequence[int], block_size: int,
                                salt: str | None = None) -> list[int]:
    """What 3.2 asks for, written with minikv's pieces."""
    limit = max_cached_blocks(len(token_ids), block_size)
    hits = []
    for h in ref_chain(list(token_ids[: limit * block_size]), block_size, salt):
        if h not in cached:
            break
        hits.append(cached[h])
    return hits


# ---- using minikv's piece where the learner's earlier one is not ready ---------------------------------

_CHAIN_SAMPLES = [(list(range(10)), 4, None), (list(range(9)), 3, "s"), ([5, 6, 7, 8, 9], 1, None), ([], 2, None)]


def _chain_is_right(fn: Any) -> bool:
    try:
        return all(fn(list(t), bs, salt) == ref_chain(t, bs, salt) for t, bs, salt in _CHAIN_SAMPLES)
    except Exception:  # noqa: BLE001 - includes NotImplementedError: not written yet
        return False


def _longest_is_right(fn: Any) -> bool:
    tokens = list(range(100, 113))
    hashes = ref_chain(tokens, 3)
    cases = [({hashes[0]: 4, hashes[1]: 2, hashes[3]: 9}, tokens, 3, None),
             ({h: i for i, h in enumerate(hashes)}, tokens[:12], 3, None),
             ({h: i for i, h in enumerate(ref_chain(tokens, 3, "x"))}, tokens, 3, None)]
    try:
        return all(fn(dict(c), list(t), bs, s) == reference_longest_cache_hit(c, t, bs, s) for c, t, bs, s in cases)
    except Exception:  # noqa: BLE001
        return False


_HELPERS: dict[str, tuple[Callable[..., Any], Callable[[Any], bool]]] = {
    "chain_block_hashes": (ref_chain, _chain_is_right),
    "longest_cache_hit": (reference_longest_cache_hit, _longest_is_right),
}


def _borrow(learner: Learner, names: Sequence[str]) -> str:
    """Put minikv's version of each named helper into the learner's module where theirs is not ready.

    Returns a note for the PASS message ("" when the learner's own were used).
    """
    module = learner.module
    if module is None:
        return ""
    borrowed = []
    for name in names:
        reference, is_right = _HELPERS[name]
        mine = getattr(module, name, None)
        if mine is None or not is_right(mine):
            setattr(module, name, reference)
            borrowed.append(name)
    if not borrowed:
        return ""
    return f" (with minikv's {' and '.join(borrowed)}: yours {'is' if len(borrowed) == 1 else 'are'} not done yet)"


# ---- 3.1 chain block hashes ------------------------------------------------------------------------

ex31 = register(Exercise(
    "3.1", "chain block hashes", MODULE, ("chain_block_hashes",),
    hint="loop over the len(token_ids) // block_size full blocks; each hash is "
         "sha256(encode_block(parent, block tokens, extra keys)).digest(), the parent being ROOT_HASH for "
         "block 0 and the previous hash after that; block 0's extra keys are (('cache_salt', salt),) when a salt is given",
))


def _get_hashes(fn: Callable[..., Any], tokens: list[int], bs: int, salt: str | None = None) -> list[bytes]:
    args = f"chain_block_hashes({_short(tokens)}, block_size={bs}" + (f", salt={salt!r})" if salt is not None else ")")
    got = call(fn, list(tokens), bs, salt, context=args)
    if not isinstance(got, list):
        raise CheckFailed(one_line(f"{args} returned a {type(got).__name__}, expected a list of bytes"))
    for i, h in enumerate(got):
        if not isinstance(h, bytes):
            why = " (Python's hash()? it differs in every process; use hashlib.sha256(...).digest())" if isinstance(h, int) else ""
            raise CheckFailed(one_line(f"{args}: hash {i} is a {type(h).__name__}, expected 32 bytes{why}"))
    want = len(tokens) // bs
    if len(got) != want:
        why = (" (a trailing partial block gets no hash)" if len(got) == cdiv(len(tokens), bs) and len(tokens) % bs
               else " (one hash per full block)")
        raise CheckFailed(one_line(f"{args} returned {len(got)} hashes, expected {want}{why}"))
    return got


def _salt_everywhere(tokens: list[int], bs: int, salt: str) -> list[bytes]:
    parent, out = ROOT_HASH, []
    for i in range(len(tokens) // bs):
        parent = hashlib.sha256(encode_block(parent, tokens[i * bs:(i + 1) * bs], (("cache_salt", salt),))).digest()
        out.append(parent)
    return out


def _no_parent(tokens: list[int], bs: int, salt: str | None) -> list[bytes]:
    out = []
    for i in range(len(tokens) // bs):
        extra = (("cache_salt", salt),) if i == 0 and salt is not None else ()
        out.append(hashlib.sha256(encode_block(ROOT_HASH, tokens[i * bs:(i + 1) * bs], extra)).digest())
    return out


def _expect_reference_hashes(fn: Callable[..., Any], tokens: list[int], bs: int, salt: str | None) -> None:
    got = _get_hashes(fn, tokens, bs, salt)
    want = ref_chain(tokens, bs, salt)
    if got == want:
        return
    i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    args = f"chain_block_hashes({_short(tokens)}, block_size={bs}, salt={salt!r})"
    why = ""
    if salt is not None and got == _salt_everywhere(tokens, bs, salt):
        why = "; the salt went into every block's extra keys: put it in block 0's only (the chain carries it)"
    elif got == _no_parent(tokens, bs, salt):
        why = "; each block was hashed without its parent's hash"
    elif i == 0:
        why = "; block 0 is sha256(encode_block(ROOT_HASH, its tokens, extra keys)).digest()"
    raise CheckFailed(one_line(f"{args}: block {i}'s hash is {_hex(got[i])}, minikv's is {_hex(want[i])}{why}"))


@ex31.check("one hash of 32 bytes per full block; no hash for a partial block")
def _counts(learner: Learner) -> None:
    fn = learner.get("chain_block_hashes")
    for n, bs in ((40, 16), (32, 16), (15, 16), (0, 4), (7, 1)):
        hashes = _get_hashes(fn, list(range(n)), bs)
        for i, h in enumerate(hashes):
            if len(h) != 32:
                raise CheckFailed(f"chain_block_hashes(range({n}), {bs}): hash {i} has {len(h)} bytes, expected 32 (a sha256 digest)")


@ex31.check("each hash covers its parent: one changed token changes every later hash")
def _parent(learner: Learner) -> None:
    fn = learner.get("chain_block_hashes")
    base = list(range(1, 25))
    a = _get_hashes(fn, base, 4)
    for pos in (0, 9, 22):
        changed = base.copy()
        changed[pos] += 1000
        b = _get_hashes(fn, changed, 4)
        k = pos // 4
        for i in range(6):
            if i < k and a[i] != b[i]:
                raise CheckFailed(f"changing token {pos} (block {k}) changed block {i}'s hash, which comes before it; "
                                  "a block's hash covers only its own tokens and its parent's hash")
            if i >= k and a[i] == b[i]:
                what = "its own tokens changed" if i == k else f"block {k}, earlier in its prefix, changed"
                raise CheckFailed(f"changing token {pos} (block {k}) left block {i}'s hash the same, but {what}; "
                                  "hash each block together with its parent's hash")


@ex31.check("the salt changes every hash; salt=None is no salt")
def _salt(learner: Learner) -> None:
    fn = learner.get("chain_block_hashes")
    tokens = list(range(50, 62))
    plain, a, b = (_get_hashes(fn, tokens, 4, s) for s in (None, "alice", "bob"))
    default = call(fn, list(tokens), 4, context="chain_block_hashes(tokens, 4) without a salt argument")
    if default != plain:
        raise CheckFailed("chain_block_hashes(tokens, 4) and chain_block_hashes(tokens, 4, salt=None) differ; None means no salt")
    for i in range(3):
        for name, other in (("'alice'", a), ("'bob'", b)):
            if other[i] == plain[i]:
                raise CheckFailed(f"with salt={name}, block {i}'s hash equals the unsalted one; the salt must change "
                                  "every hash (put it in block 0's extra keys: the chain carries it)")
        if a[i] == b[i]:
            raise CheckFailed(f"salts 'alice' and 'bob' give block {i} the same hash; the salt must enter the hash")


@ex31.check("equal prefixes, equal hashes; the same input, the same hashes")
def _prefixes(learner: Learner) -> None:
    fn = learner.get("chain_block_hashes")
    x = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    y = x[:8] + [99, 98, 97, 96]
    hx, hy, hx2 = _get_hashes(fn, x, 4), _get_hashes(fn, y, 4), _get_hashes(fn, x, 4)
    if hx != hx2:
        raise CheckFailed("two calls with the same tokens gave different hashes; hash a fixed encoding (no randomness, no id())")
    if hx[:2] != hy[:2]:
        raise CheckFailed("two prompts sharing their first 8 tokens (2 blocks of 4) got different hashes for those blocks")
    if _get_hashes(fn, x[:8], 4) != hx[:2]:
        raise CheckFailed("the first 8 tokens alone hash differently from the first 2 blocks of a longer prompt; "
                          "a block's hash must not depend on the tokens after it")


@ex31.check("byte for byte as minikv.prefix.chain_block_hashes (random prompts, block sizes, salts)")
def _random(learner: Learner) -> None:
    fn = learner.get("chain_block_hashes")
    _expect_reference_hashes(fn, list(range(40)), 16, None)
    _expect_reference_hashes(fn, [3, 1, 4, 1, 5, 9, 2, 6, 5], 3, "tenant-7")

    @forall(st.lists(st.integers(0, 2**31 - 1), max_size=40), st.integers(1, 8),
            st.sampled_from([None, "", "a", "tenant-42", "ü"]), max_examples=50)
    def prop(tokens: list[int], bs: int, salt: str | None) -> None:
        _expect_reference_hashes(fn, tokens, bs, salt)

    prop()


# ---- 3.2 longest cache hit ---------------------------------------------------------------------------

ex32 = register(Exercise(
    "3.2", "longest cache hit", MODULE, ("longest_cache_hit",),
    hint="hash only the first (len(token_ids) - 1) // block_size blocks (the last token must be computed), "
         "walk their hashes from block 0, collect cached[h] and stop at the first hash that is not in cached",
))


def _expect_hit(fn: Callable[..., Any], cached: dict[bytes, int], tokens: list[int], bs: int,
                salt: str | None = None, want: list[int] | None = None, what: str = "") -> None:
    want = reference_longest_cache_hit(cached, tokens, bs, salt) if want is None else want
    args = (f"longest_cache_hit for a {len(tokens)}-token prompt (block_size={bs}" + (f", salt={salt!r}" if salt else "")
            + f"; {len(cached)} blocks cached{what})")
    got = call(fn, dict(cached), list(tokens), bs, salt, context=args)
    if isinstance(got, tuple):
        got = list(got)
    if got == want:
        return
    why = ""
    if isinstance(got, list):
        all_blocks = ref_chain(tokens, bs, salt)
        uncapped = []
        for h in all_blocks:
            if h not in cached:
                break
            uncapped.append(cached[h])
        holes = [cached[h] for h in all_blocks[: max_cached_blocks(len(tokens), bs)] if h in cached]
        if got == uncapped and len(uncapped) > len(want):
            why = (f"; that leaves no token to compute (the last token's logits give the first output token): "
                   f"at most (len - 1) // block_size = {max_cached_blocks(len(tokens), bs)} blocks may hit")
        elif got == holes:
            why = "; stop at the first block that is not cached: a block is only usable after its whole prefix"
        elif len(got) < len(want) and got == want[: len(got)]:
            why = f"; {len(want)} blocks are cached and allowed, you stopped after {len(got)}"
    raise CheckFailed(one_line(f"{args} returned {got!r}, expected {want!r}{why}"))


@ex32.check("a miss, a partial hit, a hit on blocks cached by two requests")
def _basic(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes"])
    fn = learner.get("longest_cache_hit")
    tokens = list(range(1, 51))  # 50 tokens: 6 blocks of 8 + 2
    hashes = ref_chain(tokens, 8)
    _expect_hit(fn, {}, tokens, 8, want=[], what=", an empty cache")
    _expect_hit(fn, {hashes[0]: 5, hashes[1]: 2}, tokens, 8, want=[5, 2])
    other = tokens[:16] + [200] * 16
    cached = {hashes[0]: 5, hashes[1]: 2, ref_chain(other, 8)[2]: 9, hashes[2]: 0, hashes[3]: 7}
    _expect_hit(fn, cached, tokens, 8, want=[5, 2, 0, 7], what=" by two requests")
    _expect_hit(fn, cached, other + [1], 8, want=[5, 2, 9])
    return "misses, partial and shared hits as expected" + note


@ex32.check("stops at the first uncached block (a later block needs its prefix)")
def _holes(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes"])
    fn = learner.get("longest_cache_hit")
    tokens = list(range(300, 341))
    hashes = ref_chain(tokens, 4)
    _expect_hit(fn, {hashes[0]: 1, hashes[1]: 2, hashes[3]: 3, hashes[4]: 4}, tokens, 4, want=[1, 2],
                what=", blocks 0, 1, 3, 4 of it")
    _expect_hit(fn, {h: i for i, h in enumerate(hashes) if i != 0}, tokens, 4, want=[],
                what=", all but block 0")
    return "stops at the first miss" + note


@ex32.check("the last-token rule: 48 tokens hit 2 blocks of 16, 49 tokens hit 3")
def _last_token(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes"])
    fn = learner.get("longest_cache_hit")
    tokens = list(range(1000, 1049))
    cached = {h: 10 + i for i, h in enumerate(ref_chain(tokens, 16))}
    _expect_hit(fn, cached, tokens[:48], 16, want=[10, 11], what=", all of it")
    _expect_hit(fn, cached, tokens[:49], 16, want=[10, 11, 12], what=", its 3 full blocks")
    _expect_hit(fn, cached, tokens[:16], 16, want=[], what=", all of it")
    _expect_hit(fn, cached, tokens[:17], 16, want=[10])
    _expect_hit(fn, cached, tokens[:1], 16, want=[])
    return "the last token is always computed" + note


@ex32.check("a salted prompt hits only blocks cached with its salt")
def _salted(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes"])
    fn = learner.get("longest_cache_hit")
    tokens = list(range(20, 33))
    plain = {h: i for i, h in enumerate(ref_chain(tokens, 4))}
    alice = {h: 10 + i for i, h in enumerate(ref_chain(tokens, 4, "alice"))}
    _expect_hit(fn, plain, tokens, 4, salt="alice", want=[], what=" without a salt")
    _expect_hit(fn, {**plain, **alice}, tokens, 4, salt="alice", want=[10, 11, 12], what=", with and without salt 'alice'")
    _expect_hit(fn, {**plain, **alice}, tokens, 4, want=[0, 1, 2], what=", with and without salt 'alice'")
    return "salts keep requests apart" + note


PREFIXES = ([], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 20, 21, 22], [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40])
SALTS = (None, "a")


def _prompts(min_size: int = 1) -> Any:
    """Prompts that share prefixes: one of PREFIXES plus a short random suffix."""
    return st.tuples(st.sampled_from(range(len(PREFIXES))), st.lists(st.integers(0, 5), min_size=min_size, max_size=7)
                     ).map(lambda p: PREFIXES[p[0]] + p[1]).filter(lambda t: len(t) >= min_size)


@ex32.check("random caches and prompts vs minikv's BlockHashCache.match")
def _random_hits(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes"])
    fn = learner.get("longest_cache_hit")

    @forall(st.integers(1, 5), st.lists(st.tuples(_prompts(), st.sampled_from(SALTS)), min_size=1, max_size=6),
            st.integers(0, 4), _prompts(), st.sampled_from(SALTS), max_examples=60)
    def prop(bs: int, inserted: list[tuple[list[int], str | None]], evict: int, prompt: list[int], salt: str | None) -> None:
        cache = BlockHashCache(num_blocks=64, block_size=bs)
        for tokens, s in inserted:
            table = cache.allocate(cdiv(len(tokens), bs))
            cache.insert(tokens, table, s)
            cache.release(table)
        cache.evict(evict)  # leaves holes in the cached chains
        cached = {cache.block_hash(b): b for b in range(cache.num_blocks) if cache.is_cached(b)}
        match = cache.match(prompt, salt)
        _expect_hit(fn, cached, prompt, bs, salt, want=list(match.block_ids))

    prop()
    return "agrees with minikv's BlockHashCache.match" + note


# ---- 3.3 ref-counted LRU block pool --------------------------------------------------------------------

ex33 = register(Exercise(
    "3.3", "ref-counted LRU block pool", MODULE, ("BlockPool",),
    hint="match: a hit block whose ref is 0 leaves free_blocks, then ref += 1; allocate pops from the head "
         "(free_blocks.popitem(last=False)) and drops a popped block's hash; release walks reversed(block_ids) "
         "and puts ref-0 blocks at the tail; evict only looks at blocks in free_blocks",
))


class _Trace:
    """Runs the same operations on the learner's pool and on minikv's BlockHashCache, comparing after each."""

    def __init__(self, cls: Any, num_blocks: int, block_size: int, label: str = "") -> None:
        self.desc = f"BlockPool(num_blocks={num_blocks}, block_size={block_size})"
        self.mine = call(cls, num_blocks, block_size, context=self.desc)
        self.ref = BlockHashCache(num_blocks, block_size)
        self.n, self.steps, self.label = num_blocks, [], label

    def where(self) -> str:
        last = self.steps[-1] if self.steps else "creating it"
        before = "; ".join(self.steps[-5:-1])
        return (f"after {self.label}step {len(self.steps)} ({last}) on {self.desc}"
                + (f" (earlier: {'...; ' if len(self.steps) > 5 else ''}{before})" if before else ""))

    def _call(self, name: str, *args: Any) -> Any:
        fn = getattr(self.mine, name, None)
        if fn is None:
            raise CheckFailed(f"your BlockPool has no `{name}` method; keep the stub's names")
        return call(fn, *args, context=f"{self.label}step {len(self.steps)} ({self.steps[-1]}) on {self.desc}")

    def _fail(self, text: str) -> None:
        raise CheckFailed(one_line(f"{text} {self.where()}"))

    def compare(self, held_cached_before: set[int] | None = None) -> None:
        mine, ref = self.mine, self.ref
        refs = [call(mine.ref_count, b, context="ref_count") for b in range(self.n)]
        want_refs = [ref.ref_count(b) for b in range(self.n)]
        cached = {b for b in range(self.n) if call(mine.is_cached, b, context="is_cached")}
        if held_cached_before:
            lost = sorted(b for b in held_cached_before if b not in cached and want_refs[b] > 0)
            if lost:
                self._fail(f"block {lost[0]} lost its hash while in use (ref {want_refs[lost[0]]}): "
                           "only blocks waiting in the free queue may be evicted,")
        for b in range(self.n):
            if refs[b] != want_refs[b]:
                self._fail(f"block {b} has ref count {refs[b]}, expected {want_refs[b]}")
        want_cached = {b for b in range(self.n) if ref.is_cached(b)}
        if cached != want_cached:
            extra, missing = sorted(cached - want_cached), sorted(want_cached - cached)
            text = "the cached blocks are " + str(sorted(cached)) + f", expected {sorted(want_cached)}"
            if extra:
                text += f" (block {extra[0]} should have lost its hash)"
            elif missing:
                text += f" (block {missing[0]} should still be cached)"
            self._fail(text)
        queue = list(call(mine.free_queue, context="free_queue()"))
        want = ref.free_queue()
        if queue != want:
            why = ""
            if sorted(queue) == sorted(want):
                why = " (same blocks, another order: released blocks join the tail, the table walked from its last block)"
            elif set(queue) > set(want):
                why = f" (block {sorted(set(queue) - set(want))[0]} is in use and must have left the free queue)"
            self._fail(f"the free queue is {queue}, expected {want}{why}")
        s, w = call(mine.stats, context="stats()"), ref.stats()
        for name in ("requests", "query_tokens", "hit_tokens", "evictions", "num_used", "num_evictable", "num_cached"):
            if getattr(s, name) != getattr(w, name):
                self._fail(f"stats().{name} is {getattr(s, name)}, expected {getattr(w, name)}")

    def held_cached(self) -> set[int]:
        return {b for b in range(self.n) if self.ref.ref_count(b) > 0 and self.ref.is_cached(b)}

    # operations -----------------------------------------------------------------------------------
    def match(self, tokens: list[int], salt: str | None = None, what: str = "") -> tuple[int, ...]:
        self.steps.append(f"match({what or _short(tokens)}{', salt=' + repr(salt) if salt else ''})")
        got = self._call("match", list(tokens), salt)
        want = self.ref.match(tokens, salt)
        ids = getattr(got, "block_ids", None)
        if ids is None:
            self._fail(f"match returned {type(got).__name__}, expected a Match(block_ids, num_cached_tokens)")
        if tuple(ids) != want.block_ids or getattr(got, "num_cached_tokens", None) != want.num_cached_tokens:
            self._fail(f"match returned blocks {tuple(ids)} ({getattr(got, 'num_cached_tokens', None)} tokens), "
                       f"expected {want.block_ids} ({want.num_cached_tokens} tokens)")
        self.compare()
        return want.block_ids

    def allocate(self, n: int) -> list[int] | None:
        self.steps.append(f"allocate({n})")
        held = self.held_cached()
        try:
            want = self.ref.allocate(n)
        except KVCacheFull:
            want = None
        try:
            got = self._call("allocate", n)
        except CheckFailed as exc:
            if not isinstance(exc.__cause__, KVCacheFull):
                raise
            got = None
        if want is None and got is not None:
            self._fail(f"allocate returned {got} but only {self.ref.num_allocatable} blocks are free or evictable: "
                       "raise KVCacheFull (and change nothing)")
        if want is not None and got is None:
            self._fail(f"allocate raised KVCacheFull, but {self.ref.num_allocatable + n} blocks were free or evictable")
        if got is not None and list(got) != want:
            self._fail(f"allocate returned {list(got)}, expected {want} (the head of the free queue, in order)")
        try:
            self.compare(held)
        except CheckFailed as exc:
            if want is not None:
                raise
            raise CheckFailed(f"allocate raised KVCacheFull but changed the pool (it must change nothing): {exc}") from None
        return want

    def insert(self, tokens: list[int], table: list[int], salt: str | None = None, what: str = "") -> None:
        self.steps.append(f"insert({what or _short(tokens)}, {table}{', salt=' + repr(salt) if salt else ''})")
        got = self._call("insert", list(tokens), list(table), salt)
        want = self.ref.insert(tokens, table, salt)
        if got != want:
            self._fail(f"insert returned {got!r}, expected {want} (blocks newly cached)")
        self.compare()

    def release(self, table: list[int], what: str = "") -> None:
        self.steps.append(f"release({what or table})")
        self._call("release", list(table))
        self.ref.release(table)
        self.compare()

    def evict(self, n: int) -> None:
        self.steps.append(f"evict({n})")
        held = self.held_cached()
        got = self._call("evict", n)
        want = self.ref.evict(n)
        if got != want:
            self._fail(f"evict returned {got!r}, expected {want} (evictable blocks forgotten)")
        self.compare(held)


@ex33.check("allocate takes the head of the free queue; KVCacheFull changes nothing")
def _allocate(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 6, 4)
    t.allocate(2)
    t.allocate(3)
    t.allocate(2)
    t.allocate(1)
    t.allocate(0)
    t.allocate(1)
    return "allocates LRU first, all or nothing" + note


@ex33.check("release walks a table from its last block; cached blocks keep their hash")
def _release(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 8, 2)
    tokens = [1, 2, 3, 4, 5, 6, 7]
    a = t.allocate(4)
    t.insert(tokens, a)
    b = t.allocate(2)
    t.release(a, "request A's table")
    t.insert([9, 9, 9, 9], b)
    t.release(b, "request B's table")
    return "releases tail first" + note


@ex33.check("vLLM design doc example (block size 4, 10 blocks), times 1 to 7")
def _vllm(learner: Learner) -> str:
    """The worked example of vLLM's docs/design/prefix_caching.md (see tests/test_prefix_vllm_golden.py)."""
    note = _borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 10, 4)
    t.label = "Time 1, "
    r0 = list(range(100, 115))
    t.match(r0, what="request 0, 15 tokens")
    b0 = t.allocate(4)
    t.insert(r0, b0, what="request 0")
    t.label = "Time 3, "
    r0 += [115, 116]
    b0 += t.allocate(1)
    t.insert(r0, b0, what="request 0 + 2 decoded")
    t.label = "Time 4, "
    r1 = r0[:10] + [200, 201, 202, 203]
    b1 = list(t.match(r1, what="request 1, 14 tokens sharing 10"))
    b1 += t.allocate(2)
    t.insert(r1, b1, what="request 1")
    t.label = "Time 5, "
    t.release(b0, f"request 0 finishes: {b0}")
    t.label = "Time 6, "
    t.release(b1, f"request 1 finishes: {b1}")
    t.label = "Time 7, "
    r2 = r0[:12] + list(range(300, 317))
    b2 = list(t.match(r2, what="request 2, 29 tokens sharing 12"))
    b2 += t.allocate(8 - len(b2))
    t.insert(r2, b2, what="request 2")
    return "every state of the document's example matches" + note


@ex33.check("a hit revives an evictable block; evict forgets LRU first, never a block in use")
def _revive_evict(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 6, 2)
    sys_prompt = [5, 6, 7, 8]
    a = t.allocate(3)
    t.insert(sys_prompt + [1, 1], a, what="A: system prompt + [1, 1]")
    t.release(a, "A finishes")
    hit = list(t.match(sys_prompt + [2, 2, 2], what="B: system prompt + [2, 2, 2]"))
    b = hit + t.allocate(2)
    t.allocate(1)  # must not take the revived blocks
    t.evict(1)
    t.insert(sys_prompt + [2, 2, 2], b, what="B")
    t.release(b, "B finishes")
    t.evict(2)
    t.evict(5)
    return "hits revive, eviction spares blocks in use" + note


@ex33.check("a repeated prompt hits all but its last block; the recomputed block stays an uncached duplicate")
def _duplicate(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    t = _Trace(learner.get("BlockPool"), 8, 4)
    prompt = list(range(70, 82))  # exactly 3 blocks
    a = t.allocate(3)
    t.insert(prompt, a, what="A: 12 tokens")
    b = list(t.match(prompt, what="B: the same 12 tokens")) + t.allocate(1)
    t.insert(prompt, b, what="B")
    t.release(a, "A finishes")
    t.release(b, "B finishes")
    t.match(prompt + [1], what="C: the same 12 tokens + 1")
    return "duplicates stay uncached" + note


def _stream(t: _Trace, rng: random.Random, bs: int, num_ops: int) -> None:
    """Drive ``t`` like an engine: requests start (often repeating or extending earlier prompts), decode, finish."""
    live: list[tuple[list[int], list[int], str | None, str]] = []
    seen: list[tuple[list[int], str | None]] = []
    for n in range(num_ops):
        kind = rng.choices(["start", "again", "decode", "finish", "evict"], [30, 15, 25, 25, 5])[0]
        if kind in ("start", "again"):
            if kind == "again" and seen:
                tokens, salt = seen[rng.randrange(len(seen))]
                tokens = tokens + [rng.randrange(6) for _ in range(rng.choice([0, 0, 1, bs]))]
            else:
                tokens = PREFIXES[rng.randrange(len(PREFIXES))] + [rng.randrange(6) for _ in range(rng.randint(1, 7))]
                salt = rng.choice(SALTS)
            name = f"r{n}"
            hit = list(t.match(tokens, salt, what=f"{name}: {_short(tokens)}"))
            new = t.allocate(cdiv(len(tokens), bs) - len(hit))
            if new is None:
                t.release(hit, f"{name}'s hit: it does not fit")
                continue
            table = hit + new
            t.insert(tokens, table, salt, what=name)
            live.append((list(tokens), table, salt, name))
            seen.append((list(tokens), salt))
        elif kind == "decode" and live:
            tokens, table, salt, name = live[rng.randrange(len(live))]
            more = [rng.randrange(6) for _ in range(rng.randint(1, 6))]
            need = cdiv(len(tokens) + len(more), bs) - len(table)
            if need > 0:
                new = t.allocate(need)
                if new is None:
                    continue
                table += new
            tokens += more
            seen.append((list(tokens), salt))
            t.insert(tokens, table, salt, what=f"{name} + {len(more)} decoded")
        elif kind == "finish" and live:
            tokens, table, salt, name = live.pop(rng.randrange(len(live)))
            t.release(table, f"{name} finishes: {table}")
        elif kind == "evict":
            t.evict(rng.randint(0, 3))


@ex33.check("random request streams with eviction vs minikv's BlockHashCache")
def _random_streams(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    cls = learner.get("BlockPool")

    @forall(st.integers(2, 4), st.integers(6, 16), st.integers(0, 2**32 - 1), max_examples=40)
    def prop(bs: int, num_blocks: int, seed: int) -> None:
        _stream(_Trace(cls, num_blocks, bs), random.Random(seed), bs, num_ops=40)

    prop()
    return "random streams agree with minikv's BlockHashCache" + note


# ---- 3.3's final check: the learner's pool serves the engine ---------------------------------------------

ENGINE_BLOCK_SIZE = 4
ENGINE_NUM_BLOCKS = 40
ENGINE_MAX_TOKENS = 6
_SYSTEM = [(7 * i + 3) % 300 + 10 for i in range(21)]  # a 21-token "system prompt" of tiny-llama token ids
ENGINE_ROUNDS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (tuple(_SYSTEM + [40, 41, 42]),),                                    # the first request: all misses
    (tuple(_SYSTEM + [50, 51]), tuple(_SYSTEM + [60, 61, 62, 63, 64])),  # share the system prompt
    (tuple(_SYSTEM + [40, 41, 42, 43, 44, 45, 46, 47, 48]),),            # a follow-up of the first
    tuple(tuple([200 + i] * 30) for i in range(3)),                      # strangers: the pool must evict
    (tuple(_SYSTEM + [50, 51, 52]),),                                    # what is left after eviction
)


def engine_run(prefix_cache: Any) -> list[list[tuple[tuple[int, ...], int]]]:
    """Greedy (tokens, num_cached_tokens) per request of ENGINE_ROUNDS, one ``generate`` call per round."""
    from minikv import LLM, SamplingParams

    llm = LLM("tiny-llama", device="cpu", prefix_cache=prefix_cache, block_size=ENGINE_BLOCK_SIZE,
              num_blocks=ENGINE_NUM_BLOCKS)
    params = SamplingParams(max_tokens=ENGINE_MAX_TOKENS, temperature=0.0)
    rounds = []
    for prompts in ENGINE_ROUNDS:
        outs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params)
        rounds.append([(tuple(o.token_ids), int(o.num_cached_tokens)) for o in outs])
    return rounds


@shared
def reference_engine_run() -> list[list[tuple[tuple[int, ...], int]]]:
    """``engine_run("hash")``, computed once per grading session."""
    return engine_run("hash")


@ex33.check('serves LLM("tiny-llama") as its prefix cache, like prefix_cache="hash"', final=True)
def _engine(learner: Learner) -> str:
    note = _borrow(learner, ["chain_block_hashes", "longest_cache_hit"])
    cls = learner.get("BlockPool")
    try:
        want = reference_engine_run()
    except InvalidRequestError as exc:
        raise CheckFailed(one_line(f"this minikv's engine cannot run prefix_cache='hash' yet ({exc}); update minikv")) from None
    summary = expect_same_engine_runs(lambda: engine_run(lambda num_blocks, block_size: cls(num_blocks, block_size)),
                                      want, "your BlockPool", "prefix_cache='hash'")
    return summary + note


__all__ = ["ENGINE_ROUNDS", "engine_run", "reference_engine_run", "reference_longest_cache_hit"]
