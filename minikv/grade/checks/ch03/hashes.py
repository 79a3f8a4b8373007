"""Exercises 3.1 chain block hashes and 3.2 longest cache hit, and :func:`borrow`, which puts minikv's
version in place of a learner's earlier piece that is not done (3.2 and 3.3 call them by name)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.grade.compare import CheckFailed, call, forall, one_line, short
from minikv.grade.lend import lend
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.kv.block_table import cdiv
from minikv.prefix import ROOT_HASH, BlockHashCache, max_cached_blocks
from minikv.prefix import chain_block_hashes as ref_chain
from minikv.prefix.hashing import encode_block

MODULE = "ch03_prefix_hashing"


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
    return all(fn(list(t), bs, salt) == ref_chain(t, bs, salt) for t, bs, salt in _CHAIN_SAMPLES)


def _longest_is_right(fn: Any) -> bool:
    tokens = list(range(100, 113))
    hashes = ref_chain(tokens, 3)
    cases = [({hashes[0]: 4, hashes[1]: 2, hashes[3]: 9}, tokens, 3, None),
             ({h: i for i, h in enumerate(hashes)}, tokens[:12], 3, None),
             ({h: i for i, h in enumerate(ref_chain(tokens, 3, "x"))}, tokens, 3, None)]
    return all(fn(dict(c), list(t), bs, s) == reference_longest_cache_hit(c, t, bs, s) for c, t, bs, s in cases)


_REFERENCE = {"chain_block_hashes": ref_chain, "longest_cache_hit": reference_longest_cache_hit}
_IS_RIGHT = {"chain_block_hashes": _chain_is_right, "longest_cache_hit": _longest_is_right}


def borrow(learner: Learner, names: Sequence[str]) -> str:
    """Put minikv's version of each named helper into the learner's module where theirs is not ready;
    returns a note for the PASS message ("" when the learner's own were used)."""
    return lend(learner, names, _REFERENCE, lambda name, fn: _IS_RIGHT[name](fn))[1]


# ---- 3.1 chain block hashes ------------------------------------------------------------------------

ex31 = register(Exercise(
    "3.1", "chain block hashes", MODULE, ("chain_block_hashes",),
    hint="loop over the len(token_ids) // block_size full blocks; each hash is "
         "sha256(encode_block(parent, block tokens, extra keys)).digest(), the parent being ROOT_HASH for "
         "block 0 and the previous hash after that; block 0's extra keys are (('cache_salt', salt),) when a salt is given",
))


def _get_hashes(fn: Callable[..., Any], tokens: list[int], bs: int, salt: str | None = None) -> list[bytes]:
    args = f"chain_block_hashes({short(tokens)}, block_size={bs}" + (f", salt={salt!r})" if salt is not None else ")")
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


def _mistaken_chain(tokens: list[int], bs: int, salt: str | None, salt_all: bool = False,
                    chained: bool = True) -> list[bytes]:
    """The chain with one known mistake: the salt in every block's extra keys, or each block hashed without its parent."""
    parent, out = ROOT_HASH, []
    for i in range(len(tokens) // bs):
        extra = (("cache_salt", salt),) if salt is not None and (i == 0 or salt_all) else ()
        parent = hashlib.sha256(encode_block(parent if chained else ROOT_HASH, tokens[i * bs:(i + 1) * bs], extra)).digest()
        out.append(parent)
    return out


def _expect_reference_hashes(fn: Callable[..., Any], tokens: list[int], bs: int, salt: str | None) -> None:
    got = _get_hashes(fn, tokens, bs, salt)
    want = ref_chain(tokens, bs, salt)
    if got == want:
        return
    i = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    args = f"chain_block_hashes({short(tokens)}, block_size={bs}, salt={salt!r})"
    why = ""
    if salt is not None and got == _mistaken_chain(tokens, bs, salt, salt_all=True):
        why = "; the salt went into every block's extra keys: put it in block 0's only (the chain carries it)"
    elif got == _mistaken_chain(tokens, bs, salt, chained=False):
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
    note = borrow(learner, ["chain_block_hashes"])
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
    note = borrow(learner, ["chain_block_hashes"])
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
    note = borrow(learner, ["chain_block_hashes"])
    fn = learner.get("longest_cache_hit")
    tokens = list(range(1000, 1049))
    cached = {h: 10 + i for i, h in enumerate(ref_chain(tokens, 16))}
    for n, want, what in ((48, [10, 11], ", all of it"), (49, [10, 11, 12], ", its 3 full blocks"),
                          (16, [], ", all of it"), (17, [10], ""), (1, [], "")):
        _expect_hit(fn, cached, tokens[:n], 16, want=want, what=what)
    return "the last token is always computed" + note


@ex32.check("a salted prompt hits only blocks cached with its salt")
def _salted(learner: Learner) -> str:
    note = borrow(learner, ["chain_block_hashes"])
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
    note = borrow(learner, ["chain_block_hashes"])
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
