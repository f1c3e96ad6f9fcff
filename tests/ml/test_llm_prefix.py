"""cogkit.ml.llm_prefix: which prompt prefixes are kept, found and evicted."""

from __future__ import annotations

import torch

from cogkit.ml.llm_prefix import PrefixCache


def kv(n: int, fill: float = 0.0) -> list[torch.Tensor]:
    return [torch.full((2, n, 4), fill)]  # one layer: [kv_heads, positions, head_dim]


def test_the_longest_block_aligned_prefix_is_found_and_the_last_token_is_left_to_prefill() -> None:
    cache = PrefixCache(max_tokens=1000, block=4)
    prompt = list(range(10))
    cache.store(prompt, kv(12), kv(12))
    assert cache.tokens == 8  # 10 tokens: cut at 8, the block boundary below the last token
    n, entry = cache.lookup(list(range(9)) + [99, 100])  # shares 9 tokens -> 8 usable
    assert n == 8 and entry is not None and entry.keys[0].shape == (2, 8, 4)
    assert cache.lookup(list(range(8)))[0] == 4  # never the whole prompt: 8 tokens reuse 4
    assert cache.lookup([5, 6, 7, 8, 9])[0] == 0 and cache.misses == 1 and cache.hits == 2


def test_a_longer_prefix_replaces_the_shorter_ones_it_extends() -> None:
    cache = PrefixCache(max_tokens=1000, block=4)
    cache.store(list(range(6)), kv(8), kv(8))
    cache.store(list(range(14)), kv(16), kv(16))
    assert cache.tokens == 12 and len(cache._entries) == 1
    cache.store(list(range(7)), kv(8), kv(8))  # already held by the longer one
    assert cache.tokens == 12 and cache.lookup(list(range(7)) + [50])[0] == 4


def test_the_budget_evicts_the_least_recently_used() -> None:
    cache = PrefixCache(max_tokens=8, block=4)
    cache.store([1, 1, 1, 1, 1], kv(8, 1), kv(8, 1))
    cache.store([2, 2, 2, 2, 2], kv(8, 2), kv(8, 2))
    cache.lookup([1, 1, 1, 1, 9])  # 1s used last
    cache.store([3, 3, 3, 3, 3], kv(8, 3), kv(8, 3))
    assert cache.tokens == 8
    assert cache.lookup([2, 2, 2, 2, 9])[0] == 0  # evicted
    n, entry = cache.lookup([3, 3, 3, 3, 9])
    assert n == 4 and float(entry.keys[0][0, 0, 0]) == 3.0
    cache.store(list(range(20)), kv(20), kv(20))  # longer than the budget: not kept
    assert cache.tokens == 8
