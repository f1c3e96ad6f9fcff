"""Hub settings: the command line, ``hub.yaml``, and the environment, merged into one object.

Kept free of heavy imports: ``cogkit hub --help`` builds its parser from here.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogkit.exceptions import ConfigError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$", re.IGNORECASE)
VISIBILITIES = ("public", "private")
BACKENDS = ("local", "ray")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*(|k|ki|m|mi|g|gi|t|ti)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "ki": 2**10, "m": 10**6, "mi": 2**20, "g": 10**9, "gi": 2**30, "t": 10**12, "ti": 2**40}


def parse_memory(value: Any, where: str) -> int:
    """Bytes from an integer or a size such as ``512Mi``, ``4GiB`` or ``2G``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _MEMORY.match(str(value).strip()) if isinstance(value, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(f"{where}: must be a positive number of bytes or a size such as 512Mi or 4GiB, got {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass
class ModelSpec:
    """One model the hub serves: a project folder (a new version whenever it changes) or
    an already-running Cog server."""

    owner: str
    name: str
    path: str | None = None  # folder with cog.yaml
    url: str | None = None  # http://HOST:PORT of a running Cog server
    weights: str | None = None  # handed to setup(weights=) as COG_WEIGHTS
    env: dict[str, str] = field(default_factory=dict)
    max_instances: int = 1
    min_instances: int = 0  # servers (Ray replicas) kept running when idle
    idle_timeout: float = 300.0
    cpus: float | None = None  # CPUs a Ray replica reserves (default 1)
    memory: int | None = None  # bytes of memory a Ray replica reserves
    hardware: str = "cpu"
    description: str | None = None
    cover_image_url: str | None = None
    visibility: str = "public"
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class CollectionSpec:
    slug: str
    name: str
    description: str = ""
    full_description: str | None = None
    models: list[str] = field(default_factory=list)


@dataclass
class HubSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./hub-data"
    db_url: str | None = None
    token: str | None = None
    public_url: str | None = None
    models: list[ModelSpec] = field(default_factory=list)
    collections: list[CollectionSpec] = field(default_factory=list)
    username: str = "local"
    max_body_bytes: int = 32 << 20  # JSON bodies (the clients inline data URIs up to 10 MB)
    max_file_bytes: int = 1 << 30  # POST /v1/files and URL inputs the hub fetches
    fetch_timeout: float = 30.0  # connect/read timeout for URL inputs
    shutdown_grace: float = 5.0  # seconds running predictions may finish on SIGTERM
    boot_timeout: float = 600.0  # seconds a model server may take to become READY
    page_size: int = 100  # list pages (Replicate's size)
    backend: str = "local"  # who runs the models: "local" (subprocesses) or "ray" (Ray Serve)
    ray_address: str | None = None  # the Ray cluster for --backend ray (None: start one in-process)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{Path(self.data_dir).resolve() / 'hub.db'}"


def split_name(value: str, what: str) -> tuple[str, str]:
    owner, _, name = value.partition("/")
    if not owner or not name or "/" in name or not NAME_RE.match(owner) or not NAME_RE.match(name):
        raise ConfigError(f"{what}: {value!r} is not OWNER/NAME (letters, digits, '.', '_', '-')")
    return owner, name


def _pair(value: str, flag: str) -> tuple[str, str]:
    ref, sep, target = value.partition("=")
    if not sep or not target:
        raise ConfigError(f"{flag}: expected OWNER/NAME=VALUE, got {value!r}")
    return ref, target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: 8000)")
    parser.add_argument("--db", default=None, metavar="URL",
                        help="SQLAlchemy database URL: sqlite:////abs/hub.db or postgresql://... "
                             "(default: sqlite:///<data-dir>/hub.db)")
    parser.add_argument("--token", default=None,
                        help="API token clients send as 'Authorization: Bearer TOKEN' "
                             "(default: $COGKIT_HUB_TOKEN, else one generated into the data dir)")
    parser.add_argument("--config", default=None, metavar="hub.yaml", help="models, collections and options")
    parser.add_argument("--model", action="append", default=[], metavar="OWNER/NAME=PATH",
                        help="serve the cog.yaml project in PATH (or a running Cog server at http://HOST:PORT) "
                             "as OWNER/NAME; repeatable")
    parser.add_argument("--weights", action="append", default=[], metavar="OWNER/NAME=DIR",
                        help="hand DIR to that model's setup(weights=) (COG_WEIGHTS); repeatable")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="database, files and the generated token (default: ./hub-data)")
    parser.add_argument("--public-url", default=None, metavar="URL",
                        help="the https:// address the hub is reached at behind a TLS proxy: file outputs "
                             "become unguessable URLs under it instead of data: URIs")
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="who runs the models: 'local' model servers in subprocesses (default), or 'ray': "
                             "each model version a Ray Serve deployment on a Ray cluster (pip install 'cogkit[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                        help="the Ray cluster for --backend ray: the address 'ray start --head' printed, or 'auto' "
                             "(default: $RAY_ADDRESS, else a Ray started inside the hub)")


_MODEL_KEYS = {
    "path", "url", "weights", "env", "max_instances", "min_instances", "idle_timeout", "cpus", "memory",
    "hardware", "description",
    "cover_image_url", "visibility", "github_url", "paper_url", "license_url",
}


