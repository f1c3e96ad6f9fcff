"""cogkit.ml.llm_text: streaming detokenisation, stop sequences, prompt building."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("transformers")

from cogkit.ml.llm_text import (  # noqa: E402
    IncrementalDecoder,
    StopMatcher,
    build_prompt,
    check_prompt_template,
    parse_stop_sequences,
)
from cogkit.ml.tiny.llama import build_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def sp_tok():
    """SentencePiece-style: Metaspace + byte fallback (<0xNN> tokens)."""
    return build_tokenizer()


@pytest.fixture(scope="module")
def bl_tok():
    """Byte-level BPE (GPT-2 / Llama-3 style): every byte is a token; ' hello', ' world' merged."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    byte_char = {b: chr(b if b in printable else next(extra)) for b in range(256)}
    vocab = {byte_char[b]: b for b in range(256)}
    merges = []
    for word in (" hello", " world"):
        symbols = [byte_char[c] for c in word.encode()]
        piece = symbols[0]
        for s in symbols[1:]:
            merges.append((piece, s))
            piece += s
            vocab.setdefault(piece, len(vocab))
    vocab["<|eot|>"] = len(vocab)
    model = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=model, eos_token="<|eot|>")


def stream(tok, ids: list[int]) -> list[str]:
    dec = IncrementalDecoder(tok)
    parts = [dec.push(i) for i in ids]
    parts.append(dec.flush())
    return parts


TEXTS = [
    "hello world, how are you today?",
    "  leading spaces and   runs of spaces ",
    "émoji 😀 and accents: héllo wörld — ok",
    "中文字符 and 🐉🏰 dragons",
    "once upon a time\nthere was a king\n\n",
]


@pytest.mark.parametrize("which", ["sp_tok", "bl_tok"])
@pytest.mark.parametrize("text", TEXTS)
def test_deltas_join_to_the_full_decode(which: str, text: str, request) -> None:
    tok = request.getfixturevalue(which)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    parts = stream(tok, ids)
    assert "".join(parts) == tok.decode(ids, skip_special_tokens=True)
    assert "".join(parts).strip() == text.strip()
    assert not any("\ufffd" in p for p in parts)  # no half characters ever shown


