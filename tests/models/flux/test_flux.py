"""The FLUX predictor on tiny random-weight checkpoints (built at test time):
fidelity against diffusers' own pipelines, sizes, outputs, go_fast (fp8 dequantize
path on the CPU), the saved fp8 checkpoint, the prompt cache, the safety checker,
input errors, weights resolution, and the torch-free schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cogkit.ml.tiny.safety import build_safety_checker
from tests.tiny_models import flux_fp8_cache, tiny_flux_dev, tiny_flux_schnell  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[3]
FLUX_DIR = REPO / "models" / "flux"
sys.path.insert(0, str(FLUX_DIR))

pytestmark = pytest.mark.usefixtures("flux_fp8_cache")


@pytest.fixture(scope="module")
def schnell(tiny_flux_schnell, flux_fp8_cache):
    from flux_engine import FluxEngine

    return FluxEngine(tiny_flux_schnell)


@pytest.fixture(scope="module")
def dev(tiny_flux_dev, flux_fp8_cache):
    from flux_engine import FluxEngine

    return FluxEngine(tiny_flux_dev)


def pixels(img: Image.Image | str | Path) -> np.ndarray:
    if not isinstance(img, Image.Image):
        img = Image.open(img)
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def max_diff(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def raw_pipeline(kind: str, root: Path):
    import diffusers

    cls = {"txt2img": diffusers.FluxPipeline, "img2img": diffusers.FluxImg2ImgPipeline,
           "inpaint": diffusers.FluxInpaintPipeline}[kind]
    pipe = cls.from_pretrained(root)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 400x300 RGBA PNG with a transparent corner (the shared rules composite it)."""
    rng = np.random.RandomState(0)
    arr = (rng.rand(300, 400, 4) * 255).astype("uint8")
    arr[..., 3] = 255
    arr[:40, :40, 3] = 0
    path = tmp_path_factory.mktemp("flux-inputs") / "photo.png"
    Image.fromarray(arr, "RGBA").save(path)
    return path


@pytest.fixture(scope="module")
def mask(tmp_path_factory) -> Path:
    arr = np.zeros((300, 400), dtype="uint8")
    arr[60:220, 120:300] = 255
    path = tmp_path_factory.mktemp("flux-inputs") / "mask.jpg"
    Image.fromarray(arr, "L").save(path, quality=95)
    return path


# ----------------------------------------------------------------------------- variants and setup


def test_variant_comes_from_the_weights(schnell, dev, monkeypatch) -> None:
    from flux_engine import detect_variant

    assert schnell.variant.name == "schnell" and schnell.variant.max_steps == 4
    assert dev.variant.name == "dev" and dev.variant.default_steps == 28 and dev.variant.default_guidance == 3.5
    monkeypatch.setenv("COGKIT_FLUX_VARIANT", "dev")
    assert detect_variant({"guidance_embeds": False}) == "dev"
    monkeypatch.setenv("COGKIT_FLUX_VARIANT", "pro")
    with pytest.raises(ValueError, match="COGKIT_FLUX_VARIANT: must be schnell or dev"):
        detect_variant({})


