"""Tiny random-weight FLUX.1 models.

* ``build_flux(dir, variant="schnell"|"dev")``: a FLUX pipeline folder saved with
  save_pretrained: transformer (1 double + 1 single block, 78 k params), VAE x8 with
  4 latent channels, CLIP and T5 text encoders with the offline tokenizers of
  cogkit.ml.tiny.tokenizers. The variant is what the real checkpoints differ in: dev
  has a guidance embedding and a resolution-dependent timestep shift.
* ``build_flux_lora(flux_dir, file)``: a random rank-4 LoRA on the transformer's
  attention and feed-forward projections, in diffusers' file layout
  (``transformer.<module>.lora_A/lora_B.weight``); ``text_encoder=True`` adds LoRA
  layers on the CLIP text encoder too.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from cogkit.ml.tiny.tokenizers import clip_text_config, clip_tokenizer, t5_tokenizer

VARIANTS = ("schnell", "dev")


def flux_transformer(guidance_embeds: bool) -> Any:
    """1 double + 1 single block, 78 k parameters."""
    from diffusers import FluxTransformer2DModel

    # in_channels = 4 x VAE latent channels (2x2 packing); sum(axes_dims_rope) = attention_head_dim;
    # joint_attention_dim = T5 d_model; pooled_projection_dim = CLIP hidden size.
    return FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=guidance_embeds, axes_dims_rope=[4, 4, 8],
    )


def flux_vae() -> Any:
    """AutoencoderKL x8 with 4 latent channels, FLUX's shift/scale and no quant convs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=64,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )


def t5_encoder(tok: Any) -> Any:
    """A 2-layer, 32-wide T5 encoder for ``tok``."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(tok), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=0,
    ))


def flux_scheduler(variant: str) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    if variant == "dev":  # dev shifts timesteps by resolution; schnell (distilled) does not
        return FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        )
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)


def build_flux(out: str | os.PathLike[str], *, variant: str = "schnell", seed: int = 0) -> pathlib.Path:
    """A FLUX pipeline folder (save_pretrained); dev has a guidance embedding and a
    resolution-dependent timestep shift, schnell neither."""
    import torch
    from diffusers import FluxPipeline
    from transformers import CLIPTextModel

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    out = pathlib.Path(out)
    tok, tok2 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    pipe = FluxPipeline(
        transformer=flux_transformer(guidance_embeds=variant == "dev"),
        vae=flux_vae(),
        text_encoder=CLIPTextModel(clip_text_config(tok)),
        tokenizer=tok,
        text_encoder_2=t5_encoder(tok2),
        tokenizer_2=tok2,
        scheduler=flux_scheduler(variant),
    )
    pipe.save_pretrained(out)
    return out


def build_flux_lora(
    flux_dir: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    seed: int = 3,
    rank: int = 4,
    text_encoder: bool = False,
) -> pathlib.Path:
    """A random LoRA saved as one .safetensors file in diffusers' layout."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out_file = pathlib.Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)

    def randomize(model) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    transformer = FluxTransformer2DModel.from_pretrained(flux_dir, subfolder="transformer")
    transformer.add_adapter(LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                        "to_add_out", "proj_mlp", "proj_out", "ff.net.2"],
    ))
    randomize(transformer)
    layers = {"transformer_lora_layers": get_peft_model_state_dict(transformer)}
    if text_encoder:
        from peft import inject_adapter_in_model
        from transformers import CLIPTextModel

        # peft's own injection: transformers' add_adapter wants a newer peft than is released
        te = inject_adapter_in_model(
            LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
            CLIPTextModel.from_pretrained(flux_dir, subfolder="text_encoder"),
        )
        randomize(te)
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(te)
    FluxPipeline.save_lora_weights(out_file.parent, weight_name=out_file.name, **layers)
    return out_file
