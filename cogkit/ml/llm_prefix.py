"""Prompt-prefix caching for the LLM engine: a shared system prompt is prefilled once.

Requests to a chat model mostly begin with the same tokens (the system prompt and the
chat template's header). A prefix's keys and values depend on those tokens alone
(causal attention, absolute positions), so after one request prefills them the next
can copy them into its slot and prefill only the rest. ``PrefixCache`` keeps, least
recently used first out, copies of prompt prefixes cut at ``block``-token boundaries,
within a budget of ``max_tokens`` cached positions; ``lookup(ids)`` returns the longest
cached prefix of ``ids`` (never the whole prompt: its last token must still be
prefilled, to give the logits of the first new token).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

import torch

BLOCK = 64


@dataclass
class _Entry:
    ids: tuple[int, ...]
    keys: list[torch.Tensor]    # per layer [kv_heads, length, head_dim]
    values: list[torch.Tensor]


class PrefixCache:
    def __init__(self, max_tokens: int, block: int = BLOCK) -> None:
        self.max_tokens, self.block = max_tokens, block
        self._entries: collections.OrderedDict[tuple[int, ...], _Entry] = collections.OrderedDict()
        self.hits = self.misses = 0
        self.tokens = 0  # cached positions held now

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0

    def _cut(self, n: int) -> int:
        """The longest block boundary below ``n`` (a prompt of n tokens keeps its last one)."""
        return (n - 1) // self.block * self.block

    def lookup(self, ids: Sequence[int]) -> tuple[int, _Entry | None]:
        """(length, entry) of the longest cached prefix of ``ids`` at a block boundary."""
        limit = self._cut(len(ids))
        best, found = 0, None
        for key, entry in self._entries.items():
            common = 0
            for a, b in zip(ids[:limit], key):
                if a != b:
                    break
                common += 1
            n = common // self.block * self.block
            if n > best:
                best, found = n, entry
        if found is None:
            self.misses += 1
            return 0, None
        self.hits += 1
        self._entries.move_to_end(found.ids)
        return best, found

    def store(self, ids: Sequence[int], keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Keep the prompt's prefix up to its last block boundary; ``keys``/``values`` are the
        slot's rows (per layer [kv_heads, >= length, head_dim]); they are copied."""
        n = self._cut(len(ids))
        if n <= 0 or n > self.max_tokens:
            return
        key = tuple(ids[:n])
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if any(e.ids[:n] == key for e in self._entries.values()):
            return  # a longer cached prefix already holds it
        for shorter in [k for k in self._entries if len(k) < n and key[: len(k)] == k]:
            self.tokens -= len(self._entries.pop(shorter).ids)  # this one serves what it served
        while self._entries and self.tokens + n > self.max_tokens:
            self.tokens -= len(self._entries.popitem(last=False)[1].ids)
        self._entries[key] = _Entry(key, [k[:, :n].clone() for k in keys], [v[:, :n].clone() for v in values])
        self.tokens += n
