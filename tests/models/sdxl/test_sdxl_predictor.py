"""The SDXL predictor, in process (setup() once per session, predict() per test), on
tiny random-weight models: every mode, input formats and sizes, and fidelity with
the raw diffusers pipelines (max abs pixel difference <= 1/255)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image

from cogkit.ml.tiny.safety import build_safety_checker
from tests.tiny_http import serve_folder
from tests.tiny_models import tiny_depth_annotator, tiny_sdxl_lora, tiny_sdxl_turbo, tiny_sdxl_weights  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[3]
SDXL_DIR = REPO / "models" / "sdxl"
DEFAULTS = dict(
    prompt="a photo of a cat", negative_prompt="", image=None, mask=None, width=64, height=64, num_outputs=1,
    scheduler="K_EULER", num_inference_steps=2, guidance_scale=5.0, prompt_strength=0.8, seed=7,
    refine="no_refiner", high_noise_frac=0.8, refine_steps=None, apply_watermark=True, lora_scale=0.6,
    lora_weights=None, disable_safety_checker=False, outpaint=None, controlnet_image=None,
    controlnet_type="canny", controlnet_preprocess=True, controlnet_conditioning_scale=0.75,
    controlnet_start=0.0, controlnet_end=1.0, fast_mode="auto", sizing_strategy="input_image",
    output_format="png", output_quality=80,
)


def load_predictor(weights):
    from cogkit.loader import load_target

    cls = load_target("predict.py:Predictor", SDXL_DIR)
    p = cls()
    p.setup(weights=str(weights))
    return p


@pytest.fixture(scope="session")
def predictor(tiny_sdxl_weights):
    return load_predictor(tiny_sdxl_weights)


def run(predictor, **kw):
    paths = predictor.predict(**{**DEFAULTS, **kw})
    return [Image.open(p) for p in paths]


def px(img) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(np.int16)


def assert_same(a, b):
    a, b = px(a), px(b)
    assert a.shape == b.shape
    assert int(np.abs(a - b).max()) <= 1, f"max abs diff {int(np.abs(a - b).max())}/255"


def gen(seed):
    import torch

    return torch.Generator("cpu").manual_seed(seed)


def raw(cls_name, weights, **kw):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(weights, **kw.pop("load", {}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def noise_image(path, size=(64, 64), seed=0, mode="RGB", fmt=None):
    rs = np.random.RandomState(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = (rs.rand(size[1], size[0], channels) * 255).astype(np.uint8)
    if mode == "RGBA":
        arr[..., 3] = 255
        arr[: size[1] // 2, :, 3] = 0
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
    img.save(path, fmt) if fmt else img.save(path)
    return path


def square_mask(path, size=(64, 64)):
    m = Image.new("L", size, 0)
    m.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    m.save(path)
    return path


# ------------------------------------------------------------------------- fidelity


def test_fidelity_txt2img(predictor, tiny_sdxl_weights):
    (got,) = run(predictor, negative_prompt="blurry", seed=11)
    want = raw("StableDiffusionXLPipeline", tiny_sdxl_weights)(
        "a photo of a cat", negative_prompt="blurry", width=64, height=64, num_inference_steps=2,
        guidance_scale=5.0, generator=gen(11)).images[0]
    assert_same(got, want)


def test_fidelity_img2img(predictor, tiny_sdxl_weights, tmp_path):
    src = noise_image(tmp_path / "in.png")
    (got,) = run(predictor, image=src, prompt_strength=0.6, num_inference_steps=4, seed=3)
    want = raw("StableDiffusionXLImg2ImgPipeline", tiny_sdxl_weights)(
        "a photo of a cat", image=Image.open(src).convert("RGB"), strength=0.6, num_inference_steps=4,
        guidance_scale=5.0, generator=gen(3)).images[0]
    assert_same(got, want)


def test_fidelity_inpaint(predictor, tiny_sdxl_weights, tmp_path):
    src, mask = noise_image(tmp_path / "in.png"), square_mask(tmp_path / "m.png")
    (got,) = run(predictor, image=src, mask=mask, num_inference_steps=3, seed=5)
    want = raw("StableDiffusionXLInpaintPipeline", tiny_sdxl_weights)(
        "a photo of a cat", image=Image.open(src).convert("RGB"), mask_image=Image.open(mask),
        strength=0.8, width=64, height=64, num_inference_steps=3, guidance_scale=5.0,
        generator=gen(5)).images[0]
    assert_same(got, want)


def test_fidelity_controlnet_canny(predictor, tiny_sdxl_weights, tmp_path):
    import cv2
    from diffusers import ControlNetModel

    src = noise_image(tmp_path / "c.png", seed=9)
    (got,) = run(predictor, controlnet_image=src, controlnet_conditioning_scale=0.9, seed=13)
    edges = cv2.Canny(np.asarray(Image.open(src).convert("RGB")), 100, 200)
    cond = Image.fromarray(np.stack([edges] * 3, -1))
    cn = ControlNetModel.from_pretrained(tiny_sdxl_weights / "controlnet-canny")
    want = raw("StableDiffusionXLControlNetPipeline", tiny_sdxl_weights, load={"controlnet": cn})(
        "a photo of a cat", image=cond, width=64, height=64, num_inference_steps=2, guidance_scale=5.0,
        controlnet_conditioning_scale=0.9, generator=gen(13)).images[0]
    assert_same(got, want)
    (plain,) = run(predictor, seed=13)
    assert np.abs(px(got) - px(plain)).max() > 5  # the ControlNet really steers


def test_num_outputs_equal_single_seeded_runs(predictor):
    batch = run(predictor, num_outputs=3, seed=100)
    assert len(batch) == 3
    for i, img in enumerate(batch):
        (single,) = run(predictor, seed=100 + i)
        assert_same(img, single)
    assert np.abs(px(batch[0]) - px(batch[1])).max() > 5


def test_random_seed_is_logged(predictor, capfd):
    run(predictor, seed=None)
    err = capfd.readouterr().err
    assert "Using seed:" in err and "random" in err


def test_progress_lines(predictor, capfd):
    run(predictor, num_inference_steps=3)
    err = capfd.readouterr().err
    assert "[progress] denoising: 1/3" in err and "[progress] denoising: 3/3" in err


# ------------------------------------------------------------------------- image inputs


@pytest.mark.parametrize(
    "fmt,ext,mode",
    [("JPEG", "jpg", "RGB"), ("PNG", "png", "RGB"), ("PNG", "png", "RGBA"), ("PNG", "png", "L"),
     ("GIF", "gif", "RGB"), ("WEBP", "webp", "RGB"), ("WEBP", "webp", "RGBA")],
)
def test_img2img_formats_and_odd_sizes(predictor, tmp_path, fmt, ext, mode):
    src = noise_image(tmp_path / f"in.{ext}", size=(67, 45), mode=mode, fmt=fmt)
    (out,) = run(predictor, image=src)
    assert out.size == (64, 48)  # aspect kept, rounded to multiples of 8


def test_alpha_is_composited_not_dropped(predictor, tmp_path):
    rgba = noise_image(tmp_path / "a.png", mode="RGBA")
    opaque = tmp_path / "white.png"
    img = Image.open(rgba).convert("RGBA")
    flat = Image.new("RGBA", img.size, (255, 255, 255, 255))
    flat.alpha_composite(img)
    flat.convert("RGB").save(opaque)
    assert_same(run(predictor, image=rgba, seed=1)[0], run(predictor, image=opaque, seed=1)[0])


def test_large_input_scaled_down_keeping_aspect(predictor, tmp_path):
    src = noise_image(tmp_path / "big.jpg", size=(1500, 1000), fmt="JPEG")
    (out,) = run(predictor, image=src, num_inference_steps=2, prompt_strength=0.5)
    w, h = out.size
    assert w * h <= 1024 * 1024 and w % 8 == 0 and h % 8 == 0 and abs(w / h - 1.5) < 0.02


def test_width_height_sizing_override(predictor, tmp_path):
    src = noise_image(tmp_path / "in.png", size=(67, 45))
    (out,) = run(predictor, image=src, sizing_strategy="width_height", width=48, height=80)
    assert out.size == (48, 80)


def test_inpaint_mask_resized_with_image(predictor, tmp_path):
    src = noise_image(tmp_path / "in.webp", size=(90, 60), fmt="WEBP")
    mask = square_mask(tmp_path / "m.png", size=(30, 20))
    (out,) = run(predictor, image=src, mask=mask)
    assert out.size == (88, 64)


def test_outpaint_sides(predictor, tmp_path, capfd):
    src = noise_image(tmp_path / "in.png", size=(64, 48))
    (out,) = run(predictor, image=src, outpaint="right=16,up=8")
    assert out.size == (80, 56)
    assert "outpaint: canvas 80x56" in capfd.readouterr().err


def test_outpaint_aspect_ratio(predictor, tmp_path):
    src = noise_image(tmp_path / "in.png", size=(64, 64))
    (out,) = run(predictor, image=src, outpaint="2:1")
    assert out.size == (128, 64)


# ------------------------------------------------------------------------- ControlNet


def test_controlnet_with_img2img_and_inpaint(predictor, tmp_path):
    src, ctl, mask = noise_image(tmp_path / "i.png"), noise_image(tmp_path / "c.png", seed=4), square_mask(tmp_path / "m.png")
    (a,) = run(predictor, image=src, controlnet_image=ctl, controlnet_start=0.2, controlnet_end=0.9)
    (b,) = run(predictor, image=src, mask=mask, controlnet_image=ctl)
    assert a.size == b.size == (64, 64)


def test_controlnet_depth_ready_map_and_missing_annotator(predictor, tmp_path):
    ctl = noise_image(tmp_path / "d.png", mode="L")
    (out,) = run(predictor, controlnet_image=ctl, controlnet_type="depth", controlnet_preprocess=False)
    assert out.size == (64, 64)
    with pytest.raises(ValueError, match="controlnet_type: depth needs a depth-estimation model"):
        run(predictor, controlnet_image=ctl, controlnet_type="depth")


def test_controlnet_depth_with_annotator(predictor, tiny_depth_annotator, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("COGKIT_SDXL_DEPTH_ANNOTATOR", str(tiny_depth_annotator))
    ctl = noise_image(tmp_path / "c.jpg", size=(80, 64), fmt="JPEG")
    try:
        (depth,) = run(predictor, controlnet_image=ctl, controlnet_type="depth", seed=2)
        (canny,) = run(predictor, controlnet_image=ctl, controlnet_type="canny", seed=2)
    finally:
        predictor.engine._depth = None  # later tests see the annotator missing again
    assert "depth annotator loaded" in capfd.readouterr().err
    assert depth.size == (64, 64) and np.abs(px(depth) - px(canny)).max() > 0


# ------------------------------------------------------------------------- refiner, LoRA, fast modes


@pytest.mark.parametrize("refine", ["expert_ensemble_refiner", "base_image_refiner"])
def test_refiner_modes(predictor, refine, capfd):
    (out,) = run(predictor, refine=refine, num_inference_steps=4, refine_steps=4)
    (plain,) = run(predictor, num_inference_steps=4)
    assert out.size == (64, 64) and np.abs(px(out) - px(plain)).max() > 0
    assert "[progress] refining:" in capfd.readouterr().err


def test_refiner_with_inpaint(predictor, tmp_path):
    src, mask = noise_image(tmp_path / "in.png"), square_mask(tmp_path / "m.png")
    outs = run(predictor, image=src, mask=mask, refine="expert_ensemble_refiner", num_inference_steps=4, num_outputs=2)
    assert [o.size for o in outs] == [(64, 64), (64, 64)]


def test_lora_hot_swap(predictor, tiny_sdxl_lora, capfd):
    (base,) = run(predictor, seed=21)
    (lora,) = run(predictor, seed=21, lora_weights=str(tiny_sdxl_lora), lora_scale=1.0)
    assert np.abs(px(base) - px(lora)).max() > 5
    (half,) = run(predictor, seed=21, lora_weights=str(tiny_sdxl_lora), lora_scale=0.5)
    assert np.abs(px(half) - px(lora)).max() > 0
    (again,) = run(predictor, seed=21)  # LoRA off again: exactly the base model
    assert_same(base, again)
    err = capfd.readouterr().err
    assert err.count("LoRA lora_") == 1  # loaded once, then only re-activated


def test_compiled_unet_swaps_loras_in_its_slot_without_recompiling(predictor, tiny_sdxl_weights, tiny_sdxl_lora,
                                                                    tmp_path, monkeypatch, capfd):
    """COGKIT_COMPILE=1 (the CUDA default; the eager backend here): LoRAs are copied into the
    UNet's hot-swap slot, scales written in place, so after setup's warm-up no request
    compiles a new graph, and each image is the uncompiled engine's with the same LoRA."""
    import torch
    import torch._dynamo.utils
    from sdxl_engine import SDXLEngine

    from cogkit.ml.tiny.sdxl import build_sdxl_lora

    other = build_sdxl_lora(tiny_sdxl_weights, tmp_path / "other", seed=5, rank=8)
    monkeypatch.setenv("COGKIT_COMPILE", "1")
    monkeypatch.setenv("COGKIT_COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    try:
        compiled = SDXLEngine(str(tiny_sdxl_weights))
        assert compiled.slot is not None and compiled.compiled
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        plain = predictor.engine
        for lora, scale in ((None, 1.0), (tiny_sdxl_lora, 1.0), (other, 0.8), (tiny_sdxl_lora, 0.5), (None, 1.0)):
            req = dict(seed=21, lora_weights=str(lora) if lora else None, lora_scale=scale)
            assert_same(*(e.run(engine_request(**req))[0] for e in (compiled, plain)))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs, "a LoRA swap recompiled the UNet"
        assert "copied into the hot-swap slot" in capfd.readouterr().err

        # A LoRA the slot cannot hold (rank above it) still works, as its own adapter, and says so.
        big = build_sdxl_lora(tiny_sdxl_weights, tmp_path / "big", seed=6, rank=80)
        req = dict(seed=21, lora_weights=str(big), lora_scale=1.0)
        assert_same(*(e.run(engine_request(**req))[0] for e in (compiled, plain)))
        assert "rank 80 is above the slot's 64; loading it as its own adapter" in capfd.readouterr().err
        (back,) = compiled.run(engine_request(seed=21, lora_weights=str(tiny_sdxl_lora), lora_scale=1.0))
        assert_same(back, plain.run(engine_request(seed=21, lora_weights=str(tiny_sdxl_lora), lora_scale=1.0))[0])
    finally:
        torch._dynamo.reset()


def test_derived_pipelines_keep_the_model_dtype(tiny_sdxl_weights, tmp_path, monkeypatch):
    """img2img, inpaint and ControlNet pipelines share the base's modules; diffusers' from_pipe
    casts them all to fp32 unless told a dtype, which on a GPU would turn the whole model fp32
    on the first img2img request. (bf16 here, on the CPU.)"""
    import sys

    import torch

    sys.path.insert(0, str(SDXL_DIR))
    from sdxl_engine import SDXLEngine

    monkeypatch.setenv("COGKIT_DTYPE", "bf16")
    engine = SDXLEngine(str(tiny_sdxl_weights))
    src = noise_image(tmp_path / "in.png")
    engine.run(engine_request(seed=1, image=str(src), prompt_strength=0.5))
    engine.run(engine_request(seed=1, image=str(src), mask=str(square_mask(tmp_path / "m.png"))))
    for name in ("unet", "vae", "text_encoder_2"):
        assert {p.dtype for p in getattr(engine.base, name).parameters()} == {torch.bfloat16}, name


def test_a_lightning_unet_file_on_a_base_sdxl(tiny_sdxl_weights, tmp_path, monkeypatch, capfd):
    """SDXL-Lightning's way of shipping its UNets: one ``*_unet.safetensors`` in diffusers'
    layout. Given as the weights, it goes on the base SDXL (COGKIT_SDXL_BASE), sets lightning
    mode with the file's own step count, and gives what diffusers gives with that UNet loaded
    and the trailing Euler schedule Lightning asks for."""
    import sys

    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from safetensors.torch import save_file

    sys.path.insert(0, str(SDXL_DIR))
    from sdxl_engine import SDXLEngine

    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl_weights, subfolder="unet")
    torch.manual_seed(9)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # another UNet of the same shape
    file = tmp_path / "sdxl_lightning_2step_unet.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(file))
    monkeypatch.setenv("COGKIT_SDXL_BASE", str(tiny_sdxl_weights))
    engine = SDXLEngine(str(file))
    assert engine.weights_mode == "lightning" and engine.lightning_steps == 2
    err = capfd.readouterr().err
    assert "UNet replaced by sdxl_lightning_2step_unet.safetensors" in err and "distilled for 2 steps" in err
    (got,) = engine.run(engine_request(seed=4, num_inference_steps=None, guidance_scale=None))
    pipe = raw("StableDiffusionXLPipeline", tiny_sdxl_weights, load={"unet": unet})
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    want = pipe("a photo of a cat", width=64, height=64, num_inference_steps=2, guidance_scale=0.0,
                generator=gen(4)).images[0]
    assert_same(got, want)