def _model_from_yaml(ref: str, raw: Any, where: str) -> ModelSpec:
    owner, name = split_name(ref, where)
    if isinstance(raw, str):
        raw = {"url": raw} if raw.startswith(("http://", "https://")) else {"path": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a path or a mapping")
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_MODEL_KEYS))}")
    spec = ModelSpec(owner, name)
    for key, value in raw.items():
        if key == "env":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.env: expected a mapping of names to strings")
            spec.env = {str(k): str(v) for k, v in value.items()}
        elif key in ("max_instances", "min_instances"):
            low = 1 if key == "max_instances" else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{where}.{key}: must be an integer >= {low}")
            setattr(spec, key, value)
        elif key == "cpus":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}.cpus: must be a number > 0 (CPUs a Ray replica reserves)")
            spec.cpus = float(value)
        elif key == "memory":
            spec.memory = parse_memory(value, f"{where}.memory")
        elif key == "idle_timeout":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}.idle_timeout: must be a number of seconds > 0")
            spec.idle_timeout = float(value)
        elif key == "visibility":
            if value not in VISIBILITIES:
                raise ConfigError(f"{where}.visibility: must be one of: public, private")
            spec.visibility = value
        else:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}.{key}: expected a string")
            setattr(spec, key, value)
    if bool(spec.path) == bool(spec.url):
        raise ConfigError(f"{where}: give exactly one of path (a cog.yaml folder) or url (a running Cog server)")
    if spec.min_instances > spec.max_instances:
        raise ConfigError(f"{where}.min_instances: {spec.min_instances} is more than max_instances ({spec.max_instances})")
    return spec


def load_hub_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config: {path} must hold a mapping")
    return raw


def settings_from(args: argparse.Namespace, environ: dict[str, str] | None = None) -> HubSettings:
    env = os.environ if environ is None else environ
    s = HubSettings()
    raw: dict[str, Any] = load_hub_yaml(args.config) if args.config else {}
    base = Path(args.config).resolve().parent if args.config else Path.cwd()
    allowed = {"host", "port", "db", "token", "data_dir", "public_url", "models", "collections", "username",
               "max_body_bytes", "max_file_bytes", "fetch_timeout", "shutdown_grace", "boot_timeout", "page_size",
               "backend", "ray_address"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{args.config}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("host", "token", "public_url", "username", "backend", "ray_address"):
        if key in raw:
            setattr(s, key, str(raw[key]))
    for key in ("port", "max_body_bytes", "max_file_bytes", "page_size"):
        if key in raw:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < (0 if key == "port" else 1):
                raise ConfigError(f"{args.config}: {key} must be a positive integer")
            setattr(s, key, raw[key])
    for key in ("fetch_timeout", "shutdown_grace", "boot_timeout"):
        if key in raw:
            if not isinstance(raw[key], (int, float)) or isinstance(raw[key], bool) or raw[key] < 0:
                raise ConfigError(f"{args.config}: {key} must be a number of seconds >= 0")
            setattr(s, key, float(raw[key]))
    if "db" in raw:
        s.db_url = str(raw["db"])
    if "data_dir" in raw:
        s.data_dir = str((base / str(raw["data_dir"])).resolve())
    models: dict[str, ModelSpec] = {}
    for ref, item in (raw.get("models") or {}).items():
        spec = _model_from_yaml(ref, item, f"models.{ref}")
        if spec.path:
            spec.path = str((base / spec.path).resolve())
        if spec.weights and not spec.weights.startswith(("http://", "https://")):
            spec.weights = str((base / spec.weights).resolve())
        models[spec.full_name] = spec
    for slug, item in (raw.get("collections") or {}).items():
        if not isinstance(item, dict):
            raise ConfigError(f"collections.{slug}: expected a mapping with name, description, models")
        s.collections.append(CollectionSpec(
            slug=str(slug), name=str(item.get("name", slug)), description=str(item.get("description", "")),
            full_description=item.get("full_description"), models=[str(m) for m in item.get("models") or []],
        ))
    # command line over hub.yaml over defaults
    if args.host:
        s.host = args.host
    if args.port is not None:
        s.port = args.port
    if args.db:
        s.db_url = args.db
    if args.data_dir:
        s.data_dir = str(Path(args.data_dir).resolve())
    if args.public_url:
        s.public_url = args.public_url
    s.backend = args.backend or s.backend
    if s.backend not in BACKENDS:
        raise ConfigError(f"backend: {s.backend!r} is not one of: {', '.join(BACKENDS)}")
    s.ray_address = args.ray_address or s.ray_address
    if s.ray_address and s.backend != "ray":
        raise ConfigError("--ray-address: only applies with --backend ray")
    if s.backend == "ray":
        s.ray_address = s.ray_address or env.get("RAY_ADDRESS") or None
    s.token = args.token or env.get("COGKIT_HUB_TOKEN") or s.token
    for value in args.model:
        ref, target = _pair(value, "--model")
        owner, name = split_name(ref, "--model")
        spec = models.get(ref) or ModelSpec(owner, name)
        if target.startswith(("http://", "https://")):
            spec.url, spec.path = target.rstrip("/"), None
        else:
            spec.path, spec.url = str(Path(target).resolve()), None
        models[ref] = spec
    for value in args.weights:
        ref, target = _pair(value, "--weights")
        if ref not in models:
            raise ConfigError(f"--weights: {ref} is not a model given with --model or in hub.yaml")
        models[ref].weights = str(Path(target).resolve())
    for spec in models.values():
        if spec.path and not (Path(spec.path) / "cog.yaml").is_file():
            raise ConfigError(f"model {spec.full_name}: {spec.path} has no cog.yaml")
        if spec.weights and not spec.weights.startswith(("http://", "https://")) and not os.path.exists(spec.weights):
            raise ConfigError(f"model {spec.full_name}: weights {spec.weights} do not exist")
    s.models = list(models.values())
    if s.public_url:
        if not s.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"--public-url: {s.public_url!r} must start with https:// (or http://)")
        s.public_url = s.public_url.rstrip("/")
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"--port: {s.port} is not a port number")
    return s
