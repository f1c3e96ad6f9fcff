"""The PhotoMaker predictor in process, on a tiny random SDXL plus a tiny CLIP vision
tower and fuse module saved in TencentARC's checkpoint layout (cogkit/ml/tiny/photomaker.py)
and loaded by the predictor's own setup(): 1 and 4 ID images, every style, the merge
step at the style_strength_ratio boundaries (watched at the UNet's input), the fused
embedding reaching the UNet, num_outputs and seeds, errors, checkpoint formats."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from cogkit.ml.tiny.photomaker import NATIVE_SIZE, build_photomaker_checkpoint
from cogkit.ml.tiny.safety import build_safety_checker
from tests.tiny_models import tiny_photomaker_weights  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[3]
PM_DIR = REPO / "models" / "photomaker"
DEFAULTS = dict(
    input_image=None, input_image2=None, input_image3=None, input_image4=None,
    prompt="a photo of a man img", style_name="(No style)", negative_prompt="ugly", num_steps=4,
    style_strength_ratio=20, num_outputs=1, guidance_scale=5.0, seed=7, disable_safety_checker=False,
    output_format="png", output_quality=80,
)


def load_predictor(weights):
    from cogkit.loader import load_target

    p = load_target("predict.py:Predictor", PM_DIR)()
    p.setup(weights=str(weights))
    return p


@pytest.fixture(scope="session")
def predictor(tiny_photomaker_weights):
    return load_predictor(tiny_photomaker_weights)


@pytest.fixture(scope="session")
def faces(tmp_path_factory) -> list[pathlib.Path]:
    """Four 'faces' in different formats and sizes: PNG, WEBP with alpha, GIF, large JPEG."""
    d = tmp_path_factory.mktemp("faces")
    out = []
    for i, (name, size, mode) in enumerate([("a.png", (60, 80), "RGB"), ("b.webp", (90, 50), "RGBA"),
                                            ("c.gif", (40, 40), "RGB"), ("d.jpg", (1500, 1100), "RGB")]):
        arr = (np.random.RandomState(i).rand(size[1], size[0], 4 if mode == "RGBA" else 3) * 255).astype(np.uint8)
        if mode == "RGBA":
            arr[: size[1] // 3, :, 3] = 0
        Image.fromarray(arr, mode).save(d / name)
        out.append(d / name)
    return out


def run(predictor, **kw) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in predictor.predict(**{**DEFAULTS, **kw})]


def px(img) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


def engine_request(predictor, faces, **kw):
    from photomaker_engine import Request

    base = dict(images=[str(f) for f in faces], prompt=DEFAULTS["prompt"], negative_prompt="ugly",
                style_name="(No style)", num_steps=4, seed=7)
    return Request(**{**base, **kw})


class UNetInputs:
    """Records the prompt embeddings and pooled text embeddings of every UNet call."""

    def __init__(self, unet):
        self.calls: list[tuple] = []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.calls.append((kwargs["encoder_hidden_states"].clone(), kwargs["added_cond_kwargs"]["text_embeds"].clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def reference_embeddings(engine, req):
    """Text-only, ID-fused and negative embeddings computed directly from the engine's parts."""
    import torch

    prep = engine.prepare(req)
    with torch.inference_mode():
        e = engine.encode(prep)
        pixels = engine.id_encoder.preprocess(prep.images)
        e["fused"] = engine.id_encoder(pixels, e["id"], prep.id_prompts[1].class_positions)
    return prep, e


# ----------------------------------------------------------------------------- outputs


def test_one_id_image(predictor, faces, capsys):
    (img,) = run(predictor, input_image=faces[0])
    assert img.size == (NATIVE_SIZE, NATIVE_SIZE)
    err = capsys.readouterr().err
    assert "[photomaker] 1 ID image(s) on class word 'an'" in err and "[progress] denoising: 4/4" in err
    assert "ID embedding used from step 2 of 4" in err  # 20 % of 4 steps = 0: step 0 text-only


def test_four_id_images_of_every_format(predictor, faces, capsys):
    outs = run(predictor, input_image=faces[0], input_image2=faces[1], input_image3=faces[2],
               input_image4=faces[3], num_outputs=2, output_format="webp")
    assert len(outs) == 2 and all(o.size == (64, 64) for o in outs)
    assert "4 ID image(s)" in capsys.readouterr().err
    one = run(predictor, input_image=faces[0], num_outputs=2)
    assert not np.array_equal(px(outs[0]), px(one[0]))