def test_single_files_that_are_not_a_unet_say_what_to_do(tiny_sdxl_weights, tiny_sdxl_lora, tmp_path, monkeypatch):
    import sys

    from safetensors.torch import save_file
    import torch

    sys.path.insert(0, str(SDXL_DIR))
    from sdxl_engine import SDXLEngine

    from cogkit.ml.weights import WeightsError

    monkeypatch.setenv("COGKIT_SDXL_BASE", str(tiny_sdxl_weights))
    with pytest.raises(WeightsError, match="it is a LoRA: pass it as lora_weights"):
        SDXLEngine(str(tiny_sdxl_lora))
    ckpt = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(ckpt))
    with pytest.raises(WeightsError, match="original-layout single-file checkpoint; give a diffusers folder"):
        SDXLEngine(str(ckpt))
    other = tmp_path / "other_unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(8, 4, 3, 3), "down_blocks.0.x": torch.zeros(1)}, str(other))
    with pytest.raises(WeightsError, match=r"other_unet.safetensors does not fit the base SDXL UNet \(missing: "):
        SDXLEngine(str(other))


def engine_request(**kw):
    from sdxl_engine import Request

    return Request(**{"prompt": "a photo of a cat", "width": 64, "height": 64, "num_inference_steps": 2,
                      "guidance_scale": 5.0, "apply_watermark": False, **kw})


