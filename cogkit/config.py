"""``cog.yaml``: parse it and check every key Cog documents, with errors naming file, key and rule."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogkit.exceptions import ConfigError, PredictorError

CONFIG_NAME = "cog.yaml"
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")

_TOP_KEYS = {"build", "run", "predict", "train", "image", "model", "concurrency", "environment", "weights"}
_BUILD_KEYS = {
    "python_version",
    "gpu",
    "cuda",
    "cudnn",
    "python_requirements",
    "python_packages",
    "system_packages",
    "run",
    "pre_install",
    "sdk_version",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=.*$", re.S)
_ENV_DENIED = {
    "PATH",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PYTHONUNBUFFERED",
    "LIBRARY_PATH",
    "HF_ENDPOINT",
    "HF_HUB_ENABLE_HF_TRANSFER",
}
_ENV_DENIED_PREFIXES = ("R8_", "REPLICATE_", "CUDA_", "NVIDIA_", "NV_", "PGET_", "KUBERNETES_")
_WEIGHT_NAME = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*$")
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")


@dataclass(frozen=True)
class Mount:
    type: str
    id: str
    target: str


@dataclass(frozen=True)
class RunCommand:
    command: str
    mounts: tuple[Mount, ...] = ()


@dataclass
class BuildConfig:
    python_version: str | None = None
    gpu: bool = False
    cuda: str | None = None
    cudnn: str | None = None
    python_requirements: str | None = None
    python_packages: list[str] = field(default_factory=list)
    system_packages: list[str] = field(default_factory=list)
    run: list[RunCommand] = field(default_factory=list)  # pre_install entries appended
    sdk_version: str | None = None


@dataclass
class WeightsSource:
    uri: str
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


@dataclass
class WeightsEntry:
    name: str
    target: str
    sources: list[WeightsSource]


@dataclass
class Config:
    path: Path
    raw: dict[str, Any]
    build: BuildConfig
    predict: str | None = None  # the predictor ref from `run:` or `predict:`
    train: str | None = None
    image: str | None = None
    model: str | None = None
    concurrency_max: int | None = None
    concurrency_default_target: int | None = None
    environment: dict[str, str] = field(default_factory=dict)
    weights: list[WeightsEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def project_dir(self) -> Path:
        return self.path.parent


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {reason}")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_kind(value)}")
        return value

    def str_list(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {_kind(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{key}[{i}]", f"must be a string, got {_kind(item)}")
        return list(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _check_ref(ck: _Checker, value: Any, key: str) -> str:
    from cogkit.loader import PredictorRef

    ref = ck.string(value, key)
    try:
        named = PredictorRef.parse(ref).name is not None
    except PredictorError:
        named = False
    if not named:  # cog.yaml names the class or function; only env stubs may leave it out
        raise ck.fail(key, f"{ref!r} must be in the form 'predict.py:Predictor'")
    return ref


def _python_version(ck: _Checker, value: Any) -> str:
    key = "build.python_version"
    if isinstance(value, float):
        text = repr(value)
        if text in ("3.1", "3.2"):
            raise ck.fail(key, f"{value} is read as a number; write it as a string, e.g. \"{text}0\"")
        value = text
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    version = ck.string(value, key)
    if not _VERSION.match(version):
        raise ck.fail(key, f"{version!r} must look like \"3.11\" or \"3.11.7\"")
    major_minor = ".".join(version.split(".")[:2])
    if tuple(int(x) for x in major_minor.split(".")) < (3, 10):
        raise ck.fail(key, f"Python {version} is not supported; the minimum is 3.10")
    return version


def _build(ck: _Checker, raw: Any, project_dir: Path, warnings: list[str]) -> BuildConfig:
    if raw is None:
        return BuildConfig()
    if not isinstance(raw, dict):
        raise ck.fail("build", f"must be a mapping, got {_kind(raw)}")
    for key in raw:
        if key not in _BUILD_KEYS:
            raise ck.fail(f"build.{key}", f"unknown key (allowed: {', '.join(sorted(_BUILD_KEYS))})")
    b = BuildConfig()
    if raw.get("python_version") is not None:
        b.python_version = _python_version(ck, raw["python_version"])
    if "gpu" in raw and raw["gpu"] is not None:
        if not isinstance(raw["gpu"], bool):
            raise ck.fail("build.gpu", f"must be true or false, got {_kind(raw['gpu'])}")
        b.gpu = raw["gpu"]
    for key in ("cuda", "cudnn"):
        if raw.get(key) is not None:
            value = raw[key]
            value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            value = ck.string(value, f"build.{key}")
            if key == "cuda":
                if not _VERSION.match(value) or int(value.split(".")[0]) < 11:
                    raise ck.fail("build.cuda", f"{value!r} must be a CUDA version >= 11, like \"12.4\"")
            elif not re.match(r"^\d+(\.\d+)*$", value):
                raise ck.fail("build.cudnn", f"{value!r} must be a cuDNN version like \"9\"")
            setattr(b, key, value)
    if raw.get("cudnn") is not None and raw.get("cuda") is None and not b.gpu:
        raise ck.fail("build.cudnn", "only applies to GPU builds (set build.gpu: true)")
    if raw.get("python_requirements") is not None and raw.get("python_packages"):
        raise ck.fail("build.python_requirements", "cannot be combined with build.python_packages")
    if raw.get("python_requirements") is not None:
        req = ck.string(raw["python_requirements"], "build.python_requirements")
        if not (project_dir / req).is_file():
            raise ck.fail("build.python_requirements", f"file {req!r} does not exist in {project_dir}")
        b.python_requirements = req
    if raw.get("python_packages"):
        b.python_packages = ck.str_list(raw["python_packages"], "build.python_packages")
        warnings.append("build.python_packages is deprecated; use build.python_requirements")
    b.system_packages = ck.str_list(raw.get("system_packages"), "build.system_packages")
    runs = raw.get("run") or []
    if not isinstance(runs, list):
        raise ck.fail("build.run", f"must be a list, got {_kind(runs)}")
    for i, item in enumerate(runs):
        b.run.append(_run_command(ck, item, f"build.run[{i}]"))
    if raw.get("pre_install"):
        warnings.append("build.pre_install is deprecated; use build.run")
        for i, cmd in enumerate(ck.str_list(raw["pre_install"], "build.pre_install")):
            b.run.append(_run_command(ck, cmd, f"build.pre_install[{i}]"))
    if raw.get("sdk_version") is not None:
        b.sdk_version = ck.string(str(raw["sdk_version"]), "build.sdk_version")
    return b


def _run_command(ck: _Checker, item: Any, key: str) -> RunCommand:
    if isinstance(item, str):
        command, mounts_raw = item, []
    elif isinstance(item, dict):
        extra = set(item) - {"command", "mounts"}
        if extra:
            raise ck.fail(f"{key}.{sorted(extra)[0]}", "unknown key (allowed: command, mounts)")
        if "command" not in item:
            raise ck.fail(key, "needs a 'command'")
        command = ck.string(item["command"], f"{key}.command")
        mounts_raw = item.get("mounts") or []
        if not isinstance(mounts_raw, list):
            raise ck.fail(f"{key}.mounts", f"must be a list, got {_kind(mounts_raw)}")
    else:
        raise ck.fail(key, f"must be a string or a mapping with 'command', got {_kind(item)}")
    if "\n" in command.strip():
        raise ck.fail(key, "commands must not contain newlines (use one entry per command, or &&)")
    mounts = []
    for j, m in enumerate(mounts_raw):
        mk = f"{key}.mounts[{j}]"
        if not isinstance(m, dict) or m.get("type") != "secret":
            raise ck.fail(mk, "only secret mounts are supported: {type: secret, id: ..., target: ...}")
        for need in ("id", "target"):
            if not isinstance(m.get(need), str) or not m[need]:
                raise ck.fail(f"{mk}.{need}", "is required and must be a string")
        mounts.append(Mount("secret", m["id"], m["target"]))
    return RunCommand(command.strip(), tuple(mounts))


def _environment(ck: _Checker, raw: Any) -> dict[str, str]:
    items = ck.str_list(raw, "environment")
    env: dict[str, str] = {}
    for i, item in enumerate(items):
        key = f"environment[{i}]"
        if not _ENV_NAME.match(item):
            raise ck.fail(key, f"{item!r} must look like NAME=value")
        name, _, value = item.partition("=")
        if name in env:
            raise ck.fail(key, f"{name} is set twice")
        if name in _ENV_DENIED or name.startswith(_ENV_DENIED_PREFIXES):
            raise ck.fail(key, f"{name} is reserved and cannot be set in cog.yaml")
        env[name] = value
    return env


def _weights(ck: _Checker, raw: Any) -> list[WeightsEntry]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ck.fail("weights", f"must be a list, got {_kind(raw)}")
    out = []
    for i, w in enumerate(raw):
        key = f"weights[{i}]"
        if not isinstance(w, dict):
            raise ck.fail(key, f"must be a mapping, got {_kind(w)}")
        extra = set(w) - {"name", "target", "source"}
        if extra:
            raise ck.fail(f"{key}.{sorted(extra)[0]}", "unknown key (allowed: name, target, source)")
        name = ck.string(w.get("name"), f"{key}.name")
        if not _WEIGHT_NAME.match(name):
            raise ck.fail(f"{key}.name", f"{name!r} must be lowercase letters/digits separated by . _ -")
        target = ck.string(w.get("target"), f"{key}.target")
        if not target.startswith("/"):
            raise ck.fail(f"{key}.target", f"{target!r} must be an absolute path in the container")
        sources_raw = w.get("source")
        sources_list = sources_raw if isinstance(sources_raw, list) else [sources_raw]
        if not sources_list:  # the image would COPY a folder nothing was staged into
            raise ck.fail(f"{key}.source", "is empty; give at least one {uri: ...}")
        sources = []
        for j, s in enumerate(sources_list):
            sk = f"{key}.source" + (f"[{j}]" if isinstance(sources_raw, list) else "")
            if not isinstance(s, dict) or not isinstance(s.get("uri"), str):
                raise ck.fail(sk, "must be a mapping with a 'uri'")
            extra = set(s) - {"uri", "include", "exclude"}
            if extra:
                raise ck.fail(f"{sk}.{sorted(extra)[0]}", "unknown key (allowed: uri, include, exclude)")
            sources.append(
                WeightsSource(s["uri"], ck.str_list(s.get("include"), f"{sk}.include"), ck.str_list(s.get("exclude"), f"{sk}.exclude"))
            )
        out.append(WeightsEntry(name, target, sources))
    return out


def parse_config(raw: Any, path: Path) -> Config:
    """Validate an already-loaded cog.yaml mapping."""
    ck = _Checker(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of keys, got {_kind(raw)}")
    for key in raw:
        if key not in _TOP_KEYS:
            hint = " (did you mean build.run?)" if key in _BUILD_KEYS else ""
            raise ck.fail(str(key), f"unknown key{hint} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    warnings: list[str] = []
    cfg = Config(path=path, raw=raw, build=_build(ck, raw.get("build"), path.parent, warnings), warnings=warnings)
    if raw.get("run") is not None and raw.get("predict") is not None:
        raise ck.fail("predict", "cannot be combined with 'run' (they are the same setting)")
    for key in ("run", "predict"):
        if raw.get(key) is not None:
            cfg.predict = _check_ref(ck, raw[key], key)
    if raw.get("predict") is not None:
        warnings.append("'predict' is deprecated; use 'run'")
    if raw.get("train") is not None:
        cfg.train = _check_ref(ck, raw["train"], "train")
    if raw.get("image") is not None and raw.get("model") is not None:
        raise ck.fail("model", "cannot be combined with 'image'")
    if raw.get("image") is not None:
        cfg.image = ck.string(raw["image"], "image")
    if raw.get("model") is not None:
        cfg.model = ck.string(raw["model"], "model")
        if "@" in cfg.model or ":" in cfg.model.rsplit("/", 1)[-1]:
            raise ck.fail("model", "must be a bare repository, without a tag or digest")
    conc = raw.get("concurrency")
    if conc is not None:
        if not isinstance(conc, dict):
            raise ck.fail("concurrency", f"must be a mapping, got {_kind(conc)}")
        extra = set(conc) - {"max", "default_target"}
        if extra:
            raise ck.fail(f"concurrency.{sorted(extra)[0]}", "unknown key (allowed: max, default_target)")
        if "max" not in conc:
            raise ck.fail("concurrency.max", "is required when 'concurrency' is given")
        for key in ("max", "default_target"):
            value = conc.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ck.fail(f"concurrency.{key}", f"must be an integer >= 1, got {value!r}")
        cfg.concurrency_max = conc["max"]
        cfg.concurrency_default_target = conc.get("default_target")
    cfg.environment = _environment(ck, raw.get("environment"))
    cfg.weights = _weights(ck, raw.get("weights"))
    return cfg


def predictor_ref(mode: str = "predict", project_dir: str | os.PathLike[str] = ".", config: Config | None = None) -> str:
    """The predictor reference to run: COG_PREDICT_TYPE_STUB / COG_TRAIN_TYPE_STUB (set in
    images, as Cog does) win over cog.yaml's ``run``/``predict``/``train`` keys."""
    env = os.environ.get("COG_TRAIN_TYPE_STUB" if mode == "train" else "COG_PREDICT_TYPE_STUB")
    if env:
        return env
    cfg = config or load_config(project_dir)
    ref = cfg.train if mode == "train" else cfg.predict
    if not ref:
        key, example = ("train", "train.py:train") if mode == "train" else ("run", "predict.py:Predictor")
        raise ConfigError(f"{cfg.path}: no '{key}:' key, so there is nothing to {mode} (add e.g. {key}: \"{example}\")")
    return ref


def load_config(path_or_dir: str | os.PathLike[str] = ".") -> Config:
    """Load and validate ``cog.yaml`` (a file path, or a folder holding one)."""
    import yaml

    path = Path(path_or_dir)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run `cogkit init` to create one)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    return parse_config(raw, path.resolve())