def test_every_style(predictor, faces):
    from photomaker_styles import STYLE_NAMES, STYLES

    seen = {}
    for name in STYLE_NAMES:
        prep = predictor.engine.prepare_text(engine_request(predictor, faces[:1], style_name=name), 1)
        positive, negative = STYLES[name]
        assert prep.prompt == positive.replace("{prompt}", "a photo of a man img")
        assert prep.negative_prompt == negative + " ugly"
        (img,) = run(predictor, input_image=faces[0], style_name=name, num_steps=2)
        seen[name] = px(img).tobytes()
    assert len(set(seen.values())) == len(STYLE_NAMES)  # each template changes the image


def test_num_outputs_are_the_seeds_seed_plus_i(predictor, faces):
    batch = run(predictor, input_image=faces[0], input_image2=faces[1], num_outputs=3, seed=11)
    singles = [run(predictor, input_image=faces[0], input_image2=faces[1], seed=s)[0] for s in (11, 12, 13)]
    for b, s in zip(batch, singles):
        assert int(np.abs(px(b) - px(s)).max()) <= 1
    assert not np.array_equal(px(singles[0]), px(singles[1]))
    again = run(predictor, input_image=faces[0], input_image2=faces[1], seed=11)[0]
    assert np.array_equal(px(again), px(singles[0]))


def test_random_seed_is_logged(predictor, faces, capsys):
    run(predictor, input_image=faces[0], seed=None, num_steps=1)
    assert "Using seed: " in capsys.readouterr().err


def test_no_cfg_at_guidance_1(predictor, faces):
    a = run(predictor, input_image=faces[0], guidance_scale=1.0, num_outputs=2)
    assert len(a) == 2


# ----------------------------------------------------------------------------- the merge


@pytest.mark.parametrize("ratio, steps, merge", [(15, 20, 3), (50, 20, 10), (20, 20, 4), (50, 70, 30)])
def test_merge_step_at_the_unet(predictor, faces, ratio, steps, merge):
    """Steps 0..merge get the text-only prompt, later ones the ID-fused prompt and the
    ID prompt's pooled embedding; the negative half never changes."""
    import torch

    engine = predictor.engine
    req = engine_request(predictor, faces[:2], style_strength_ratio=ratio, num_steps=steps)
    prep, e = reference_embeddings(engine, req)
    assert prep.merge_step == merge
    with UNetInputs(engine.pipe.unet) as seen:
        engine.run(req)
    assert len(seen.calls) == steps
    for i, (hidden, pooled) in enumerate(seen.calls):
        negative, positive = hidden.chunk(2)
        neg_pooled, pos_pooled = pooled.chunk(2)
        assert torch.equal(negative[0], e["negative"][0]) and torch.equal(neg_pooled[0], e["negative_pooled"][0])
        want, want_pooled = (e["text"], e["text_pooled"]) if i <= merge else (e["fused"], e["id_pooled"])
        assert torch.equal(positive[0], want[0]), f"step {i}: wrong prompt embeddings (merge step {merge})"
        assert torch.equal(pos_pooled[0], want_pooled[0]), f"step {i}: wrong pooled embeddings"


def test_fused_embedding_reaches_the_unet_only_at_the_class_rows(predictor, faces):
    import torch

    engine = predictor.engine
    req = engine_request(predictor, faces[:1], num_steps=3, style_strength_ratio=20)
    prep, e = reference_embeddings(engine, req)
    row = prep.id_prompts[1].class_positions.start
    with UNetInputs(engine.pipe.unet) as seen:
        engine.run(req)
    last = seen.calls[-1][0].chunk(2)[1][0]  # merged step, conditional half
    differs = (last != e["text"][0]).any(dim=-1).nonzero().flatten().tolist()
    assert differs == [row]
    assert torch.equal(last[row], e["fused"][0, row])


def test_changing_the_id_image_changes_the_output_unless_never_merged(predictor, faces):
    engine = predictor.engine

    def image(face, ratio):
        return px(engine.run(engine_request(predictor, [face], style_strength_ratio=ratio))[0])

    assert not np.array_equal(image(faces[0], 20), image(faces[1], 20))
    assert np.array_equal(image(faces[0], 100), image(faces[1], 100))  # 100 %: every step text-only


