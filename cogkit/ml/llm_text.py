"""Text around an LLM: building the prompt, streaming detokenisation, stop sequences.

* ``build_prompt(tokenizer, prompt, system_prompt, prompt_template)`` -> token ids
  and the formatted text (a Python-format template, else the tokenizer's chat
  template, else the bare prompt).
* ``IncrementalDecoder``: token ids in, text deltas out. Joined, the deltas equal
  ``tokenizer.decode(all_ids, skip_special_tokens=True)``; a multi-byte character
  split over several tokens is held back until it is complete.
* ``StopMatcher``: text deltas in, text safe to show out; holds back text that may
  be the start of a stop sequence and cuts at the first complete one, so a stop
  sequence never reaches the output even when it is split across tokens.
* ``parse_stop_sequences("a, b")`` -> ``["a", "b"]``.
"""

from __future__ import annotations

import string
import weakref
from collections.abc import Sequence
from typing import Any

TEMPLATE_FIELDS = ("prompt", "system_prompt")


def parse_stop_sequences(text: str | Sequence[str] | None) -> list[str]:
    """Comma-separated stop sequences (as Replicate's predictors take them).

    Spaces around each item are removed (``"a, b"`` means ``a`` and ``b``), newlines
    and tabs are kept, empty items are dropped. A list is taken as it is.
    """
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        item = item.strip(" ") if isinstance(text, str) else item
        if item and item not in out:
            out.append(item)
    return out


def check_prompt_template(template: str) -> None:
    """Raise ValueError unless ``template`` uses only ``{prompt}`` / ``{system_prompt}`` and has ``{prompt}``."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(
            f"prompt_template: not a valid Python format string ({exc}); write literal braces as {{{{ and }}}}"
        ) from None
    unknown = sorted({f for f in fields if f not in TEMPLATE_FIELDS})
    if unknown:
        raise ValueError(
            f"prompt_template: unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)}; "
            "only {prompt} and {system_prompt} are filled in (write literal braces as {{ and }})"
        )
    if "prompt" not in fields:
        raise ValueError("prompt_template: must contain the {prompt} placeholder")


def build_prompt(
    tokenizer: Any, prompt: str, system_prompt: str | None = None, prompt_template: str | None = None
) -> tuple[list[int], str]:
    """Token ids and text of the model input.

    With ``prompt_template`` the text is ``template.format(prompt=, system_prompt=)``
    and the tokenizer adds its special tokens (BOS) unless the text already starts
    with them. Otherwise a chat template (system message only when ``system_prompt``
    is non-empty; folded into the user message when the template rejects a system
    role) is rendered with the generation prompt; without one the bare prompt is used.
    """
    if prompt_template:
        check_prompt_template(prompt_template)
        text = prompt_template.format(prompt=prompt, system_prompt=system_prompt or "")
        bos = getattr(tokenizer, "bos_token", None)
        add_special = not (bos and text.startswith(bos))
        return list(tokenizer(text, add_special_tokens=add_special)["input_ids"]), text
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2 TemplateError: e.g. a template that raises on a system role
            template_errors = ("TemplateError", "TemplateSyntaxError", "UndefinedError")
            if not system_prompt or type(exc).__name__ not in template_errors:
                raise
            merged = [{"role": "user", "content": f"{system_prompt}\n\n{prompt}"}]
            text = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]), text
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"]), prompt


# tokenizer -> (its length when read, its byte-fallback ids): every request makes a decoder,
# and reading a 128k vocabulary (Llama 3) takes ~80 ms, on the event loop of the predictor.
_BYTE_IDS: weakref.WeakKeyDictionary[Any, tuple[int, frozenset[int]]] = weakref.WeakKeyDictionary()


def _byte_fallback_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of SentencePiece-style byte tokens (``<0x41>``). A run of them decodes as one
    unit (all U+FFFD when invalid UTF-8), so text is held back until the run ends.
    Read once per tokenizer (again if its vocabulary grows)."""
    try:
        size = len(tokenizer)
        cached = _BYTE_IDS.get(tokenizer)
    except TypeError:  # no len() or not weak-referenceable: read every time
        size, cached = -1, None
    if cached is not None and cached[0] == size:
        return cached[1]
    try:
        vocab = tokenizer.get_vocab()
    except Exception:
        return frozenset()
    ids = frozenset(i for t, i in vocab.items() if len(t) == 6 and t.startswith("<0x") and t.endswith(">"))
    if size >= 0:
        _BYTE_IDS[tokenizer] = (size, ids)
    return ids


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas.

    Each step decodes a short window (the tokens since the last emitted text plus the
    new ones) and emits what it adds over the window's already-emitted part; decoding
    windows rather than single tokens keeps the word-initial spaces of SentencePiece /
    byte-level tokenizers right. A window ending in U+FFFD (an unfinished UTF-8
    character) or in a byte-fallback token waits for the next token, so earlier output
    never needs correcting; ``flush()`` emits whatever is left.
    """

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # end of the emitted part of the window
        # After these the text may still change: byte-fallback tokens (their run decodes as one
        # unit) and skipped special tokens (invisible, so a byte run can continue across them).
        self._wait_after = _byte_fallback_ids(tokenizer)
        if skip_special_tokens:
            self._wait_after |= frozenset(getattr(tokenizer, "all_special_ids", ()))

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=self.skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def _delta(self, final: bool) -> str:
        done = self._decode(self.ids[self._prefix : self._read])
        full = self._decode(self.ids[self._prefix :])
        if not final and (
            len(full) <= len(done) or full.endswith("\ufffd") or self.ids[-1] in self._wait_after
        ):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return full[len(done) :]

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        return self._delta(final=False)

    def flush(self) -> str:
        if self._read == len(self.ids):
            return ""
        return self._delta(final=True)


class StopMatcher:
    """Cuts a text stream at the first stop sequence; see the module docstring."""

    def __init__(self, stop_sequences: Sequence[str]) -> None:
        self.stops = [s for s in stop_sequences if s]
        self._pending = ""

    def feed(self, text: str, *, check: bool = True) -> tuple[str, bool]:
        """(text safe to emit now, stopped). With ``check=False`` complete stop
        sequences are let through (used before ``min_new_tokens`` is reached)."""
        if not self.stops:
            return text, False
        pending = self._pending + text
        if check:
            hits = [i for i in (pending.find(s) for s in self.stops) if i >= 0]
            if hits:
                self._pending = ""
                return pending[: min(hits)], True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(pending)), hold, -1):
                if pending.endswith(stop[:k]):
                    hold = k
                    break
        self._pending = pending[len(pending) - hold :] if hold else ""
        return pending[: len(pending) - hold], False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
