"""Exercise 8.2, salted block hashes with the public blocks shared: the learner's ``tenant_block_hashes``
against a reference built on :mod:`minikv.prefix.hashing` (``encode_block``, ``ROOT_HASH``, ``SALT_KEY``),
which with ``public_blocks=0`` is :func:`minikv.prefix.chain_block_hashes` itself (vLLM's ``cache_salt``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from minikv.grade.checks.ch08.attack import MODULE
from minikv.grade.compare import CheckFailed, call, forall, looks_like, one_line, short
from minikv.grade.registry import Exercise, register
from minikv.grade.runner import Learner
from minikv.prefix import chain_block_hashes
from minikv.prefix.hashing import ROOT_HASH, SALT_KEY, encode_block

ex82 = register(Exercise(
    "8.2", "salted block hashes, public blocks shared", MODULE, ("tenant_block_hashes",),
    hint="chapter 03's chain (parent = ROOT_HASH, then each block's hash), with extra keys "
         "(('cache_salt', salt),) on block i == public_blocks only (when salt is not None) and () on every other "
         "block: the chain carries the salt into every later hash",
))


def salted_from(tokens: Sequence[int], block_size: int, salt: str | None, salted: set[int]) -> list[bytes]:
    """The chain with the salt in the extra keys of the blocks in ``salted`` (the reference and its mistakes)."""
    out, parent = [], ROOT_HASH
    for i in range(len(tokens) // block_size):
        extra = ((SALT_KEY, salt),) if salt is not None and i in salted else ()
        parent = hashlib.sha256(encode_block(parent, list(tokens[i * block_size : (i + 1) * block_size]),
                                             extra)).digest()
        out.append(parent)
    return out


def reference(tokens: Sequence[int], block_size: int, salt: str | None, public_blocks: int) -> list[bytes]:
    want = salted_from(tokens, block_size, salt, {public_blocks})
    if public_blocks == 0:
        assert want == chain_block_hashes(list(tokens), block_size, salt), "the reference left minikv's chain"
    return want


def expect_hashes(fn: Any, tokens: Sequence[int], block_size: int, salt: str | None, public_blocks: int) -> None:
    desc = (f"tenant_block_hashes({short(list(tokens), 6)} ({len(tokens)} tokens), block_size={block_size}, "
            f"salt={salt!r}, public_blocks={public_blocks})")
    got = call(fn, list(tokens), block_size, salt, public_blocks, context=desc)
    want = reference(tokens, block_size, salt, public_blocks)
    if not isinstance(got, list) or len(got) != len(want):
        n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
        raise CheckFailed(one_line(f"{desc} gave {n} hashes, expected a list of {len(want)} (one per full block)"))
    if got == want:
        return
    first = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    n = len(want)
    if salt is not None and got == salted_from(tokens, block_size, salt, set()):
        raise CheckFailed(one_line(f"{desc}: the hashes equal the unsalted ones, so every tenant shares every block "
                                   f"(the leak stays open); put the salt in block {public_blocks}'s extra keys"))
    hint = looks_like(got, [
        (f"the salt on every block but block {public_blocks}, the first private one: its hash is the same for "
         "every tenant, so its tokens still leak (salt it; the chain carries the salt on)",
         lambda: salted_from(tokens, block_size, salt, set(range(public_blocks + 1, n)))),
        ("the salt on every block after the public ones: the salt must enter only block public_blocks "
         "(the chain carries it on)", lambda: salted_from(tokens, block_size, salt, set(range(public_blocks, n)))),
        ("the salt on block 0 whatever public_blocks says: the public blocks then differ across tenants and "
         "nobody shares the published prompt", lambda: salted_from(tokens, block_size, salt, {0})),
        ("the salt on every block", lambda: salted_from(tokens, block_size, salt, set(range(n)))),
    ])
    raise CheckFailed(one_line(f"{desc}: hash {first} differs from the expected one (the first {first} agree){hint}"))


@ex82.check("the docstring's example")
def _example(learner: Learner) -> None:
    expect_hashes(learner.get("tenant_block_hashes"), list(range(48)), 16, "alice", 1)


@ex82.check("public_blocks=0 is the salt in the first block (minikv.prefix.chain_block_hashes)")
def _vllm_salt(learner: Learner) -> str:
    fn = learner.get("tenant_block_hashes")
    for tokens, bs, salt in [(list(range(40)), 16, "t1"), (list(range(7, 31)), 4, "tenant-b"), (list(range(9)), 4, None)]:
        expect_hashes(fn, tokens, bs, salt, 0)
    return "the same hashes as minikv's cache_salt chain"


@ex82.check("two tenants share the public blocks and nothing after them")
def _tenants(learner: Learner) -> str:
    fn = learner.get("tenant_block_hashes")
    tokens = [5, 9, 2, 7, 1, 1, 3, 8, 6, 4, 2, 0, 9, 9]
    for p in (1, 2, 3, 5):
        expect_hashes(fn, tokens, 4, "alice", p)
        expect_hashes(fn, tokens, 4, "bob", p)
        expect_hashes(fn, tokens, 4, None, p)
    a, b = fn(tokens, 4, "alice", 2), fn(tokens, 4, "bob", 2)
    shared = sum(x == y for x, y in zip(a, b))
    if shared != 2:
        raise CheckFailed(f"alice and bob share {shared} of {len(a)} block hashes with public_blocks=2, expected 2")
    return "the first public_blocks hashes equal across tenants, the rest differ"


@ex82.check("random prompts, salts and public parts, vs the reference on minikv.prefix.hashing")
def _random(learner: Learner) -> None:
    fn = learner.get("tenant_block_hashes")

    @forall(st.lists(st.integers(0, 5000), max_size=40), st.integers(1, 6),
            st.one_of(st.none(), st.sampled_from(["a", "b", "tenant 7", ""])), st.integers(0, 8), max_examples=60)
    def prop(tokens: list[int], bs: int, salt: str | None, p: int) -> None:
        expect_hashes(fn, tokens, bs, salt, p)

    prop()
