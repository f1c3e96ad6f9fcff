"""Tiny random-weight diffusion models built at test time (no hub, no downloads).

Builders (plain functions, usable from tests, benches and scripts):

* ``clip_tokenizer()`` / ``t5_tokenizer()``: deterministic offline tokenizers (the
  ids are the same in every process, so golden comparisons hold).
* ``build_sdxl(dir)``: a tiny SDXL pipeline folder (UNet 8/16 channels, VAE x8,
  two CLIP text encoders) saved with save_pretrained; ``turbo=True`` saves it with
  the trailing-timestep Euler-ancestral scheduler SDXL-Turbo ships with.
* ``build_sdxl_controlnet(sdxl_dir, dir)``: a ControlNet matching it, with its
  zero-initialised layers randomised so the control image changes the output.
* ``build_sdxl_refiner(dir)``: a refiner-style img2img pipeline (aesthetic-score
  conditioning, text encoder 2 only).
* ``build_sdxl_lora(sdxl_dir, dir)``: a random rank-4 UNet LoRA
  (``pytorch_lora_weights.safetensors``).
* ``build_depth_annotator(dir)``: a tiny DPT depth estimator (transformers layout).
* ``build_safety_checker(dir, flag_everything=)``: a tiny CompVis safety checker that
  flags every image (or none).
* ``build_sdxl_weights(dir)``: the SDXL predictor's weights folder: the base
  pipeline plus ``controlnet-canny/``, ``controlnet-depth/``, ``refiner/`` and
  ``lcm-lora/`` extras.

Pytest fixtures (session-scoped; import them into a test module with
``from tests.tiny_models import tiny_sdxl_weights  # noqa: F401``): ``tiny_sdxl_weights``,
``tiny_sdxl_turbo``, ``tiny_sdxl_lora``, ``tiny_depth_annotator``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest

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


def clip_tokenizer(model_max_length: int = 77):
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


def t5_tokenizer():
    """A Unigram T5 tokenizer over WORDS (pad 0, eos 1, unk 2)."""
    from transformers import T5Tokenizer

    chars = sorted(set("".join(WORDS)) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(sorted(set(WORDS)))]
    vocab += [(c, -5.0) for c in chars]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    tok.model_max_length = 512
    return tok


def _clip_config(tok):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, latent_channels=4, sample_size=64, norm_num_groups=8,
    )


def _unet(cross_attention_dim: int = 64, class_dim: int = 80):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=class_dim,  # 6*8 + te2.projection_dim (5*8+32 with aesthetics)
        cross_attention_dim=cross_attention_dim,          # te1.hidden + te2.hidden
        norm_num_groups=8,
    )


def build_sdxl(out: str | os.PathLike[str], *, seed: int = 0, turbo: bool = False) -> pathlib.Path:
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out = pathlib.Path(out)
    tok, tok2 = clip_tokenizer(), clip_tokenizer()
    torch.manual_seed(seed)
    unet = _unet()
    vae = _vae()
    te = CLIPTextModel(_clip_config(tok))
    te2 = CLIPTextModelWithProjection(_clip_config(tok2))
    sched_kw = dict(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear")
    if turbo:
        scheduler = EulerAncestralDiscreteScheduler(timestep_spacing="trailing", **sched_kw)
    else:
        scheduler = EulerDiscreteScheduler(timestep_spacing="leading", **sched_kw)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.save_pretrained(out)
    return out


def build_sdxl_controlnet(sdxl_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, seed: int = 1) -> pathlib.Path:
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sdxl_dir, subfolder="unet")
    # 3 stride-2 convs in the conditioning embedding = log2(VAE scale factor 8)
    cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cn.parameters():
            if not p.abs().any():  # ControlNet starts with zero convs: no effect until trained
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    cn.save_pretrained(out)
    return pathlib.Path(out)


def build_sdxl_refiner(out: str | os.PathLike[str], *, seed: int = 2) -> pathlib.Path:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    tok2 = clip_tokenizer()
    torch.manual_seed(seed)
    unet = _unet(cross_attention_dim=32, class_dim=72)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=_vae(), text_encoder=None, text_encoder_2=CLIPTextModelWithProjection(_clip_config(tok2)),
        tokenizer=None, tokenizer_2=tok2, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear", timestep_spacing="leading"),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False,
    )
    pipe.save_pretrained(out)
    return pathlib.Path(out)


def build_sdxl_lora(sdxl_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, seed: int = 3, rank: int = 4) -> pathlib.Path:
    """A random UNet LoRA on the attention projections, in diffusers' file layout."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(sdxl_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    StableDiffusionXLPipeline.save_lora_weights(out, unet_lora_layers=get_peft_model_state_dict(unet))
    return pathlib.Path(out) / "pytorch_lora_weights.safetensors"


def build_depth_annotator(out: str | os.PathLike[str], *, seed: int = 6) -> pathlib.Path:
    """A tiny DPT depth-estimation model + image processor (transformers layout)."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(seed)
    cfg = DPTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, backbone_out_indices=[0, 1, 2, 3],
                    num_attention_heads=4, intermediate_size=37, neck_hidden_sizes=[16, 32, 32, 32],
                    reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16, is_hybrid=False)
    DPTForDepthEstimation(cfg).save_pretrained(out)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(out)
    return pathlib.Path(out)


def build_safety_checker(out: str | os.PathLike[str], *, flag_everything: bool, seed: int = 8) -> pathlib.Path:
    """A tiny CompVis safety checker + CLIP image processor. Its concept thresholds are
    set so that it flags every image (or none): random weights decide nothing useful."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=1000, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=30, patch_size=2, hidden_size=32, projection_dim=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=37),
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(cfg)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0 if flag_everything else 10.0)
        checker.special_care_embeds_weights.fill_(10.0)
    checker.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(out)
    return pathlib.Path(out)


def build_sdxl_weights(out: str | os.PathLike[str]) -> pathlib.Path:
    """The SDXL predictor's weights folder with every optional extra present."""
    out = pathlib.Path(out)
    build_sdxl(out)
    build_sdxl_controlnet(out, out / "controlnet-canny", seed=1)
    build_sdxl_controlnet(out, out / "controlnet-depth", seed=4)
    build_sdxl_refiner(out / "refiner")
    build_sdxl_lora(out, out / "lcm-lora", seed=5)
    return out


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_sdxl_weights(tmp_path_factory) -> pathlib.Path:
    return build_sdxl_weights(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sdxl_turbo(tmp_path_factory) -> pathlib.Path:
    return build_sdxl(tmp_path_factory.mktemp("tiny-sdxl-turbo") / "sdxl-turbo", seed=7, turbo=True)


@pytest.fixture(scope="session")
def tiny_depth_annotator(tmp_path_factory) -> pathlib.Path:
    return build_depth_annotator(tmp_path_factory.mktemp("tiny-dpt") / "depth-annotator")


@pytest.fixture(scope="session")
def tiny_sdxl_lora(tmp_path_factory, tiny_sdxl_weights) -> pathlib.Path:
    return build_sdxl_lora(tiny_sdxl_weights, tmp_path_factory.mktemp("tiny-sdxl-lora"), seed=11)


def copy_tree(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def read_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())