def test_without_merge_it_is_sdxl_on_the_text_only_prompt(predictor, faces):
    """ratio 100 = plain SDXL (LoRA fused) on the prompt without `img`: the engine's
    prompt encoding equals diffusers' encode_prompt, and so do the pixels (the batched
    encoding differs by float rounding only)."""
    import torch

    engine = predictor.engine
    req = engine_request(predictor, faces[:1], style_strength_ratio=100, seed=3)
    with torch.inference_mode():
        e = engine.encode(engine.prepare(req))
        want = engine.pipe.encode_prompt("a photo of a man", negative_prompt=" ugly", device="cpu")
    for got, ref in zip((e["text"], e["negative"], e["text_pooled"], e["negative_pooled"]), want):
        assert torch.allclose(got, ref, atol=1e-5)
    got = engine.run(req)[0]
    want = engine.pipe("a photo of a man", negative_prompt=" ugly", num_inference_steps=4, guidance_scale=5.0,
                       generator=torch.Generator().manual_seed(3)).images[0]
    assert int(np.abs(px(got) - px(want)).max()) <= 1


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kw, message", [
    (dict(prompt="a photo of a man"), "prompt: must contain the trigger word `img` right after a class word"),
    (dict(prompt="img, a photo of a man"), "prompt: the trigger word `img` must follow a class word"),
    # checked on the user's prompt: the style's own words ("cinematic photo ...") are no class word
    (dict(prompt="img a photo of a man", style_name="Photographic (Default)"),
     "prompt: the trigger word `img` must follow a class word"),
    (dict(prompt="a man img and a woman img"), "prompt: the trigger word `img` may appear only once"),
    (dict(negative_prompt="ugly img"), "negative_prompt: must not contain the trigger word `img`"),
    (dict(prompt="a " * 80 + "man img"), "prompt: the trigger word `img` comes too late"),
])
def test_trigger_word_errors(predictor, faces, kw, message):
    with pytest.raises(ValueError) as err:
        run(predictor, input_image=faces[0], **kw)
    assert str(err.value).startswith(message)


def test_unreadable_id_image_names_its_field(predictor, faces, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="^input_image3: not a readable image"):
        run(predictor, input_image=faces[0], input_image3=bad)


def test_long_prompt_is_truncated_and_logged(predictor, faces, capsys):
    (img,) = run(predictor, input_image=faces[0], prompt="a photo of a man img" + " with red sky" * 30)
    assert "this part was cut off: " in capsys.readouterr().err and img.size == (64, 64)


# ----------------------------------------------------------------------------- components


def test_clip_preprocessing_matches_transformers(predictor, faces):
    from transformers import CLIPImageProcessorPil

    enc = predictor.engine.id_encoder
    imgs = [Image.open(f).convert("RGB") for f in faces]
    ours = enc.preprocess(imgs).numpy()
    s = enc.image_size
    ref = CLIPImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s})(
        imgs, return_tensors="np").pixel_values
    assert ours.shape == ref.shape == (4, 3, s, s)
    assert np.abs(ours - ref).max() < 1e-5
    # a 3 x 20000 strip is trimmed to 3 x 12 before the resize (no gigabyte intermediate)
    strip = Image.fromarray((np.random.RandomState(5).rand(20000, 3, 3) * 255).astype(np.uint8))
    assert enc.preprocess([strip]).shape == (1, 3, s, s)


def test_safetensors_checkpoint_gives_the_same_images(predictor, faces, tiny_photomaker_weights, tmp_path):
    other = tmp_path / "st"
    shutil.copytree(tiny_photomaker_weights, other, ignore=shutil.ignore_patterns("photomaker-v1.bin"))
    build_photomaker_checkpoint(other, other / "photomaker-v1.safetensors")  # same seed, same tensors
    p2 = load_predictor(other)
    a = run(predictor, input_image=faces[0], input_image2=faces[2])[0]
    b = run(p2, input_image=faces[0], input_image2=faces[2])[0]
    assert np.array_equal(px(a), px(b))


def test_safety_checker_drops_flagged_outputs(predictor, faces, tmp_path):
    from cogkit.ml.safety import SafetyChecker

    engine = predictor.engine
    saved = engine.safety
    try:
        engine.safety = SafetyChecker(build_safety_checker(tmp_path / "flag", flag_all=True),
                                      engine.plan.device, engine.plan.dtype)
        with pytest.raises(ValueError, match="NSFW content detected in every output"):
            run(predictor, input_image=faces[0], num_steps=1)
        assert len(run(predictor, input_image=faces[0], num_steps=1, disable_safety_checker=True)) == 1
        engine.safety = SafetyChecker(build_safety_checker(tmp_path / "pass", flag_all=False),
                                      engine.plan.device, engine.plan.dtype)
        assert len(run(predictor, input_image=faces[0], num_steps=1, num_outputs=2)) == 2
    finally:
        engine.safety = saved


