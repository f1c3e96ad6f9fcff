"""Tiny random-weight models, written in the real checkpoint layouts, offline and
deterministic (the same ids and weights in every process). They let every model
predictor run its production code path on a CPU in seconds: tests, benchmark smoke
runs (``bench/gpu_*.py --tiny``) and the main job (models/flux/make_tiny_weights.py).
The outputs are noise; the point is the code path.

Modules (each imports torch/diffusers/transformers only inside its builders):

* ``tokenizers``: ``clip_tokenizer()``, ``t5_tokenizer()`` (byte-level CLIP BPE and
  Unigram T5 over a small word list), ``clip_text_config(tok)``.
* ``sdxl``: ``build_sdxl(dir, turbo=)``, ``build_sdxl_controlnet``, ``build_sdxl_refiner``,
  ``build_sdxl_lora``, ``build_depth_annotator``, ``build_sdxl_weights`` (the SDXL
  predictor's folder with every extra); parts ``sdxl_unet()``, ``sdxl_vae()``.
* ``flux``: ``build_flux(dir, variant="schnell"|"dev")``, ``build_flux_lora``; parts
  ``flux_transformer()``, ``flux_vae()``, ``t5_encoder(tok)``.
* ``safety``: ``build_safety_checker(dir, flag_all=)`` (flags every image, or none).
* ``photomaker``: ``build_photomaker_weights(dir)``, ``build_photomaker_checkpoint``,
  ``id_encoder_state(gen)``, ``lora_state(unet, gen)``.
* ``llama``: ``build_tiny_llama(dir)``, ``build_tokenizer()``.
* ``photos``: ``build_photo_archive(file, n)``, a zip/tar of small pictures of one
  subject (some captioned) for the LoRA trainers.
"""