def test_default_hub_weights_fail_fast_offline(monkeypatch) -> None:
    from flux_engine import FluxEngine

    from cogkit.ml.weights import WeightsError

    monkeypatch.delenv("COG_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "cogkit-empty-hf-cache"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="black-forest-labs/FLUX.1-schnell.*HF_HUB_OFFLINE=1"):
        FluxEngine()
    assert time.perf_counter() - t0 < 10


def test_a_folder_that_is_not_flux_is_refused(tmp_path) -> None:
    from flux_engine import FluxEngine

    from cogkit.ml.weights import WeightsError

    with pytest.raises(WeightsError, match="not a diffusers FLUX folder"):
        FluxEngine(tmp_path)


# ----------------------------------------------------------------------------- fidelity (go_fast off)


@pytest.mark.parametrize("variant", ["schnell", "dev"])
def test_txt2img_equals_diffusers(variant, schnell, dev, tiny_flux_schnell, tiny_flux_dev) -> None:
    from flux_engine import Request

    engine, root = (schnell, tiny_flux_schnell) if variant == "schnell" else (dev, tiny_flux_dev)
    steps = 4 if variant == "schnell" else 6
    [out] = engine.predict(Request("a red cat on a beach", aspect_ratio="3:2", megapixels="0.25",
                                   num_inference_steps=steps, seed=42, go_fast=False, output_format="png"))
    ref = raw_pipeline("txt2img", root)(
        "a red cat on a beach", width=608, height=416, num_inference_steps=steps, guidance_scale=3.5,
        max_sequence_length=engine.variant.max_sequence_length, generator=seeded(42),
    ).images[0]
    assert Image.open(out).size == (608, 416)
    assert max_diff(out, ref) <= 1  # 1/255; measured 0


def test_img2img_equals_diffusers(dev, tiny_flux_dev, photo) -> None:
    from flux_engine import Request

    from cogkit.ml import images as mlimages

    [out] = dev.predict(Request("a dog", image=str(photo), prompt_strength=0.6, megapixels="0.25",
                                num_inference_steps=5, guidance=5.0, seed=7, go_fast=False, output_format="png"))
    size = Image.open(out).size
    assert size == (576, 432)  # 4:3 at 0.25 MP, multiples of 16
    init = mlimages.resize_image(mlimages.open_image(photo), size)  # the shared image rules
    ref = raw_pipeline("img2img", tiny_flux_dev)(
        "a dog", image=init, width=size[0], height=size[1], strength=0.6, num_inference_steps=5,
        guidance_scale=5.0, max_sequence_length=512, generator=seeded(7),
    ).images[0]
    assert max_diff(out, ref) <= 1


def test_inpaint_equals_diffusers(schnell, tiny_flux_schnell, photo, mask) -> None:
    from flux_engine import Request

    from cogkit.ml import images as mlimages

    [out] = schnell.predict(Request("a dog", image=str(photo), mask=str(mask), megapixels="match_input",
                                    seed=3, go_fast=False, output_format="png"))
    size = Image.open(out).size
    assert size == (400, 304)  # the input's own size, rounded to multiples of 16
    init = mlimages.resize_image(mlimages.open_image(photo), size)
    hard_mask = mlimages.binarize_mask(mlimages.open_mask(mask), size)
    ref = raw_pipeline("inpaint", tiny_flux_schnell)(
        "a dog", image=init, mask_image=hard_mask, width=size[0], height=size[1], strength=0.8,
        num_inference_steps=4, max_sequence_length=256, generator=seeded(3),
    ).images[0]
    assert max_diff(out, ref) <= 1


def test_go_fast_false_is_deterministic_and_seeds_matter(schnell) -> None:
    from flux_engine import Request

    a, b, c = (schnell.generate(Request("a cat", megapixels="0.25", seed=s, go_fast=False))[0] for s in (1, 1, 2))
    assert max_diff(a, b) == 0
    assert max_diff(a, c) > 32


# ----------------------------------------------------------------------------- go_fast on the CPU (fp8)


def test_go_fast_fp8_difference_is_bounded(schnell, dev, record_property) -> None:
    """fp8 (e4m3, 3 mantissa bits) rounds each block weight by at most 2^-4 of itself
    (about 3.6 % RMS). The blocks add into a residual stream, so the transformer's
    velocity prediction, and the latents that integrate it, move by at most a few
    percent: we bound the final latents' relative L2 error by 5 % and the decoded
    image by PSNR >= 35 dB and mean |diff| <= 2/255. (Measured on the tiny models:
    0.16 %, ~59 dB, 0.08/255; bench/RESULTS.md.)"""
    from flux_engine import Request

    from cogkit.ml.fp8 import FP8Linear

    for engine in (schnell, dev):
        assert engine.fast_report["fp8"] and engine.fast_report["layers"] > 0
        assert not engine.fast_report["scaled_mm"]  # the CPU dequantizes
        assert any(isinstance(m, FP8Linear) for m in engine.fast.modules())
        assert not any(isinstance(m, FP8Linear) for m in engine.pipe.transformer.modules())
        emb, pooled = engine.encode("a red cat")
        latents = {}
        for fast in (False, True):
            latents[fast] = engine.pipeline("txt2img", fast)(
                prompt_embeds=emb, pooled_prompt_embeds=pooled, width=512, height=512, num_inference_steps=4,
                guidance_scale=3.5, max_sequence_length=engine.variant.max_sequence_length,
                generator=seeded(11), output_type="latent").images
        rel = float((latents[True] - latents[False]).norm() / latents[False].norm())
        eager, fast = (pixels(engine.generate(Request("a red cat", megapixels="0.25", seed=11, go_fast=g,
                                                      num_inference_steps=4))[0]) for g in (False, True))
        d = np.abs(eager - fast).astype(np.float64)
        psnr = 10 * np.log10(255**2 / max((d**2).mean(), 1e-12))
        record_property(f"{engine.variant.name}_fp8", {"latent_rel_l2": rel, "psnr_db": psnr,
                                                       "mean_abs": d.mean(), "max_abs": d.max()})
        print(f"{engine.variant.name}: fp8 vs bf16-path latents rel L2 {rel:.4f}, image PSNR {psnr:.1f} dB, "
              f"mean |diff| {d.mean():.3f}/255, max {d.max():.0f}/255")
        assert 0 < rel <= 0.05
        assert psnr >= 35 and d.mean() <= 2


def test_fp8_checkpoint_is_saved_once_and_reused(tiny_flux_schnell, flux_fp8_cache, monkeypatch, capfd) -> None:
    import flux_fast
    from flux_engine import FluxEngine

    saved = sorted(flux_fp8_cache.glob("*.safetensors"))
    assert saved, "the module's first engine should have saved a pre-quantised transformer"
    meta = flux_fast.describe_checkpoint(saved[0])
    assert meta["format"] == "cogkit-flux-fp8" and meta["granularity"] == "row" and meta["tensors"] > 0

    def no_quantising(*args, **kwargs):
        raise AssertionError("quantize_weight called although a saved fp8 transformer exists")

    monkeypatch.setattr(flux_fast, "quantize_weight", no_quantising)
    engine = FluxEngine(tiny_flux_schnell)
    assert engine.fast_report["source"].startswith("loaded ")
    assert "fp8: 20 block linears" in capfd.readouterr().err

    # A damaged file is quantised again (and replaced), never trusted.
    monkeypatch.undo()
    path = Path(engine.fast_report["source"].removeprefix("loaded "))
    path.write_bytes(b"not a safetensors file")
    engine = FluxEngine(tiny_flux_schnell)
    assert engine.fast_report["source"].startswith("quantised, saved to")
    assert flux_fast.describe_checkpoint(path)["format"] == "cogkit-flux-fp8"


def test_go_fast_can_be_switched_off_at_setup(tiny_flux_schnell, monkeypatch, capfd) -> None:
    from flux_engine import FluxEngine, Request

    monkeypatch.setenv("COGKIT_FLUX_GO_FAST", "0")
    engine = FluxEngine(tiny_flux_schnell)
    assert engine.fast is None
    [img] = engine.generate(Request("a cat", megapixels="0.25", seed=1, go_fast=True))
    assert img.size == (512, 512)
    assert "go_fast: not available in this setup; running the bf16 path" in capfd.readouterr().err


# ----------------------------------------------------------------------------- sizes, outputs


@pytest.mark.parametrize("aspect_ratio", ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3",
                                          "9:16", "9:21"])
