"""``cogkit build`` end to end: cog.yaml -> staged build context -> image.

1. Load cog.yaml; resolve the base image (CPU: ``python:<ver>-slim``; GPU: the CUDA
   runtime image chosen in :mod:`cogkit.build.cuda`).
2. Compute the OpenAPI schema on this machine, in a subprocess run from the project
   folder (importing the user's module must not touch this process).
3. Stage the context (:mod:`cogkit.build.context`): requirements, a cogkit wheel
   (:mod:`cogkit.build.sdk`), managed weights (:mod:`cogkit.build.managed_weights`),
   weights, code, the schema at ``src/.cog/openapi_schema.json``, the Dockerfile.
4. Run the builder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogkit._version import COG_COMPAT_VERSION
from cogkit.build.builders import Builder, BuildError, build_command, detect_builder, run_build
from cogkit.build.context import ALWAYS_IGNORED, find_weights, project_files, stage_tree
from cogkit.build.cuda import resolve_cuda, with_python
from cogkit.build.dockerfile import DockerfilePlan, json_label, render
from cogkit.build.dockerignore import DockerIgnore
from cogkit.build.managed_weights import stage_managed_weights
from cogkit.build.requirements import CPU_TORCH_INDEX, Requirements, gather, staged_path
from cogkit.build.sdk import sdk_wheel
from cogkit.build.weights_download import progress_wanted
from cogkit.config import Config
from cogkit.files import redact_url

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


@dataclass
class BuildOptions:
    tag: str | None = None
    builder: str | None = None  # docker | podman | buildah; None = detect
    separate_weights: bool = False
    secrets: list[str] = field(default_factory=list)  # "id=NAME,src=PATH", passed to the builder
    no_cache: bool = False
    quiet: bool = False
    openapi_schema: Path | None = None  # a ready schema file instead of computing it
    base_image: str | None = None  # replace the computed base image (advanced)


def image_name(config: Config, tag: str | None = None) -> str:
    """-t wins, then cog.yaml ``image:``, then ``cog-<folder name>`` (as Cog names it)."""
    if tag:
        return tag
    if config.image:
        return config.image
    name = re.sub(r"[^a-z0-9._-]+", "-", config.project_dir.name.lower()).strip("-._") or "model"
    return f"cog-{name}"


def compute_schema(config: Config, timeout: float = 300) -> dict[str, Any]:
    """The runtime OpenAPI document, from ``cogkit schema`` run in the project folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("COG_PREDICT_TYPE_STUB", "COG_TRAIN_TYPE_STUB")}
    with tempfile.TemporaryDirectory(prefix="cogkit-schema-") as tmp:
        out = Path(tmp) / "openapi.json"
        cmd = [sys.executable, "-m", "cogkit", "schema", "-f", str(config.path), "-o", str(out)]
        try:
            proc = subprocess.run(cmd, cwd=config.project_dir, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildError(f"computing the OpenAPI schema took over {timeout:.0f} s (importing the predictor)") from None
        if proc.returncode != 0 or not out.is_file():
            detail = "\n".join("  | " + ln for ln in (proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise BuildError(
                "could not compute the OpenAPI schema (`cogkit schema` failed in the project folder; the predictor "
                "must import on this machine, so keep heavy imports inside setup(), or pass --openapi-schema FILE)\n"
                + detail
            )
        return json.loads(out.read_text())


def _effective_config(config: Config, plan: DockerfilePlan) -> dict[str, Any]:
    raw = json.loads(json.dumps(config.raw, default=str))
    _redact_weights_uris(raw)
    if plan.cuda:
        build = raw.setdefault("build", {})
        build["cuda"] = plan.cuda.cuda
        build["cudnn"] = plan.cuda.cudnn
    return raw


def _redact_weights_uris(raw: dict[str, Any]) -> None:
    """The label is public (anyone who pulls the image reads it): weights URIs lose their
    userinfo and query, where credentials and signatures live."""
    for entry in raw.get("weights") or []:
        sources = entry.get("source") if isinstance(entry, dict) else None
        for source in sources if isinstance(sources, list) else [sources]:
            if isinstance(source, dict) and isinstance(source.get("uri"), str) and "://" in source["uri"]:
                source["uri"] = redact_url(source["uri"])


def prepare_context(
    config: Config,
    dest: Path,
    options: BuildOptions,
    cache_mounts: bool = True,
    log: Log = _stderr_log,
) -> DockerfilePlan:
    """Stage the complete build context for ``config`` in ``dest`` (emptied first)."""
    b = config.build
    if not b.python_version:
        raise BuildError(f"{config.path}: build.python_version: is required to build an image (e.g. \"3.11\")")
    project = config.project_dir
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    reqs = gather(project, b.python_requirements, b.python_packages)
    for spec in reqs.dropped:
        log(f"dropping {spec!r} from the Python requirements: the image gets this cogkit, which provides `cog`")
    cuda = None
    torch_index = CPU_TORCH_INDEX
    if b.gpu:
        cuda, warnings = resolve_cuda(reqs.torch_version, b.cuda, b.cudnn, reqs.torch_named)
        cuda, more = with_python(cuda, b.python_version, str(config.path))
        warnings += more
        for w in warnings:
            log(f"warning: {w}")
        log(f"GPU image: {cuda.reason} -> {cuda.image} (Python {cuda.python} from Ubuntu {cuda.ubuntu})")
        torch_index = cuda.torch_index

    # The schema first: a predictor that does not import fails the build before any work.
    schema = _schema(config, options, log)
    wheel = sdk_wheel(b.sdk_version, dest / "build" / "wheel", str(config.path), log)
    if not reqs.empty:
        _stage_requirements(reqs, dest, torch_index)
    managed = stage_managed_weights(config, dest, progress_wanted(options.quiet), log)
    files = project_files(project, DockerIgnore.load(project))
    # Project files a weights entry took are in its layer (at its target), not in the code's.
    taken = set().union(*(w.project_files for w in managed))
    files.files = [f for f in files.files if f not in taken]
    weights = find_weights(project, files.files) if options.separate_weights else []
    if options.separate_weights:
        total = sum((project / w).stat().st_size for w in weights)
        log(f"separate weights layer: {len(weights)} file(s), {total / 1e6:.1f} MB" if weights
            else "separate weights layer: no file of 10 MB or more to separate")
    stage_tree(project, dest, files, weights)
    labels = {"run.cog.version": COG_COMPAT_VERSION, "run.cogkit.version": wheel.version}
    if schema is not None:
        schema_file = dest / "src" / ALWAYS_IGNORED / "openapi_schema.json"
        schema_file.parent.mkdir(parents=True, exist_ok=True)
        schema_file.write_text(json.dumps(schema, indent=2) + "\n")

    plan = DockerfilePlan(
        python_version=b.python_version,
        cuda=cuda,
        system_packages=list(b.system_packages),
        environment=dict(config.environment),
        has_requirements=not reqs.empty,
        cogkit_wheel=wheel.path.name,
        run=list(b.run),
        predict_ref=config.predict,
        train_ref=config.train,
        concurrency_max=config.concurrency_max,
        separate_weights=bool(weights),
        managed_weights=[(w.folder, w.target) for w in managed],
        cache_mounts=cache_mounts,
        base_image=options.base_image,
    )
    labels["run.cog.config"] = json_label(_effective_config(config, plan))
    if schema is not None:
        labels["run.cog.openapi_schema"] = json_label(schema)
    plan.labels = labels
    (dest / "Dockerfile").write_text(render(plan))
    return plan


def _schema(config: Config, options: BuildOptions, log: Log) -> dict[str, Any] | None:
    if not (config.predict or config.train):
        log("warning: cog.yaml names no predictor (run:/predict:) or train:, so the image has no schema")
        return None
    if options.openapi_schema:
        try:
            return json.loads(Path(options.openapi_schema).read_text())
        except (OSError, ValueError) as exc:
            raise BuildError(f"--openapi-schema {options.openapi_schema}: cannot read a JSON document: {exc}") from None
    log("computing the OpenAPI schema")
    return compute_schema(config)


def _stage_requirements(reqs: Requirements, dest: Path, torch_index: str | None) -> None:
    req_dir = dest / "build" / "req"
    req_dir.mkdir(parents=True, exist_ok=True)
    (req_dir / "requirements.txt").write_text(reqs.generated_file(torch_index))
    for rel, text in reqs.files.items():
        target = dest / staged_path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for rel, src in reqs.artifacts.items():
        target = dest / staged_path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _check_builder(builder: Builder, config: Config, options: BuildOptions) -> None:
    needs_secrets = bool(options.secrets) or any(cmd.mounts for cmd in config.build.run)
    if needs_secrets and not builder.secrets:
        raise BuildError(
            "build secrets (build.run mounts / --secret) need BuildKit (docker buildx), podman or buildah; "
            f"this {builder.name} uses the legacy builder. Use --builder podman or install docker buildx."
        )


def build_image(config: Config, options: BuildOptions, log: Log = _stderr_log) -> str:
    """Build the image for ``config``; returns its name."""
    name = image_name(config, options.tag)
    builder = detect_builder(options.builder)
    _check_builder(builder, config, options)
    log(f"building {name} with {builder.name}")
    # Staged next to the project so hard links work (same file system); removed afterwards.
    # A read-only project is staged in the temp folder instead (files copied).
    try:
        cog_dir = config.project_dir / ALWAYS_IGNORED
        cog_dir.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="build-context-", dir=cog_dir))
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="cogkit-build-context-"))
    try:
        prepare_context(config, tmp, options, cache_mounts=builder.cache_mounts, log=log)
        cmd = build_command(builder, tmp, name, options.secrets, options.no_cache)
        run_build(cmd, quiet=options.quiet)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"built {name}")
    return name


def write_context(config: Config, options: BuildOptions, log: Log = _stderr_log) -> Path:
    """``--dockerfile-only``: stage the context in ``.cog/build`` and return its Dockerfile.

    Assumes a builder with cache mounts (BuildKit, podman, buildah)."""
    dest = config.project_dir / ALWAYS_IGNORED / "build"
    prepare_context(config, dest, options, cache_mounts=True, log=log)
    return dest / "Dockerfile"
