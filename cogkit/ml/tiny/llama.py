"""A tiny random-weight Llama with an offline, deterministic tokenizer.

``build_tiny_llama(folder)`` writes a ``save_pretrained`` folder (config, weights,
tokenizer.json with a chat template) in well under a second; every id and weight is
the same in every process. The tokenizer is a byte-fallback BPE over a small word
list, so any text round-trips (characters outside the list become UTF-8 byte
tokens, which exercises multi-byte detokenisation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WORDS = (
    "hello world how are you today i am fine thanks what is your name please tell me a story "
    "about the robot dragon castle king queen knight sword magic wizard tree house cat dog and "
    "of in on with at by for once upon time there was an old red green blue sky sea stop end"
).split()

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def build_tokenizer():
    """LlamaTokenizer with <unk>/<s>/</s>, 256 byte tokens, characters and whole-word merges."""
    from transformers import LlamaTokenizer

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    vocab["▁"] = len(vocab)
    alphabet = sorted(set("".join(WORDS)) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'"))
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in sorted(set(WORDS)):
        piece = "▁"
        for ch in word:
            if (piece, ch) not in seen:
                seen.add((piece, ch))
                merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
    tok = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tok.pad_token = tok.eos_token
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 512
    return tok


def build_tiny_llama(
    folder: str | os.PathLike[str], *, max_position_embeddings: int = 512, seed: int = 0, **config: Any
) -> Path:
    """Write tokenizer + random LlamaForCausalLM (2 layers, hidden 64, GQA 4/2) to ``folder``;
    ``config`` overrides LlamaConfig fields (e.g. wider heads for a benchmark)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tok = build_tokenizer()
    torch.manual_seed(seed)
    fields: dict[str, Any] = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<|end|>")],
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(LlamaConfig(**(fields | config)))
    # Random init makes logits nearly flat: a larger lm_head spreads them so the text varies,
    # and damped byte-token rows make the model prefer words (readable test output).
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
        byte_ids = [tok.convert_tokens_to_ids(f"<0x{b:02X}>") for b in range(256)]
        model.lm_head.weight[byte_ids] *= 0.1
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