def test_lora_from_url(predictor, tiny_sdxl_weights, tmp_path, monkeypatch, capfd):
    from cogkit.ml.lora import adapter_name
    from cogkit.ml.tiny.sdxl import build_sdxl_lora

    lora = build_sdxl_lora(tiny_sdxl_weights, tmp_path / "served", seed=12)  # a LoRA no other test loads
    monkeypatch.setenv("COGKIT_WEIGHTS_CACHE", str(tmp_path / "cache"))
    with serve_folder(lora.parent) as base:
        url = f"{base}/{lora.name}"
        capfd.readouterr()
        (a,) = run(predictor, seed=21, lora_weights=url, lora_scale=1.0)
        err = capfd.readouterr().err
        assert "downloaded pytorch_lora_weights.safetensors" in err and err.count("LoRA lora_") == 1
        (b,) = run(predictor, seed=21, lora_weights=str(lora), lora_scale=1.0)
        assert_same(a, b)
        (c,) = run(predictor, seed=21, lora_weights=url, lora_scale=1.0)
        err = capfd.readouterr().err
        assert "cache hit" in err and err.count("LoRA lora_") == 0  # the cached file, the same adapter
        assert_same(a, c)
        # adapters are named by content: the URL and the local file are one adapter
        assert list(predictor.engine._adapters).count(adapter_name(lora)) == 1
        with pytest.raises(ValueError, match="^lora_weights: .*answered HTTP 404"):
            run(predictor, lora_weights=url.replace("pytorch", "missing"))