def test_every_preset_generates_its_size(schnell, aspect_ratio) -> None:
    from flux_engine import Request

    from tests.models.flux.test_flux_sizes import REFERENCE

    [img] = schnell.generate(Request("a cat", aspect_ratio=aspect_ratio, megapixels="0.25",
                                     num_inference_steps=1, seed=0, go_fast=aspect_ratio != "1:1"))
    assert img.size == REFERENCE[aspect_ratio][1]


def test_compiled_go_fast_serves_every_preset_after_the_warm_up(tiny_flux_schnell, monkeypatch) -> None:
    """The compile cache after setup's warm-up ("presets", the CUDA default when compiled):
    all 11 aspect ratios at both megapixel settings, and a batch of 2, run without one new
    graph (here with the eager backend: dynamo's guards, and so its graph count, are the
    same as inductor's; the inductor run of dynamic sizes is test_flux_slow)."""
    import torch
    import torch._dynamo.utils
    from flux_engine import FluxEngine, Request

    from flux_sizes import ASPECT_RATIOS, MEGAPIXELS

    monkeypatch.setenv("COGKIT_FLUX_COMPILE", "1")
    monkeypatch.setenv("COGKIT_COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    try:
        engine = FluxEngine(tiny_flux_schnell, warmup="presets")
        assert engine.compiled
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert graphs > 0
        seen = set()
        for mp in MEGAPIXELS:
            for ar in ASPECT_RATIOS:
                [img] = engine.generate(Request("a cat", aspect_ratio=ar, megapixels=mp, num_inference_steps=1,
                                                seed=0, go_fast=True), quiet=True)
                seen.add(img.size)
        pair = engine.generate(Request("a cat", megapixels="0.25", num_outputs=2, num_inference_steps=1,
                                       seed=0, go_fast=True), quiet=True)
        assert len(seen) == 2 * len(ASPECT_RATIOS) and len(pair) == 2
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs, "a preset recompiled after warm-up"
    finally:
        torch._dynamo.reset()


def test_full_megapixel_and_custom_sizes(schnell) -> None:
    from flux_engine import Request

    [img] = schnell.generate(Request("a cat", num_inference_steps=1, seed=0))
    assert img.size == (1024, 1024)
    [img] = schnell.generate(Request("a cat", aspect_ratio="custom", width=300, height=257,
                                     num_inference_steps=1, seed=0))
    assert img.size == (304, 272)


def test_num_outputs_are_the_consecutive_seeds(schnell) -> None:
    from flux_engine import Request

    paths = schnell.predict(Request("a cat", megapixels="0.25", num_outputs=3, seed=100, go_fast=False,
                                    output_format="png"))
    assert [p.name for p in paths] == ["out-0.png", "out-1.png", "out-2.png"]
    singles = [schnell.generate(Request("a cat", megapixels="0.25", seed=100 + i, go_fast=False))[0]
               for i in range(3)]
    for path, single in zip(paths, singles):
        assert max_diff(path, single) <= 1  # a batch equals separate runs with seed, seed+1, ...
    assert max_diff(paths[0], paths[1]) > 32


@pytest.mark.parametrize("fmt, pil_format", [("webp", "WEBP"), ("jpg", "JPEG"), ("png", "PNG")])
def test_output_formats(schnell, fmt, pil_format) -> None:
    from flux_engine import Request

    paths = schnell.predict(Request("a cat", megapixels="0.25", num_outputs=2, num_inference_steps=1, seed=5,
                                    output_format=fmt, output_quality=90))
    assert len(paths) == 2
    for p in paths:
        assert p.suffix == "." + fmt
        with Image.open(p) as img:
            assert img.format == pil_format and img.size == (512, 512)


def test_output_quality_changes_lossy_files(schnell) -> None:
    from flux_engine import Request

    sizes = [schnell.predict(Request("a cat", megapixels="0.25", num_inference_steps=1, seed=5,
                                     output_format="jpg", output_quality=q))[0].stat().st_size for q in (10, 95)]
    assert sizes[0] < sizes[1]


# ----------------------------------------------------------------------------- prompt cache


def test_prompt_embeddings_are_cached(schnell) -> None:
    import torch

    prompt = f"a prompt seen twice {time.time()}"
    before = (schnell.prompts.hits, schnell.prompts.misses)
    a = schnell.encode(prompt)
    b = schnell.encode(prompt)
    assert (schnell.prompts.hits, schnell.prompts.misses) == (before[0] + 1, before[1] + 1)
    assert a[0] is b[0] and torch.equal(a[1], b[1])
    for i in range(schnell.prompts.size + 1):
        schnell.encode(f"filler {i}")
    assert len(schnell.prompts.items) == schnell.prompts.size  # least recently used dropped
    assert not any(k[0] == prompt for k in schnell.prompts.items)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_inference_steps=5), "num_inference_steps: FLUX.1-schnell runs 1 to 4 steps, got 5"),
    (dict(mask="mask.png"), "mask: needs an image to inpaint"),
    (dict(aspect_ratio="16:9", width=512), "width: only used when aspect_ratio is 'custom'"),
    (dict(aspect_ratio="custom", width=512), "height: required when aspect_ratio is 'custom'"),
    (dict(image="/nonexistent/photo.png"), "image: file not found"),
    (dict(lora_weights="/nonexistent/lora.safetensors"), "lora_weights: '/nonexistent/lora.safetensors' is not"),
    (dict(lora_scale=5.0, lora_weights="x/y"), "lora_scale: must be between -1 and 3"),
])
def test_bad_requests_name_the_input(schnell, kwargs, message) -> None:
    from flux_engine import InputError, Request

    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        schnell.generate(Request("a cat", megapixels="0.25", seed=0, **kwargs))


