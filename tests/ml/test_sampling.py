"""cogkit.ml.sampling on fixed logits: each filter equals transformers' logits processor,
rows keep their own settings, greedy/temperature 0, min_new_tokens, seeded draws."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
lp = pytest.importorskip("transformers.generation.logits_process")

from cogkit.ml.sampling import (  # noqa: E402
    SamplingParams,
    SlotSampler,
    apply_presence_frequency,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    draw,
)

VOCAB = 50


def fixed_logits(rows: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, VOCAB, generator=g) * 3
    logits[0, 7] = logits[0, 9]  # a tie, to check tie handling matches
    return logits


def hf_chain(params: SamplingParams, prompt_len: int, input_ids: torch.Tensor, eos: list[int]) -> lp.LogitsProcessorList:
    """The processors model.generate builds for these settings, in its order."""
    chain = lp.LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.min_new_tokens > 0:
        chain.append(lp.MinNewTokensLengthLogitsProcessor(prompt_len, params.min_new_tokens, eos))
    if not params.greedy:
        if params.temperature != 1.0:
            chain.append(lp.TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            chain.append(lp.TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            chain.append(lp.TopPLogitsWarper(params.top_p))
    return chain


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_transformers(penalty: float) -> None:
    logits = fixed_logits()
    ids = torch.tensor([[1, 2, 3, 3, 40], [5, 5, 5, 5, 5], [0, 49, 7, 9, 1], [11, 12, 13, 14, 15]])
    seen = torch.zeros(4, VOCAB, dtype=torch.bool)
    seen[torch.arange(4)[:, None], ids] = True
    ours = apply_repetition_penalty(logits, seen, torch.full((4,), penalty))
    theirs = lp.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("temperature", [0.1, 0.7, 1.0, 5.0])
def test_temperature_equals_transformers(temperature: float) -> None:
    logits = fixed_logits()
    ours = apply_temperature(logits, torch.full((4,), temperature))
    theirs = lp.TemperatureLogitsWarper(temperature)(None, logits.clone())
    assert torch.equal(ours, theirs)


def test_temperature_zero_is_greedy_not_a_division() -> None:
    logits = fixed_logits()
    out = apply_temperature(logits, torch.tensor([0.0, 0.5, 0.0, 2.0]))
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    sampler = SlotSampler(1, VOCAB)
    sampler.assign(0, SamplingParams(temperature=0.0, top_k=3, top_p=0.2), [1, 2], eos_ids=[0])
    for row in range(4):
        assert sampler.sample(logits[row : row + 1], [0], [5]).item() == int(torch.argmax(logits[row]))


@pytest.mark.parametrize("top_k", [1, 2, 5, 49, 50, 80])
def test_top_k_equals_transformers(top_k: int) -> None:
    logits = fixed_logits()
    ours = apply_top_k(logits, torch.full((4,), top_k))
    theirs = lp.TopKLogitsWarper(top_k)(None, logits.clone())
    assert torch.equal(ours, theirs)


def test_top_k_off_keeps_everything() -> None:
    logits = fixed_logits()
    assert torch.equal(apply_top_k(logits, torch.tensor([-1, 0, -1, 0])), logits)


@pytest.mark.parametrize("top_p", [0.0, 0.05, 0.3, 0.9, 0.999])
def test_top_p_equals_transformers(top_p: float) -> None:
    logits = fixed_logits()
    ours = apply_top_p(logits, torch.full((4,), top_p))
    theirs = lp.TopPLogitsWarper(top_p)(None, logits.clone())
    assert torch.equal(ours, theirs)
    assert (torch.isfinite(ours).sum(dim=-1) >= 1).all()  # nucleus keeps at least one token


def test_top_p_one_keeps_everything() -> None:
    logits = fixed_logits()
    assert torch.equal(apply_top_p(logits, torch.ones(4)), logits)


def test_top_p_zero_keeps_only_the_best_token() -> None:
    logits = fixed_logits()
    out = apply_top_p(logits, torch.zeros(4))
    assert (torch.isfinite(out).sum(dim=-1) == 1).all()
    assert torch.equal(out.argmax(-1), logits.argmax(-1))


def test_presence_and_frequency_penalties() -> None:
    logits = torch.zeros(2, 5)
    counts = torch.tensor([[0, 1, 3, 0, 0], [2, 0, 0, 0, 1]], dtype=torch.int32)
    out = apply_presence_frequency(logits, counts, torch.tensor([0.5, 0.0]), torch.tensor([0.25, 1.0]))
    expected = torch.tensor([[0, -0.75, -1.25, 0, 0], [-2.0, 0, 0, 0, -1.0]])
    assert torch.allclose(out, expected)


def test_rows_with_different_settings_equal_transformers_row_by_row() -> None:
    """A batch whose rows each have their own settings: every row equals generate()'s chain."""
    logits = fixed_logits()
    prompt = [[1, 2, 3], [4, 4, 4], [5, 6, 7], [8, 9, 10]]
    generated = [[11, 12], [13], [14, 15, 16], []]
    eos = [0, 1]
    settings = [
        SamplingParams(temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.2),
        SamplingParams(temperature=1.3, top_p=0.5, min_new_tokens=4),
        SamplingParams(temperature=0.0, repetition_penalty=1.5, min_new_tokens=2),
        SamplingParams(temperature=1.0, top_k=3),
    ]
    sampler = SlotSampler(4, VOCAB)
    for slot, p in enumerate(settings):
        sampler.assign(slot, p, prompt[slot], eos)
        if generated[slot]:
            sampler.observe([slot] * len(generated[slot]), torch.tensor(generated[slot]))
    ours = sampler.process(logits, [0, 1, 2, 3], [len(g) for g in generated])
    for row, p in enumerate(settings):
        ids = torch.tensor([prompt[row] + generated[row]])
        theirs = hf_chain(p, len(prompt[row]), ids, eos)(ids, logits[row : row + 1].clone())
        assert torch.equal(ours[row : row + 1], theirs), f"row {row} ({p})"


