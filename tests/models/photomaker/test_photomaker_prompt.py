"""PhotoMaker's prompt rules on the tiny offline CLIP tokenizer (no model): the trigger
word and class word, every error naming its rule, 1 and 4 ID images, the 77-token
window, the merge step and the style templates."""

from __future__ import annotations

import pathlib
import sys

import pytest

from cogkit.ml.tiny.tokenizers import clip_tokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "models" / "photomaker"))

import photomaker_prompt as P  # noqa: E402
from photomaker_styles import DEFAULT_STYLE, STYLE_NAMES, STYLES, apply_style  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    t = clip_tokenizer()
    t.trigger = P.add_trigger_token(t)
    return t


def content(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False).input_ids


def test_one_image_keeps_the_tokens_and_marks_the_class_word(tok):
    p = P.id_prompt(tok, tok.trigger, "a photo of a man img, smiling", 1)
    before = content(tok, "a photo of a man")
    after = content(tok, ", smiling")
    want = [tok.bos_token_id, *before, *after, tok.eos_token_id]
    assert p.id_ids[: len(want)] == want and p.text_ids == p.id_ids
    assert len(p.id_ids) == 77 and set(p.id_ids[len(want):]) == {tok.pad_token_id}
    assert p.class_positions == range(len(before), len(before) + 1)
    assert p.id_ids[len(before)] == before[-1] and p.class_token == "an"  # "man" is 'm' + 'an' here
    assert p.dropped == ""


def test_four_images_repeat_the_class_token_four_times(tok):
    p = P.id_prompt(tok, tok.trigger, "a photo of a man img, smiling", 4)
    before, after = content(tok, "a photo of a man"), content(tok, ", smiling")
    cls = before[-1]
    assert p.id_ids[: len(before) + 3 + len(after) + 2] == [
        tok.bos_token_id, *before, cls, cls, cls, *after, tok.eos_token_id]
    assert p.class_positions == range(len(before), len(before) + 4)
    assert p.text_ids[: len(before) + len(after) + 2] == [tok.bos_token_id, *before, *after, tok.eos_token_id]


@pytest.mark.parametrize("prompt, rule", [
    ("a photo of a man", "must contain the trigger word `img` right after a class word, e.g. 'a photo of a man img'"),
    ("a photo of a man IMG", "found 'IMG': write it in lower case"),
    ("an imgur photo of a man", "must contain the trigger word `img`"),  # inside a word it is no trigger
    ("a man img and a woman img", "may appear only once (found 2 times)"),
    ("img a photo of a man", "must follow a class word such as man, woman or person"),
    ("a photo of a man, img", "must directly follow a class word such as man, woman or person, "
                              "e.g. 'a photo of a man img'; here it follows ','"),
])
def test_trigger_word_errors_name_the_rule(tok, prompt, rule):
    with pytest.raises(P.PromptError) as err:
        P.id_prompt(tok, tok.trigger, prompt, 1)
    assert str(err.value).startswith("prompt: ") and rule in str(err.value)


def test_negative_prompt_must_not_have_the_trigger(tok):
    P.check_no_trigger(tok, tok.trigger, "ugly, blurry, images")
    with pytest.raises(P.PromptError, match=r"^negative_prompt: must not contain the trigger word `img`"):
        P.check_no_trigger(tok, tok.trigger, "ugly img")


def test_long_prompt_is_cut_to_the_clip_window_like_sdxl(tok):
    tail = " and a red sky" * 40
    p = P.id_prompt(tok, tok.trigger, "a photo of a man img" + tail, 2)
    assert len(p.id_ids) == len(p.text_ids) == 77
    assert p.id_ids[0] == tok.bos_token_id and p.id_ids[-1] == tok.eos_token_id
    assert p.text_ids[-1] == tok.eos_token_id
    assert p.dropped and p.dropped.strip().endswith("sky")
    # the text-only ids are what diffusers' encode_prompt feeds the encoder for the same text
    want = tok("a photo of a man" + tail, padding="max_length", max_length=77, truncation=True).input_ids
    assert p.text_ids == want
    ids, dropped = P.plain_ids(tok, "ugly" + tail)
    assert ids == tok("ugly" + tail, padding="max_length", max_length=77, truncation=True).input_ids and dropped


def test_trigger_outside_the_window_is_an_error_exactly_at_the_edge(tok):
    filler = "a " * 40
    n_fill = len(content(tok, filler + "m"))  # "man" is 'm' + 'an': the class token follows these
    filler = "a " * (40 + 74 - n_fill)        # now the class token 'an' is content index 74, the window's last
    prompt = filler + "man img, smiling"
    assert len(content(tok, filler + "m")) == 74
    p = P.id_prompt(tok, tok.trigger, prompt, 1)
    assert p.class_positions == range(75, 76) and p.id_ids[76] == tok.eos_token_id
    with pytest.raises(P.PromptError, match=r"^prompt: the trigger word `img` comes too late: CLIP reads 75 tokens"):
        P.id_prompt(tok, tok.trigger, prompt, 2)
    with pytest.raises(P.PromptError, match="comes too late"):
        P.id_prompt(tok, tok.trigger, "a " * 100 + "man img", 1)


@pytest.mark.parametrize("ratio, steps, merge", [
    (20, 20, 4),      # the defaults: steps 0-4 text-only
    (15, 20, 3),      # lowest ratio
    (50, 20, 10),     # highest ratio
    (15, 1, 0), (50, 1, 0), (50, 2, 1),
    (50, 100, 30),    # capped at 30
    (29, 100, 29),    # exact decimal arithmetic (float gives 28)
    (33.3, 30, 9),
    (100, 4, 4),      # 100 %: no step left for the ID embedding
])
def test_start_merge_step(ratio, steps, merge):
    assert P.start_merge_step(ratio, steps) == merge


def test_styles_are_the_reference_eleven_default_first(tok):
    assert len(STYLE_NAMES) == 11 and STYLE_NAMES[0] == DEFAULT_STYLE == "Photographic (Default)"
    assert set(STYLE_NAMES) == set(STYLES)
    for name in STYLE_NAMES:
        pos, neg = apply_style(name, "a man img", "blurry")
        assert "a man img" in pos and neg.endswith(" blurry")
        assert content(tok, pos).count(tok.trigger) == 1 and tok.trigger not in content(tok, neg)
    assert apply_style("(No style)", "a man img", "") == ("a man img", " ")
    assert apply_style("Photographic (Default)", "a man img", "blurry") == (
        "cinematic photo a man img . 35mm photograph, film, bokeh, professional, 4k, highly detailed",
        "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed, ugly blurry")
    with pytest.raises(ValueError, match="^style_name: unknown style"):
        apply_style("Nope", "a man img")