def test_image_errors(schnell, photo, tmp_path) -> None:
    from flux_engine import InputError, Request

    with pytest.raises(InputError, match="prompt_strength: must be above 0"):
        schnell.generate(Request("a cat", image=str(photo), prompt_strength=0.0, seed=0))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not an image")
    with pytest.raises(InputError, match="image: not a readable image"):
        schnell.generate(Request("a cat", image=str(junk), seed=0))
    with pytest.raises(InputError, match="mask: not a readable image"):
        schnell.generate(Request("a cat", image=str(photo), mask=str(junk), seed=0))


def test_guidance_on_schnell_is_ignored_with_a_log_line(schnell, capfd) -> None:
    from flux_engine import Request

    a = schnell.generate(Request("a cat", megapixels="0.25", seed=9, guidance=7.0, go_fast=False))[0]
    assert "guidance=7 has no effect on FLUX.1-schnell" in capfd.readouterr().err
    b = schnell.generate(Request("a cat", megapixels="0.25", seed=9, go_fast=False))[0]
    assert max_diff(a, b) == 0


# ----------------------------------------------------------------------------- safety checker


def test_safety_checker_drops_flagged_images(tiny_flux_schnell, tmp_path, monkeypatch) -> None:
    from flux_engine import FluxEngine, InputError, Request

    monkeypatch.setenv("COGKIT_FLUX_SAFETY_CHECKER", str(build_safety_checker(tmp_path / "strict", flag_all=True)))
    strict = FluxEngine(tiny_flux_schnell)
    assert strict.safety is not None
    req = Request("a cat", megapixels="0.25", num_outputs=2, num_inference_steps=1, seed=1)
    with pytest.raises(InputError, match="NSFW content detected in every output"):
        strict.predict(req)
    req.disable_safety_checker = True
    assert len(strict.predict(req)) == 2

    monkeypatch.setenv("COGKIT_FLUX_SAFETY_CHECKER", str(build_safety_checker(tmp_path / "lenient", flag_all=False)))
    lenient = FluxEngine(tiny_flux_schnell)
    req.disable_safety_checker = False
    assert len(lenient.predict(req)) == 2