def test_multibyte_character_is_held_until_complete(bl_tok) -> None:
    ids = bl_tok("a 😀", add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(bl_tok)
    out = [dec.push(i) for i in ids]
    assert out[-1] == "😀" and all("\ufffd" not in o for o in out)
    assert out[-4:-1] == ["", "", ""]  # the first three of its four byte tokens wait


def test_byte_fallback_run_is_held_until_it_ends(sp_tok) -> None:
    """A run of <0xNN> tokens decodes as one unit (all U+FFFD if any byte is invalid), so it
    is shown only when a non-byte token follows, or at the end."""
    ids = sp_tok("a 😀", add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(sp_tok)
    assert "".join(dec.push(i) for i in ids) == "a "
    assert dec.flush() == "😀"
    dec = IncrementalDecoder(sp_tok)
    out = [dec.push(i) for i in ids + sp_tok(" cat", add_special_tokens=False)["input_ids"]]
    assert out[-1] == "😀 cat"


def test_vocabulary_is_read_once_per_tokenizer(monkeypatch) -> None:
    """Every request makes a decoder; reading a 128k vocabulary costs ~80 ms, so the
    byte-token ids are kept per tokenizer (and read again when it grows)."""
    tok = build_tokenizer()
    reads = []
    real = tok.get_vocab

    def counting():
        reads.append(1)
        return real()

    monkeypatch.setattr(tok, "get_vocab", counting)
    first, second = IncrementalDecoder(tok), IncrementalDecoder(tok)
    assert len(reads) == 1 and first._wait_after == second._wait_after
    assert tok.convert_tokens_to_ids("<0x41>") in second._wait_after
    tok.add_tokens(["<0xQQ>"])
    third = IncrementalDecoder(tok)
    assert len(reads) == 2 and tok.convert_tokens_to_ids("<0xQQ>") in third._wait_after


@pytest.mark.parametrize("which", ["sp_tok", "bl_tok"])
def test_random_token_streams_join_to_the_full_decode(which: str, request) -> None:
    """Arbitrary ids (invalid UTF-8, special tokens, lone bytes) still join exactly."""
    tok = request.getfixturevalue(which)
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(len(tok)) for _ in range(rng.randint(1, 25))]
        assert "".join(stream(tok, ids)) == tok.decode(ids, skip_special_tokens=True), ids


def test_special_tokens_are_not_shown(sp_tok) -> None:
    ids = sp_tok("hello", add_special_tokens=False)["input_ids"] + [sp_tok.convert_tokens_to_ids("<|end|>")]
    assert "".join(stream(sp_tok, ids)) == "hello"


# ------------------------------------------------------------------------------------------ stops


def feed_all(matcher: StopMatcher, deltas: list[str], check: bool = True) -> tuple[str, bool]:
    out = []
    for d in deltas:
        text, stopped = matcher.feed(d, check=check)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_stop_sequence_split_across_deltas() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("hello S") == ("hello ", False)  # "S" may start STOP: held back
    assert m.feed("T") == ("", False)
    assert m.feed("OP and more") == ("", True)


def test_held_text_is_released_when_it_cannot_be_a_stop() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("a ST") == ("a ", False)
    assert m.feed("AR") == ("STAR", False)
    assert m.flush() == ""


def test_earliest_of_several_stops_wins_and_nothing_after_it_is_shown() -> None:
    text, stopped = feed_all(StopMatcher(["world", "lo w"]), ["hel", "lo", " wor", "ld!"])
    assert (text, stopped) == ("hel", True)


def test_text_without_stops_passes_through() -> None:
    assert feed_all(StopMatcher([]), ["a", "b"]) == ("ab", False)
    assert feed_all(StopMatcher(["xyz"]), ["ab", "x", "y"]) == ("abxy", False)


def test_unchecked_text_lets_a_complete_stop_through() -> None:
    m = StopMatcher(["ab"])
    assert m.feed("xab", check=False) == ("xab", False)
    assert m.feed("a", check=False) == ("", False)  # still a possible start
    assert m.feed("b") == ("", True)  # completed once checking is on


@pytest.mark.parametrize("seed", range(20))
def test_stop_matcher_never_leaks_a_stop(seed: int) -> None:
    rng = random.Random(seed)
    stops = ["<end>", "\n\n", "User:"]
    body = "".join(rng.choice(["a", "b", " ", "<", "e", "n", "d", ">", "\n", "U", "ser", ":"]) for _ in range(60))
    cuts = sorted(rng.sample(range(1, len(body)), 10))
    deltas = [body[i:j] for i, j in zip([0, *cuts], [*cuts, len(body)])]
    text, stopped = feed_all(StopMatcher(stops), deltas)
    first = min([i for i in (body.find(s) for s in stops) if i >= 0], default=None)
    if first is None:
        assert (text, stopped) == (body, False)
    else:
        assert (text, stopped) == (body[:first], True)


def test_parse_stop_sequences() -> None:
    assert parse_stop_sequences(None) == []
    assert parse_stop_sequences("") == []
    assert parse_stop_sequences("<end>, User: ,,###") == ["<end>", "User:", "###"]
    assert parse_stop_sequences("\n\n") == ["\n\n"]  # newlines are kept
    assert parse_stop_sequences("a,a") == ["a"]
    assert parse_stop_sequences(["x, y"]) == ["x, y"]


# ----------------------------------------------------------------------------------------- prompts


def test_chat_template_with_and_without_system_prompt(sp_tok) -> None:
    ids, text = build_prompt(sp_tok, "hello", "be brief")
    assert text == "<s><|system|>\nbe brief<|end|>\n<|user|>\nhello<|end|>\n<|assistant|>\n"
    assert ids[0] == sp_tok.bos_token_id and ids.count(sp_tok.bos_token_id) == 1
    assert ids == sp_tok.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        add_generation_prompt=True, return_dict=True,
    )["input_ids"]
    _, text = build_prompt(sp_tok, "hello", "")
    assert "<|system|>" not in text


def test_python_prompt_template(sp_tok) -> None:
    ids, text = build_prompt(sp_tok, "hello", "sys", "[{system_prompt}] Q: {prompt} A:")
    assert text == "[sys] Q: hello A:"
    assert ids[0] == sp_tok.bos_token_id  # the tokenizer adds BOS
    ids, _ = build_prompt(sp_tok, "hello", "sys", "<s>Q: {prompt}")
    assert ids.count(sp_tok.bos_token_id) == 1  # ...but not twice


def test_template_rejecting_a_system_role_folds_it_into_the_user_turn() -> None:
    tok = build_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['content'] }}]{% endfor %}"
    )
    _, text = build_prompt(tok, "hello", "be brief")
    assert text == "[be brief\n\nhello]"


def test_no_chat_template_uses_the_bare_prompt() -> None:
    tok = build_tokenizer()
    tok.chat_template = None
    ids, text = build_prompt(tok, "hello world", "ignored")
    assert text == "hello world" and ids == tok("hello world")["input_ids"]


@pytest.mark.parametrize(
    "template, message",
    [
        ("{prompt} {user}", r"unknown placeholder\(s\) \{user\}"),
        ("{system_prompt} only", "must contain the {prompt} placeholder"),
        ("{prompt", "not a valid Python format string"),
        ("{0} {prompt}", r"unknown placeholder\(s\) \{0\}"),
    ],
)
def test_bad_prompt_templates_are_named(template: str, message: str) -> None:
    with pytest.raises(ValueError, match="prompt_template: .*" + message):
        check_prompt_template(template)


def test_literal_braces_in_a_template(sp_tok) -> None:
    _, text = build_prompt(sp_tok, "x", "", '{{"q": "{prompt}"}}')
    assert text == '{"q": "x"}'
