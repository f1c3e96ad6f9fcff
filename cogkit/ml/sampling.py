"""Next-token sampling for LLMs, one row per sequence, each row with its own settings.

The filters follow transformers' logits processors exactly (same order, same
maths), so a row processed here equals ``model.generate`` with the same settings
on the same logits:

1. repetition penalty over prompt + generated tokens (``RepetitionPenaltyLogitsProcessor``),
2. presence / frequency penalties over generated tokens (OpenAI's definition;
   transformers has no equivalent),
3. end-of-sequence tokens masked until ``min_new_tokens`` (``MinNewTokensLengthLogitsProcessor``),
4. temperature (``TemperatureLogitsWarper``); temperature 0 means greedy,
5. top-k (``TopKLogitsWarper``), then 6. top-p (``TopPLogitsWarper``, keeps at least one token).

Sampling draws exponential noise from a per-row ``torch.Generator`` (argmax of
probs / Exp(1) is a draw from probs), so a seeded sequence gives the same tokens
whatever else shares its batch.

``SlotSampler`` holds the settings and penalty state of a fixed number of batch
slots on the model's device; the batching engine sets a slot per request.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence

import torch

TOP_K_OFF = -1


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """One request's sampling settings; ``validate()`` names the field and rule on bad values."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = TOP_K_OFF
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_new_tokens: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        )

    def validate(self) -> SamplingParams:
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature: must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p: must be between 0 and 1, got {self.top_p}")
        if self.top_k < TOP_K_OFF:
            raise ValueError(f"top_k: must be >= 0, or -1 to turn it off, got {self.top_k}")
        if not self.repetition_penalty > 0.0:
            raise ValueError(
                f"repetition_penalty: must be > 0 (1 means no penalty), got {self.repetition_penalty}"
            )
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens: must be >= 0, got {self.min_new_tokens}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"seed: must be between 0 and 2**63-1, got {self.seed}")
        return self