def test_bad_lora(predictor, tmp_path):
    with pytest.raises(ValueError, match="^lora_weights:"):
        run(predictor, lora_weights=str(tmp_path / "nope.safetensors"))


def test_lcm_mode(predictor, capfd):
    (out,) = run(predictor, fast_mode="lcm", num_inference_steps=None, guidance_scale=None)
    err = capfd.readouterr().err
    assert "scheduler=LCM" in err and "steps=6" in err and "guidance=1.5" in err
    assert out.size == (64, 64)
    with pytest.raises(ValueError, match="guidance_scale: lcm mode works with at most 2"):
        run(predictor, fast_mode="lcm", guidance_scale=7.5)
    (plain,) = run(predictor)  # LCM-LoRA is switched off again afterwards
    (plain2,) = run(predictor, fast_mode="off")
    assert_same(plain, plain2)


def test_lightning_mode_on_request(predictor, capfd):
    run(predictor, fast_mode="lightning", num_inference_steps=None, guidance_scale=None)
    err = capfd.readouterr().err
    assert "mode=lightning" in err and "steps=4" in err and "guidance=0" in err


def test_turbo_weights_detected(tiny_sdxl_turbo, capfd):
    p = load_predictor(tiny_sdxl_turbo)
    assert "weights look like: turbo" in capfd.readouterr().err
    (out,) = run(p, num_inference_steps=None, guidance_scale=None)
    err = capfd.readouterr().err
    assert "mode=turbo" in err and "steps=1" in err and "guidance=0" in err
    assert out.size == (64, 64)
    with pytest.raises(ValueError, match="num_inference_steps: turbo mode works with at most 4"):
        run(p, num_inference_steps=10)
    with pytest.raises(ValueError, match="refine"):
        run(p, refine="base_image_refiner", guidance_scale=0.0)


