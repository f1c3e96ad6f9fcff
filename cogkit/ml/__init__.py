"""Shared machinery for cogkit's model predictors (the only package besides models/
that imports torch). Import the submodules directly; this package imports nothing.

Modules and their main functions:

* ``cogkit.ml.device``: ``plan_device()`` -> ``DevicePlan`` (device, dtype, vae_dtype,
  fp8, attention, channels_last, fuse_qkv; logs one line with the reasons),
  ``plan_for(device, capability, card)`` (the pure rule table: sm_80+ bf16, older
  CUDA fp16 with an fp32 VAE, fp8 on sm_89+, CPU fp32; COGKIT_DEVICE/COGKIT_DTYPE
  override), ``apply_speedups(pipe, plan)``, ``configure_vae(vae, w, h, batch, plan)``.
* ``cogkit.ml.images``: ``open_image(path, field=, background=)`` (any format, EXIF,
  GIF first frame, alpha composited), ``open_mask``, ``fit_size(w, h, multiple=,
  max_pixels=, max_side=)``, ``resize_image``, ``binarize_mask(mask, size)``
  (white = repaint), ``parse_outpaint(spec, w, h)``, ``outpaint_canvas(img, pads)``,
  ``ImageInputError``.
* ``cogkit.ml.outputs``: ``save_images(images, output_format, output_quality)`` ->
  list of cogkit Paths (fast png/jpg/webp encoders), ``save_image``, ``FORMATS``.
* ``cogkit.ml.seeds``: ``resolve_seed(seed)`` (None -> random, logged),
  ``generators(seed, n)`` (CPU generators seed, seed+1, ...).
* ``cogkit.ml.schedulers``: ``SCHEDULER_NAMES``, ``make_scheduler(name, config,
  trailing=False)``, ``scheduler_name(scheduler)``.
* ``cogkit.ml.weights``: ``resolve_weights(weights, default=)`` (local path, http(s)
  tar/file with parallel ranged download + cache + checks, Hugging Face repo id;
  COG_WEIGHTS; ``one_copy=True`` fetches one copy of a diffusers repo),
  ``resolve_optional(root, folder, env_var, default, tag=)`` (an optional extra:
  ``<root>/<folder>``, the env variable, the default id; None, logged, when unavailable),
  ``diffusers_variant(folder)``, ``download_url``, ``hf_snapshot``, ``check_safetensors``,
  ``WeightsError``.
* ``cogkit.ml.lora``: ``resolve_lora_file(spec)`` (local file/folder, http(s) URL via the
  weights cache, Hugging Face repo -> one ``.safetensors`` file), ``content_hash(file)``,
  ``adapter_name(file)`` (adapters named by content), ``LoraError`` (an InputError).
* ``cogkit.ml.compile``: ``compile_module(module, regional=True)`` (backend from
  COGKIT_COMPILE_BACKEND, else inductor), ``compile_unet_pipeline(pipe)`` (UNet
  regional + whole VAE decoder), ``set_cache_dir(path)``, ``warm_up(fn, runs=)``.
* ``cogkit.ml.fp8``: ``quantize_linears(model, granularity="tensor"|"row")``,
  ``FP8Linear``, ``fp8_matmul_supported(device)``, ``quantize_weight``.
* ``cogkit.ml.progress``: ``DenoiseProgress`` (diffusers ``callback_on_step_end``
  that prints ``[progress] denoising: i/n`` lines), ``quiet_pipeline(pipe)``,
  ``quiet_libraries()`` (no diffusers/transformers loading bars).
* ``cogkit.ml.logs``: ``log(message)`` (stderr, flushed).
* ``cogkit.ml.env``: ``env_flag(name, default=)`` (1/true/yes/on, 0/false/no/off, unset ->
  default, a typo is a ValueError naming the variable), ``env_int(name, default)``; torch-free.
* ``cogkit.ml.errors``: ``InputError`` (a request a model cannot run; every engine raises it).
* ``cogkit.ml.safety``: the image models' optional NSFW filter: ``load_safety_checker(root,
  env_var, plan, tag)`` (``<weights>/safety-checker/``, then ``env_var``, then
  CompVis/stable-diffusion-safety-checker; None with a log line when unavailable),
  ``SafetyChecker``, ``filter_nsfw(checker, images, disabled, tag)``.
* ``cogkit.ml.tiny``: tiny random-weight checkpoints in the real layouts, offline and
  deterministic, for tests, ``bench/gpu_*.py --tiny`` and models/flux/make_tiny_weights.py
  (no pytest needed): ``tiny.tokenizers`` (``clip_tokenizer``, ``t5_tokenizer``),
  ``tiny.sdxl`` (``build_sdxl``, ``build_sdxl_weights`` with every extra, ...),
  ``tiny.flux`` (``build_flux``, ``build_flux_lora``), ``tiny.safety``
  (``build_safety_checker``), ``tiny.photomaker`` (``build_photomaker_weights``),
  ``tiny.llama`` (``build_tiny_llama``). The pytest fixtures over them: tests/tiny_models.py.
* ``cogkit.ml.sampling`` / ``cogkit.ml.llm*``: LLM sampling helpers (owned by the Llama predictor).
"""
