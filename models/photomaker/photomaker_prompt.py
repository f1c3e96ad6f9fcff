"""Prompt rules for PhotoMaker: the trigger word, the class word, the CLIP window,
and the step at which the ID embedding is merged in (torch-free).

The trigger word ``img`` follows a class word ("a photo of a man img"). It never
reaches a text encoder: it is cut out of the token ids, and the token just before
it (the class word; its last sub-token when the word is split) is repeated once
per ID image. Those positions are later replaced by the fused ID embeddings. The
same ids without the repeat are the "text-only" prompt of the early steps.

Prompts longer than CLIP's 77-token window are truncated the way the SDXL
predictor (diffusers' encode_prompt) truncates them: start token, the first 75
tokens, end token. The class-word positions must lie inside that window.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import Any

TRIGGER = "img"
MAX_MERGE_STEP = 30  # the reference caps the text-only phase at 30 steps
EXAMPLE = "'a photo of a man img'"


class PromptError(ValueError):
    """A prompt that breaks a trigger-word rule; the message names the field and the rule."""


@dataclasses.dataclass(frozen=True)
class IdPrompt:
    """One tokenizer's view of a prompt with the trigger word."""

    id_ids: list[int]          # padded ids with the class token repeated once per ID image
    text_ids: list[int]        # padded ids of the text-only prompt (trigger removed, no repeat)
    class_positions: range     # where the repeated class token sits in id_ids
    class_token: str           # the class word's (last) token, for logs
    dropped: str               # text cut off by the 77-token window ("" when it fits)


def add_trigger_token(tokenizer: Any) -> int:
    """Make ``img`` one token of its own (only as a whole word) and return its id."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(TRIGGER, single_word=True, normalized=False, special=True)])
    return int(tokenizer.convert_tokens_to_ids(TRIGGER))


def _content_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _window(tokenizer: Any) -> int:
    return int(tokenizer.model_max_length) - 2  # start and end tokens take two places


def _wrap(tokenizer: Any, content: list[int]) -> list[int]:
    ids = [tokenizer.bos_token_id, *content, tokenizer.eos_token_id]
    return ids + [tokenizer.pad_token_id] * (int(tokenizer.model_max_length) - len(ids))


def _token_text(tokenizer: Any, token_id: int) -> str:
    return str(tokenizer.convert_ids_to_tokens(int(token_id))).replace("</w>", "")


def _no_trigger_message(prompt: str) -> str:
    near = re.search(r"\bimg\b", prompt, flags=re.IGNORECASE)
    hint = f" (found {near.group(0)!r}: write it in lower case)" if near else ""
    return (f"prompt: must contain the trigger word `{TRIGGER}` right after a class word, "
            f"e.g. {EXAMPLE}{hint}")


def plain_ids(tokenizer: Any, text: str) -> tuple[list[int], str]:
    """Padded ids of a prompt without a trigger word, and the text the window cut off."""
    content = _content_ids(tokenizer, text)
    window = _window(tokenizer)
    dropped = tokenizer.decode(content[window:]) if len(content) > window else ""
    return _wrap(tokenizer, content[:window]), dropped


def check_no_trigger(tokenizer: Any, trigger_id: int, text: str, field: str = "negative_prompt") -> None:
    if trigger_id in _content_ids(tokenizer, text):
        raise PromptError(f"{field}: must not contain the trigger word `{TRIGGER}` "
                          "(it marks where the ID images go, so only the prompt may have it)")


def _find_trigger(tokenizer: Any, trigger_id: int, prompt: str, content: list[int]) -> int:
    at = [i for i, t in enumerate(content) if t == trigger_id]
    if not at:
        raise PromptError(_no_trigger_message(prompt))
    if len(at) > 1:
        raise PromptError(f"prompt: the trigger word `{TRIGGER}` may appear only once (found {len(at)} times); "
                          f"keep the one after the class word, e.g. {EXAMPLE}")
    pos = at[0]
    if pos == 0:
        raise PromptError(f"prompt: the trigger word `{TRIGGER}` must follow a class word such as man, woman "
                          f"or person, e.g. {EXAMPLE}; here nothing comes before it")
    class_token = _token_text(tokenizer, content[pos - 1])
    if not any(ch.isalpha() for ch in class_token):
        raise PromptError(f"prompt: the trigger word `{TRIGGER}` must directly follow a class word such as man, "
                          f"woman or person, e.g. {EXAMPLE}; here it follows {class_token!r}")
    return pos


def check_trigger(tokenizer: Any, trigger_id: int, prompt: str) -> None:
    """The trigger-word rules on the user's own prompt (before a style template adds
    words that could pass for a class word)."""
    _find_trigger(tokenizer, trigger_id, prompt, _content_ids(tokenizer, prompt))


def id_prompt(tokenizer: Any, trigger_id: int, prompt: str, num_images: int) -> IdPrompt:
    """Apply the trigger-word rules to ``prompt`` (the styled prompt) for ``num_images``
    ID images; raises PromptError naming the rule that is broken."""
    content = _content_ids(tokenizer, prompt)
    pos = _find_trigger(tokenizer, trigger_id, prompt, content)
    class_id = content[pos - 1]
    class_token = _token_text(tokenizer, class_id)
    clean = content[:pos] + content[pos + 1:]
    start = pos - 1  # the class token's index in the cleaned content
    expanded = clean[:start] + [class_id] * num_images + clean[start + 1:]
    window = _window(tokenizer)
    if start + num_images > window:
        raise PromptError(
            f"prompt: the trigger word `{TRIGGER}` comes too late: CLIP reads {window} tokens, and with the "
            f"style template and the class word repeated for {num_images} ID image(s) the class word ends at "
            f"token {start + num_images}; move `{TRIGGER}` nearer the start or shorten the prompt")
    dropped = tokenizer.decode(expanded[window:]) if len(expanded) > window else ""
    # positions are shifted by one for the start token
    return IdPrompt(
        id_ids=_wrap(tokenizer, expanded[:window]),
        text_ids=_wrap(tokenizer, clean[:window]),
        class_positions=range(start + 1, start + 1 + num_images),
        class_token=class_token,
        dropped=dropped,
    )


def start_merge_step(style_strength_ratio: float, num_steps: int) -> int:
    """The last step run on the text-only prompt: floor(ratio% of num_steps), at most 30.

    Steps 0..start_merge_step use the text-only prompt and later steps the ID-fused
    one, so a merge step >= num_steps - 1 means the ID images are never used. The
    product is taken on the ratio's decimal value (no float rounding: 29% of 100
    steps is 29; the reference's float arithmetic gives 28 there).
    """
    exact = Fraction(repr(float(style_strength_ratio))) * int(num_steps) / 100
    return min(int(exact), MAX_MERGE_STEP)