# ----------------------------------------------------------------------------- weights errors


def _setup_error(weights) -> str:
    from cogkit.ml.weights import WeightsError
    from photomaker_engine import PhotoMakerEngine

    with pytest.raises(WeightsError) as err:
        PhotoMakerEngine.from_weights(weights)
    return str(err.value)


def test_weights_errors(predictor, tiny_photomaker_weights, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COG_WEIGHTS", raising=False)
    # nothing given: the public default base, not cached, offline -> at once, naming it
    assert "SG161222/RealVisXL_V3.0" in _setup_error(None) and "HF_HUB_OFFLINE=1" in _setup_error(None)
    # not an SDXL folder
    assert "is not a diffusers SDXL folder (no model_index.json)" in _setup_error(tmp_path)
    # a base without the checkpoint: the published one is looked up (offline: not there)
    base = tmp_path / "base"
    shutil.copytree(tiny_photomaker_weights, base, ignore=shutil.ignore_patterns("photomaker-v1.bin"))
    msg = _setup_error(base)
    assert "no PhotoMaker checkpoint (photomaker-v1.safetensors or photomaker-v1.bin)" in msg
    assert "TencentARC/PhotoMaker" in msg
    # COGKIT_PHOTOMAKER_CHECKPOINT points at one elsewhere
    monkeypatch.setenv("COGKIT_PHOTOMAKER_CHECKPOINT", str(tiny_photomaker_weights / "photomaker-v1.bin"))
    from photomaker_engine import PhotoMakerEngine

    assert PhotoMakerEngine.from_weights(base).id_encoder.image_size == 32
    monkeypatch.delenv("COGKIT_PHOTOMAKER_CHECKPOINT")
    # a checkpoint without lora_weights
    state = torch.load(tiny_photomaker_weights / "photomaker-v1.bin", weights_only=True)
    torch.save({"id_encoder": state["id_encoder"]}, base / "photomaker-v1.bin")
    assert "is not a PhotoMaker checkpoint (needs `id_encoder` and `lora_weights`" in _setup_error(base)
    # tensors that do not fit together
    bad = dict(state["id_encoder"], **{"visual_projection_2.weight": torch.zeros(48, 64)})
    torch.save({"id_encoder": bad, "lora_weights": state["lora_weights"]}, base / "photomaker-v1.bin")
    assert "id_encoder: tensors do not fit PhotoMaker v1's ID encoder" in _setup_error(base)
    # a consistent ID encoder made for other text-encoder widths (16 + 48 instead of 32 + 32)
    other = dict(state["id_encoder"], **{"visual_projection.weight": torch.zeros(16, 64),
                                         "visual_projection_2.weight": torch.zeros(48, 64)})
    torch.save({"id_encoder": other, "lora_weights": state["lora_weights"]}, base / "photomaker-v1.bin")
    assert "makes 16+48-wide embeddings but this SDXL base's text encoders are 32+32 wide" in _setup_error(base)
    # a LoRA for layers this UNet lacks
    lora = {k.replace("down_blocks.1", "down_blocks.7"): v for k, v in state["lora_weights"].items()}
    torch.save({"id_encoder": state["id_encoder"], "lora_weights": lora}, base / "photomaker-v1.bin")
    assert "lora_weights" in _setup_error(base)


def test_compiled_engine_warms_up_and_gives_the_same_images(predictor, faces, tiny_photomaker_weights, monkeypatch,
                                                            capsys):
    """COGKIT_COMPILE=1 (the CUDA default) on the CPU with the eager backend: the
    compile + warm-up path of setup runs, and outputs equal the uncompiled engine's."""
    from photomaker_engine import PhotoMakerEngine

    monkeypatch.setenv("COGKIT_COMPILE", "1")
    monkeypatch.setenv("COGKIT_COMPILE_BACKEND", "eager")
    compiled = PhotoMakerEngine.from_weights(tiny_photomaker_weights)
    err = capsys.readouterr().err
    assert "regional compile" in err and "[ml] compile warm-up: run 1" in err
    req = engine_request(predictor, faces[:2], num_steps=3)
    a, b = compiled.run(req)[0], predictor.engine.run(req)[0]
    assert int(np.abs(px(a) - px(b)).max()) <= 1