@pytest.mark.parametrize("name", ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL",
                                  "K_EULER", "PNDM", "LCM", "DPM++2M SDE Karras"])
def test_every_scheduler(predictor, name, capfd):
    (out,) = run(predictor, scheduler=name, guidance_scale=2.0 if name == "LCM" else 5.0)
    assert out.size == (64, 64) and f"scheduler={name}" in capfd.readouterr().err


def test_scheduler_does_not_depend_on_earlier_requests(tiny_sdxl_weights, predictor):
    """Each scheduler is built from the weights' own scheduler config, not from the one a
    previous txt2img request left on the pipeline (Karras sigmas or trailing spacing
    would carry over into the next scheduler built)."""
    fresh = load_predictor(tiny_sdxl_weights)
    run(fresh, scheduler="KarrasDPM")
    run(fresh, scheduler="K_EULER_ANCESTRAL", fast_mode="off", num_inference_steps=2)
    assert_same(run(fresh, scheduler="K_EULER")[0], run(predictor, scheduler="K_EULER")[0])
    assert not fresh.engine.scheduler("K_EULER", trailing=False).config.use_karras_sigmas


# ------------------------------------------------------------------------- optional parts, outputs, errors


def test_optional_parts_skipped_and_logged(tiny_sdxl_weights, capfd):
    load_predictor(tiny_sdxl_weights)
    err = capfd.readouterr().err
    assert "safety checker: weights not available; skipping NSFW filtering" in err
    assert "watermark: invisible watermark available" in err  # installed (scripts/test.sh, the image's build.run)