# ----------------------------------------------------------------------------- the predictor


@pytest.fixture(scope="module")
def predictor(tiny_flux_dev, flux_fp8_cache):
    from cogkit.loader import instantiate, load_target

    p = instantiate(load_target("predict.py:Predictor", FLUX_DIR))
    p.setup(weights=str(tiny_flux_dev))
    return p


def test_predictor_in_process(predictor, photo, mask) -> None:
    from cogkit import Path as CogPath

    out = predictor.predict(
        prompt="a cat", aspect_ratio="1:1", width=None, height=None, image=CogPath(photo), prompt_strength=0.9,
        mask=CogPath(mask), num_outputs=2, num_inference_steps=3, guidance=2.0, seed=-1, output_format="jpg",
        output_quality=80, disable_safety_checker=False, go_fast=True, lora_weights=None, lora_scale=1.0,
        megapixels="0.25",
    )
    assert len(out) == 2 and all(isinstance(p, CogPath) and p.suffix == ".jpg" for p in out)
    assert Image.open(out[0]).size == (576, 432)
    assert predictor.engine.variant.name == "dev"


def test_schema_is_torch_free_and_follows_cog_flux() -> None:
    """`cogkit schema` in models/flux must not import torch/diffusers (fast, no GPU)."""
    code = (
        "import sys, json, io, contextlib\n"
        "from cogkit.cli.main import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    rc = main(['schema'])\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy, 'doc': json.loads(buf.getvalue())}))\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=FLUX_DIR, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0 and result["heavy"] == [] and elapsed < 30
    props = result["doc"]["components"]["schemas"]["Input"]["properties"]
    order = sorted(props, key=lambda k: props[k]["x-order"])
    assert order == ["prompt", "aspect_ratio", "width", "height", "image", "prompt_strength", "mask", "num_outputs",
                     "num_inference_steps", "guidance", "seed", "output_format", "output_quality",
                     "disable_safety_checker", "go_fast", "lora_weights", "lora_scale", "megapixels"]
    assert result["doc"]["components"]["schemas"]["Input"]["required"] == ["prompt"]
    assert props["go_fast"]["default"] is True and props["output_format"]["default"] == "webp"
    assert props["num_outputs"]["maximum"] == 4 and props["lora_scale"]["minimum"] == -1


def test_make_tiny_weights_needs_no_test_dependencies(tmp_path) -> None:
    """The main job (scripts/demo.sh) installs only '.[models]': the script must run
    with pytest unimportable, from any working directory."""
    code = (
        "import runpy, sys\n"
        "sys.modules['pytest'] = None  # import pytest now raises ImportError\n"
        f"sys.argv = ['make_tiny_weights.py', {str(tmp_path / 'w')!r}]\n"
        f"runpy.run_path({str(FLUX_DIR / 'make_tiny_weights.py')!r}, run_name='__main__')\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wrote a tiny random FLUX.1-schnell checkpoint" in out.stdout
    cfg = json.loads((tmp_path / "w" / "transformer" / "config.json").read_text())
    assert cfg["num_layers"] == 1 and not cfg["guidance_embeds"]
