"""Offline, deterministic tokenizers for the tiny diffusion models (no hub files):
the ids are the same in every process, so comparisons across processes hold."""

from __future__ import annotations

from typing import Any

WORDS = (
    "a painting of squirrel eating burger photo cat dog astronaut riding horse on mars "
    "red green blue yellow cyberpunk city at night portrait woman man old young "
    "high quality detailed 4k render oil watercolor sketch landscape mountain river "
    "forest sunset sunrise beach ocean sky clouds the an with and in of by for img"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer(model_max_length: int = 77) -> Any:
    """A byte-level CLIP BPE tokenizer with merges for WORDS (~800 ids < 1000)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = list(_bytes_to_unicode().values())
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    merges, seen = [], set()
    for word in sorted(set(WORDS)):
        if len(word) < 2:
            continue
        syms = list(word[:-1]) + [word[-1] + "</w>"]
        cur = syms[0]
        for s in syms[1:]:
            if (cur, s) not in seen:
                seen.add((cur, s))
                merges.append((cur, s))
            cur = cur + s
            vocab.setdefault(cur, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def t5_tokenizer() -> Any:
    """A Unigram T5 tokenizer over WORDS (pad 0, eos 1, unk 2)."""
    from transformers import T5Tokenizer

    chars = sorted(set("".join(WORDS)) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(sorted(set(WORDS)))]
    vocab += [(c, -5.0) for c in chars]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    tok.model_max_length = 512
    return tok


def clip_text_config(tok: Any) -> Any:
    """A 2-layer, 32-wide CLIP text encoder config for ``tok`` (vocab 1000)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