def test_apply_watermark_embeds_the_sdxl_watermark(predictor, tiny_sdxl_weights):
    """Replicate's SDXL default: diffusers' invisible watermark (48 bits, dwtDct), the same pixels
    as diffusers' own pipeline with its watermarker, and readable back from the saved PNG well
    above chance (24 of 48; this tiny model's flat, clipped images blur some bits);
    apply_watermark=false leaves it out. (diffusers marks only images at least 256 wide, so the
    other tests' 64x64 images are never marked.)"""
    import cv2
    from diffusers.pipelines.stable_diffusion_xl.watermark import WATERMARK_BITS
    from imwatermark import WatermarkDecoder

    def bits_read(img) -> int:
        bgr = cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)
        return sum(int(a == b) for a, b in zip(WatermarkDecoder("bits", 48).decode(bgr, "dwtDct"), WATERMARK_BITS))

    (marked,) = run(predictor, width=256, height=256, seed=3, apply_watermark=True)
    (plain,) = run(predictor, width=256, height=256, seed=3, apply_watermark=False)
    want = raw("StableDiffusionXLPipeline", tiny_sdxl_weights, load={"add_watermarker": True})(
        "a photo of a cat", width=256, height=256, num_inference_steps=2, guidance_scale=5.0,
        generator=gen(3)).images[0]
    assert_same(marked, want)
    assert np.abs(px(marked) - px(plain)).max() > 0
    assert bits_read(marked) >= 32 > bits_read(plain), (bits_read(marked), bits_read(plain))