# ----------------------------------------------------------------------------------------------
# The filters. Each takes logits [rows, vocab] and per-row settings [rows]; rows whose setting
# is neutral come out unchanged, bit for bit.


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Tokens in ``seen`` (bool [rows, vocab]): negative logits times penalty, others divided by it."""
    p = penalty.to(logits.dtype)[:, None]
    penalised = torch.where(logits < 0, logits * p, logits / p)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(
    logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """Subtract ``frequency * count + presence * (count > 0)`` (counts of generated tokens)."""
    c = counts.to(logits.dtype)
    return logits - frequency.to(logits.dtype)[:, None] * c - presence.to(logits.dtype)[:, None] * (c > 0)


def mask_tokens(logits: torch.Tensor, token_ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Set ``token_ids`` to -inf in the rows where ``rows`` (bool [rows]) is true."""
    if token_ids.numel() == 0:
        return logits
    out = logits.clone()
    cols = out[:, token_ids]
    out[:, token_ids] = torch.where(rows[:, None], torch.full_like(cols, -float("inf")), cols)
    return out


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide by the temperature; rows at temperature <= 0 (greedy) are left as they are."""
    t = temperature.to(logits.dtype)
    return torch.where(t[:, None] > 0, logits / torch.where(t > 0, t, 1.0)[:, None], logits)


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep the k highest logits of each row (ties with the k-th kept); k <= 0 keeps all."""
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab).to(torch.long)
    ordered = torch.sort(logits, dim=-1, descending=True).values
    kth = ordered.gather(1, (k - 1)[:, None])
    return logits.masked_fill(logits < kth, -float("inf"))


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Nucleus filter: drop the least likely tokens whose total probability is <= 1 - top_p,
    always keeping the most likely one; top_p = 1 keeps all."""
    ascending, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - top_p.to(cumulative.dtype))[:, None]
    drop[:, -1] = False
    return logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """One token per row from ``probs``, each row with its own generator (None: global RNG)."""
    noise = torch.empty_like(probs, dtype=torch.float32)
    for i, gen in enumerate(generators):
        noise[i].exponential_(generator=gen)
    return torch.argmax(probs.float() / noise, dim=-1)


# ----------------------------------------------------------------------------------------------


class SlotSampler:
    """Sampling settings and penalty state for ``slots`` concurrent sequences.

    ``assign(slot, params, prompt_ids, eos_ids)`` prepares a slot for a new request,
    ``sample(logits, slots, generated)`` picks the next token of each given slot, and
    ``observe(slots, tokens)`` records the picked tokens for the penalties.
    """

    def __init__(self, slots: int, vocab_size: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.vocab_size = vocab_size
        f32 = dict(dtype=torch.float32, device=self.device)
        self.temperature = torch.ones(slots, **f32)
        self.top_p = torch.ones(slots, **f32)
        self.top_k = torch.full((slots,), TOP_K_OFF, dtype=torch.long, device=self.device)
        self.repetition = torch.ones(slots, **f32)
        self.presence = torch.zeros(slots, **f32)
        self.frequency = torch.zeros(slots, **f32)
        self.seen = torch.zeros((slots, vocab_size), dtype=torch.bool, device=self.device)
        self.counts = torch.zeros((slots, vocab_size), dtype=torch.int32, device=self.device)
        self.params: list[SamplingParams | None] = [None] * slots
        self.generators: list[torch.Generator | None] = [None] * slots
        self.eos_ids: list[torch.Tensor] = [torch.zeros(0, dtype=torch.long, device=self.device)] * slots

    def assign(
        self, slot: int, params: SamplingParams, prompt_ids: Sequence[int], eos_ids: Sequence[int]
    ) -> None:
        self.params[slot] = params
        self.temperature[slot] = params.temperature
        self.top_p[slot] = params.top_p
        self.top_k[slot] = params.top_k
        self.repetition[slot] = params.repetition_penalty
        self.presence[slot] = params.presence_penalty
        self.frequency[slot] = params.frequency_penalty
        self.counts[slot].zero_()
        self.seen[slot].zero_()
        if params.repetition_penalty != 1.0 and len(prompt_ids):
            self.seen[slot, torch.tensor(list(prompt_ids), dtype=torch.long, device=self.device)] = True
        self.eos_ids[slot] = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=self.device)
        gen = None
        if not params.greedy:
            gen = torch.Generator(self.device)
            gen.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
        self.generators[slot] = gen

    def release(self, slot: int) -> None:
        self.params[slot] = None
        self.generators[slot] = None

    def process(self, logits: torch.Tensor, slots: Sequence[int], generated: Sequence[int]) -> torch.Tensor:
        """Apply every filter to ``logits`` [len(slots), vocab] (fp32); returns filtered logits."""
        if logits.shape[0] != len(slots) or len(generated) != len(slots):
            raise ValueError(
                f"{logits.shape[0]} logit rows and {len(generated)} counts for {len(slots)} slots"
            )
        params = [self.params[s] for s in slots]
        if any(p is None for p in params):
            raise RuntimeError(f"sampling slot(s) {[s for s, p in zip(slots, params) if p is None]} not assigned")
        idx = torch.tensor(list(slots), dtype=torch.long, device=self.device)
        contiguous = list(slots) == list(range(slots[0], slots[0] + len(slots)))

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t[slots[0] : slots[0] + len(slots)] if contiguous else t[idx]

        logits = logits.float()
        if any(p.repetition_penalty != 1.0 for p in params):
            logits = apply_repetition_penalty(logits, rows(self.seen), rows(self.repetition))
        if any(p.presence_penalty != 0.0 or p.frequency_penalty != 0.0 for p in params):
            logits = apply_presence_frequency(logits, rows(self.counts), rows(self.presence), rows(self.frequency))
        needs_eos_mask = [n < p.min_new_tokens for n, p in zip(generated, params)]
        if any(needs_eos_mask):
            for i, s in enumerate(slots):
                if needs_eos_mask[i]:
                    only = torch.zeros(len(slots), dtype=torch.bool, device=self.device)
                    only[i] = True
                    logits = mask_tokens(logits, self.eos_ids[s], only)
        if all(p.greedy for p in params):
            return logits
        logits = apply_temperature(logits, rows(self.temperature))
        if any(p.top_k > 0 and not p.greedy for p in params):
            logits = apply_top_k(logits, rows(self.top_k))
        if any(p.top_p < 1.0 and not p.greedy for p in params):
            logits = apply_top_p(logits, rows(self.top_p))
        return logits

    def sample(self, logits: torch.Tensor, slots: Sequence[int], generated: Sequence[int]) -> torch.Tensor:
        """The next token of each slot: argmax for greedy rows, a seeded draw otherwise."""
        filtered = self.process(logits, slots, generated)
        tokens = torch.argmax(filtered, dim=-1)
        sampled = [i for i, s in enumerate(slots) if not self.params[s].greedy]  # type: ignore[union-attr]
        if sampled:
            pick = torch.tensor(sampled, dtype=torch.long, device=self.device)
            probs = torch.softmax(filtered[pick], dim=-1)
            drawn = draw(probs, [self.generators[slots[i]] for i in sampled])
            tokens = tokens.index_copy(0, pick, drawn)
        return tokens

    def observe(self, slots: Sequence[int], tokens: torch.Tensor) -> None:
        """Record the tokens just generated (for the penalties of the next step)."""
        if not any(self.params[s] is not None and self.params[s].penalised for s in slots):  # type: ignore[union-attr]
            return
        idx = torch.tensor(list(slots), dtype=torch.long, device=self.device)
        tok = tokens.to(self.device, torch.long)
        self.counts.index_put_((idx, tok), torch.ones_like(tok, dtype=self.counts.dtype), accumulate=True)
        self.seen.index_put_((idx, tok), torch.ones_like(tok, dtype=torch.bool))