def test_min_new_tokens_masks_eos_until_reached() -> None:
    logits = torch.zeros(1, 6)
    logits[0, 2] = 10.0  # EOS is by far the most likely
    sampler = SlotSampler(1, 6)
    sampler.assign(0, SamplingParams(temperature=0.0, min_new_tokens=3), [4], eos_ids=[2, 5])
    assert sampler.sample(logits, [0], [0]).item() != 2
    assert sampler.sample(logits, [0], [2]).item() != 2
    assert sampler.sample(logits, [0], [3]).item() == 2
    out = sampler.process(logits, [0], [1])
    assert out[0, 2] == -float("inf") and out[0, 5] == -float("inf")


def test_slot_subsets_and_penalty_state() -> None:
    """Sampling a subset of slots uses those slots' settings and counts."""
    sampler = SlotSampler(3, 5)
    sampler.assign(0, SamplingParams(temperature=0.0), [], eos_ids=[])
    sampler.assign(2, SamplingParams(temperature=0.0, frequency_penalty=2.0), [], eos_ids=[])
    logits = torch.tensor([[0.0, 1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0, 0.0]])
    assert sampler.sample(logits, [0, 2], [0, 0]).tolist() == [1, 1]
    sampler.observe([0, 2], torch.tensor([1, 1]))
    assert sampler.sample(logits, [0, 2], [1, 1]).tolist() == [1, 2]  # slot 2 now avoids token 1
    sampler.assign(2, SamplingParams(temperature=0.0), [], eos_ids=[])  # re-assigning clears the counts
    assert sampler.sample(logits[:1], [2], [0]).tolist() == [1]


def test_seeded_draws_are_reproducible_and_independent_of_the_batch() -> None:
    logits = fixed_logits(rows=3)
    params = SamplingParams(temperature=1.0, seed=1234)

    def run(slots: list[int]) -> list[int]:
        sampler = SlotSampler(3, VOCAB)
        for s in slots:
            sampler.assign(s, params if s == 0 else SamplingParams(temperature=1.0, seed=99 + s), [], [])
        out = []
        for _ in range(20):
            out.append(int(sampler.sample(logits[: len(slots)], slots, [5] * len(slots))[0]))
        return out

    alone = run([0])
    assert alone == run([0])
    assert alone == run([0, 1, 2])  # neighbours with other seeds do not change slot 0's draws
    other = SlotSampler(1, VOCAB)
    other.assign(0, SamplingParams(temperature=1.0, seed=4321), [], [])
    assert [int(other.sample(logits[:1], [0], [5])[0]) for _ in range(20)] != alone


def test_draw_follows_the_distribution() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    picks = draw(probs, [g] * 4000)
    freq = torch.bincount(picks, minlength=4).float() / 4000
    assert freq[3] == 0
    assert torch.allclose(freq[:3], torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"min_new_tokens": -3}, "min_new_tokens"),
        ({"seed": -1}, "seed"),
    ],
)
def test_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs).validate()
