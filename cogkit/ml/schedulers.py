"""Schedulers by the names Replicate's SDXL models use.

``make_scheduler(name, config)`` builds the named scheduler from a pipeline's
current scheduler config (``pipe.scheduler.config``), so the model's beta
schedule and prediction type carry over. ``trailing=True`` spaces timesteps the
way few-step models (SDXL-Turbo/Lightning) were distilled with.
"""

from __future__ import annotations

from typing import Any

# name -> (diffusers class name, extra config)
_TABLE: dict[str, tuple[str, dict[str, Any]]] = {
    "DDIM": ("DDIMScheduler", {}),
    "DPMSolverMultistep": ("DPMSolverMultistepScheduler", {}),
    "HeunDiscrete": ("HeunDiscreteScheduler", {}),
    "KarrasDPM": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "K_EULER_ANCESTRAL": ("EulerAncestralDiscreteScheduler", {}),
    "K_EULER": ("EulerDiscreteScheduler", {}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),  # as SDXL ships it; PRK warm-up needs >= 4 steps
    "LCM": ("LCMScheduler", {}),
    "DPM++2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
}

SCHEDULER_NAMES: list[str] = list(_TABLE)


def make_scheduler(name: str, config: Any, *, trailing: bool = False) -> Any:
    """A new scheduler called ``name`` built from ``config`` (a scheduler config)."""
    import diffusers

    try:
        class_name, extra = _TABLE[name]
    except KeyError:
        raise ValueError(f"scheduler: unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}") from None
    overrides = dict(extra)
    if trailing:
        overrides["timestep_spacing"] = "trailing"
    cls = getattr(diffusers, class_name)
    return cls.from_config(config, **overrides)


def scheduler_name(scheduler: Any) -> str | None:
    """The table name matching a scheduler instance, if any (for logs and caching)."""
    cfg = scheduler.config
    # Most specific entry first, so "DPM++2M SDE Karras" wins over "KarrasDPM".
    for name, (class_name, extra) in sorted(_TABLE.items(), key=lambda kv: -len(kv[1][1])):
        if type(scheduler).__name__ != class_name or not all(cfg.get(k) == v for k, v in extra.items()):
            continue
        if not extra and (cfg.get("use_karras_sigmas") or str(cfg.get("algorithm_type", "")).startswith("sde")):
            continue
        return name
    return None
