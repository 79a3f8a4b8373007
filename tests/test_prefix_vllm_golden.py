"""Golden test: the worked examples of vLLM's prefix caching design document.

Source: vLLM, "Automatic Prefix Caching", ``docs/design/prefix_caching.md``
in github.com/vllm-project/vllm (older copies: ``docs/source/design/v1/
prefix_caching.md``), section "Example" (block size 4, 10 blocks) and the
"Duplicated blocks" example. The expected values below come from the
document's prose; where it states a state only in a figure, the value is
derived from the stated rules and cross-checked against a later stated state
(noted per line). Time 2 has no prose in the document (request 0 decodes one
token), so it is folded into Time 3.

Token ids are ours (the document names none); the document fixes only which
tokens are shared between requests.
"""

from __future__ import annotations

from minikv.prefix import BlockHashCache

BS = 4


def test_vllm_design_doc_example() -> None:
    cache = BlockHashCache(num_blocks=10, block_size=BS)

    # Time 1: empty cache; request 0 gets 4 blocks, 3 full (cached), the 4th holds 3 of 4 tokens.
    r0 = list(range(100, 115))  # 15 prompt tokens
    m0 = cache.match(r0)
    assert (m0.block_ids, m0.num_cached_tokens) == ((), 0)
    blocks0 = cache.allocate(4)
    assert blocks0 == [0, 1, 2, 3]
    assert cache.insert(r0, blocks0) == 3
    assert [b for b in range(10) if cache.is_cached(b)] == [0, 1, 2]
    assert cache.free_queue() == [4, 5, 6, 7, 8, 9]

    # Time 3: request 0 fills block 3 (cached) and asks for a new block: block 4.
    r0 += [115, 116]  # two decoded tokens: the 16th fills block 3, the 17th needs a block
    blocks0 += cache.allocate(1)
    assert blocks0 == [0, 1, 2, 3, 4]
    assert cache.insert(r0, blocks0) == 1
    assert [b for b in range(10) if cache.is_cached(b)] == [0, 1, 2, 3]
    assert cache.free_queue() == [5, 6, 7, 8, 9]

    # Time 4: request 1, 14 prompt tokens, the first 10 as request 0's: only the first
    # 2 blocks (8 tokens) hit, the 3rd block matches only 2 of 4 tokens.
    r1 = r0[:10] + [200, 201, 202, 203]
    m1 = cache.match(r1)
    assert (m1.block_ids, m1.num_cached_tokens) == ((0, 1), 8)
    blocks1 = list(m1.block_ids) + cache.allocate(2)
    # Blocks 5 and 6: derived (head of the queue), confirmed by the queue the document gives at Time 6.
    assert blocks1 == [0, 1, 5, 6]
    assert cache.insert(r1, blocks1) == 1  # block 5 (tokens 8..11 of request 1) is full
    assert (cache.ref_count(0), cache.ref_count(1)) == (2, 2)
    assert cache.free_queue() == [7, 8, 9]

    # Time 5: request 0 finishes. Blocks 2, 3, 4 join the free queue in reverse order
    # (2 and 3 stay cached); 0 and 1 do not, request 1 still uses them.
    cache.release(blocks0)
    assert cache.free_queue() == [7, 8, 9, 4, 3, 2]
    assert (cache.is_cached(2), cache.is_cached(3), cache.is_cached(4)) == (True, True, False)
    assert (cache.ref_count(0), cache.ref_count(1)) == (1, 1)

    # Time 6: request 1 finishes; the document gives the queue as 7-8-9-4-3-2-6-5-1-0.
    cache.release(blocks1)
    assert cache.free_queue() == [7, 8, 9, 4, 3, 2, 6, 5, 1, 0]
    assert cache.stats().num_used == 0

    # Time 7: request 2, 29 prompt tokens, the first 12 as request 0's. The hits 0, 1, 2
    # leave the queue first (7-8-9-4-3-6-5); then 7, 8, 9, 4, 3 are allocated, 3 evicted.
    r2 = r0[:12] + list(range(300, 317))
    assert len(r2) == 29
    evictions_before = cache.stats().evictions
    m2 = cache.match(r2)
    assert (m2.block_ids, m2.num_cached_tokens) == ((0, 1, 2), 12)
    assert cache.free_queue() == [7, 8, 9, 4, 3, 6, 5]
    new2 = cache.allocate(8 - 3)
    assert new2 == [7, 8, 9, 4, 3]
    assert cache.stats().evictions - evictions_before == 1  # block 3 was cached; 7, 8, 9, 4 were not
    assert not cache.is_cached(3)
    assert cache.free_queue() == [6, 5]
    assert cache.is_cached(5)  # request 1's third block is still there, evictable
    blocks2 = list(m2.block_ids) + new2
    assert cache.insert(r2, blocks2) == 4  # 7 full blocks: 0, 1, 2 already cached; 7, 8, 9, 4 new


def test_vllm_design_doc_duplicated_blocks() -> None:
    """The "Duplicated blocks" example: block size 4, prompt ABCDEF, output GHI, sent twice.

    The document's v1 keeps block 3 cached beside block 1 under the same
    hash ("Cache Blocks: 0, 1, 3"); minikv leaves the duplicate uncached
    (the brief's choice), which gives the same hits: the hash maps to block 1.
    """
    A, B, C, D, E, F, G, H, I = range(1, 10)
    cache = BlockHashCache(num_blocks=10, block_size=BS)

    seq1 = [A, B, C, D, E, F, G]  # time 0
    table1 = cache.allocate(2)
    assert table1 == [0, 1]
    cache.insert(seq1, table1)
    assert [b for b in range(10) if cache.is_cached(b)] == [0]
    seq1.append(H)  # time 1: block 1 (EFGH) is full
    cache.insert(seq1, table1)
    assert [b for b in range(10) if cache.is_cached(b)] == [0, 1]
    seq1.append(I)  # time 2
    table1 += cache.allocate(1)
    assert table1 == [0, 1, 2]

    seq2 = [A, B, C, D, E, F]
    m = cache.match(seq2)
    assert m.block_ids == (0,)  # EF.. is partial: only ABCD can hit
    table2 = list(m.block_ids) + cache.allocate(1)
    assert table2 == [0, 3]
    seq2.append(G)
    cache.insert(seq2, table2)
    seq2.append(H)  # block 3 now holds EFGH, like block 1
    assert cache.insert(seq2, table2) == 0
    assert table2 == [0, 3]  # append-only block table
    assert [b for b in range(10) if cache.is_cached(b)] == [0, 1]  # document: 0, 1, 3 (see docstring)

    m = cache.match([A, B, C, D, E, F, G, H, 0])
    assert m.block_ids == (0, 1)
    cache.release(m.block_ids)
    cache.release(table2)  # the duplicate goes back as a plain free block
    cache.release(table1)
    assert cache.free_queue() == [4, 5, 6, 7, 8, 9, 3, 2, 1, 0]
    assert cache.stats().num_cached == 2