def test_safety_checker_drops_flagged_outputs(tiny_sdxl_weights, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("COGKIT_SDXL_SAFETY_CHECKER", str(build_safety_checker(tmp_path / "sc", flag_all=True)))
    p = load_predictor(tiny_sdxl_weights)
    assert "safety checker loaded from" in capfd.readouterr().err
    with pytest.raises(ValueError, match="NSFW content detected in every output"):
        run(p, num_outputs=2)
    assert len(run(p, num_outputs=2, disable_safety_checker=True)) == 2
    # one flagged of two: that one is dropped, the other returned
    flags = p.engine.safety.flags
    monkeypatch.setattr(p.engine.safety, "flags", lambda images: [True] + [False] * (len(images) - 1))
    (kept,) = run(p, num_outputs=2, seed=40)
    (second,) = run(p, seed=41, disable_safety_checker=True)
    assert_same(kept, second)
    assert "dropped 1 of 2 outputs as NSFW" in capfd.readouterr().err
    monkeypatch.setattr(p.engine.safety, "flags", flags)
    # a checker that flags nothing lets everything through
    monkeypatch.setenv("COGKIT_SDXL_SAFETY_CHECKER", str(build_safety_checker(tmp_path / "ok", flag_all=False)))
    assert len(run(load_predictor(tiny_sdxl_weights), num_outputs=2)) == 2


@pytest.mark.parametrize("fmt,pil", [("webp", "WEBP"), ("jpg", "JPEG"), ("png", "PNG")])
def test_output_formats(predictor, fmt, pil):
    (out,) = run(predictor, output_format=fmt, output_quality=60)
    assert out.format == pil


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(width=60), "width: must be a multiple of 8"),
        (dict(mask="x.png"), "mask: needs an image"),
        (dict(outpaint="left=8"), "outpaint: needs an image"),
        (dict(controlnet_image="x.png", controlnet_start=0.5, controlnet_end=0.5), "controlnet_start: must be below"),
        (dict(image="/nonexistent.png"), "image: file not found"),
        (dict(image=str(REPO / "tests" / "data-none.png"), prompt_strength=0.2), "image: file not found"),
    ],
)
def test_input_errors(predictor, kw, match):
    with pytest.raises(ValueError, match=match):
        run(predictor, **kw)


def test_strength_with_no_steps_refused(predictor, tmp_path):
    with pytest.raises(ValueError, match="prompt_strength: 0.2 of 2 steps is no denoising step"):
        run(predictor, image=noise_image(tmp_path / "i.png"), prompt_strength=0.2)


def test_outpaint_with_mask_refused(predictor, tmp_path):
    src, mask = noise_image(tmp_path / "i.png"), square_mask(tmp_path / "m.png")
    with pytest.raises(ValueError, match="outpaint: builds its own mask"):
        run(predictor, image=src, mask=mask, outpaint="left=8")


# ------------------------------------------------------------------------- compile and fp8 switches


def test_compile_switch_warms_up_and_keeps_outputs(tiny_sdxl_weights, predictor, monkeypatch, capfd):
    monkeypatch.setenv("COGKIT_COMPILE", "1")
    monkeypatch.setenv("COGKIT_COMPILE_BACKEND", "eager")  # inductor on CPU takes minutes; the plumbing is the same
    p = load_predictor(tiny_sdxl_weights)
    err = capfd.readouterr().err
    assert "regional compile of BasicTransformerBlock" in err and "compile warm-up at 64x64: run 1" in err
    assert_same(run(p, seed=5)[0], run(predictor, seed=5)[0])


def test_fp8_switch(tiny_sdxl_weights, predictor, tiny_sdxl_lora, monkeypatch, capfd):
    monkeypatch.setenv("COGKIT_SDXL_FP8", "1")
    p = load_predictor(tiny_sdxl_weights)
    assert "stored as float8_e4m3fn (row scales, dequantize matmul)" in capfd.readouterr().err
    (q,) = run(p, seed=5)
    (full,) = run(predictor, seed=5)
    assert np.abs(px(q) - px(full)).mean() < 8  # fp8 weights: close, not equal
    with pytest.raises(ValueError, match="lora_weights: LoRAs cannot be applied to the fp8 UNet"):
        run(p, lora_weights=str(tiny_sdxl_lora))


def test_turbo_img2img_default_steps_cover_strength(tiny_sdxl_turbo, tmp_path, capfd):
    p = load_predictor(tiny_sdxl_turbo)
    (out,) = run(p, image=noise_image(tmp_path / "i.png"), prompt_strength=0.5, num_inference_steps=None,
                 guidance_scale=None)
    assert out.size == (64, 64) and "steps=2" in capfd.readouterr().err


def test_fp16_variant_weights_folder(tmp_path, capfd):
    """A folder saved as diffusers' fp16 variant (as the Hub's SDXL repos are) loads."""
    from diffusers import StableDiffusionXLPipeline

    from cogkit.ml.tiny.sdxl import build_sdxl

    src = build_sdxl(tmp_path / "plain")
    StableDiffusionXLPipeline.from_pretrained(src).save_pretrained(tmp_path / "v", variant="fp16")
    assert list((tmp_path / "v" / "unet").glob("*.fp16.safetensors"))
    p = load_predictor(tmp_path / "v")
    (a,) = run(p, seed=4)
    (b,) = run(load_predictor(src), seed=4)
    assert_same(a, b)


def test_unreachable_weights_fail_setup_clearly(tmp_path, monkeypatch):
    from cogkit.ml.weights import WeightsError

    monkeypatch.delenv("COG_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match="not an existing local path"):
        load_predictor(tmp_path / "nothing-here")
    with pytest.raises(WeightsError, match="not in the local cache and HF_HUB_OFFLINE=1"):
        load_predictor("acme/no-such-sdxl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="not a diffusers SDXL folder"):
        load_predictor(tmp_path / "empty")


def test_fast_mode_detected_from_weights(tmp_path):
    import json
    import sys

    sys.path.insert(0, str(SDXL_DIR))
    from sdxl_engine import detect_fast_mode

    def folder(name, unet_cfg):
        d = tmp_path / name
        (d / "unet").mkdir(parents=True)
        (d / "unet" / "config.json").write_text(json.dumps(unet_cfg))
        return d

    assert detect_fast_mode(folder("sdxl-base", {})) == "standard"
    assert detect_fast_mode(folder("lcm-sdxl", {"time_cond_proj_dim": 256})) == "lcm"
    assert detect_fast_mode(folder("SDXL-Lightning-4step", {})) == "lightning"
    assert detect_fast_mode(folder("models--stabilityai--sdxl-turbo/snapshots/abc", {})) == "turbo"
