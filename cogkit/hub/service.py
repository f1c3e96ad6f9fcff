"""The hub's engine: predictions (and trainings) from creation to a terminal state.

Every accepted prediction is a database row first (status ``starting``: queued or
booting), then runs on one of its version's model servers (``runner.Pool``), and is
made terminal in one transaction that also writes its terminal webhook to the outbox.
Live outputs and logs arrive from the model server as Cog webhooks on an internal
loopback route and feed the row, the server-sent event history and the API user's
webhooks. After a restart, queued predictions run again and ones that were running are
failed with a clear error: nothing accepted is ever left non-terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pybase64
import sqlalchemy as sa

from cogkit.hub import render
from cogkit.hub.db import Database
from cogkit.hub.db import tables as t
from cogkit.hub.errors import ApiError, invalid
from cogkit.hub.filestore import API_PATH, KEY_PATH, FileStore
from cogkit.hub.ids import new_id, new_key, now
from cogkit.hub.logs import for_clients
from cogkit.hub.outbox import Outbox, message
from cogkit.hub.runner import Instance, NotStarted, Pool, ServerGone, Target
from cogkit.hub.settings import HubSettings, ModelSpec
from cogkit.openapi import Interface
from cogkit.worker.protocol import find_files, map_files

log = logging.getLogger("cogkit.hub")

TERMINAL = ("succeeded", "failed", "canceled")
EVENTS = ("start", "output", "logs", "completed")
HOOK_THROTTLE = 0.5  # seconds between a prediction's output/logs webhooks (Replicate's rate)
KEEP_LIVE = 120.0  # seconds a finished prediction's event history stays in memory
PROCESSING_WRITE_DELAY = 0.05  # seconds a prediction runs before "processing" is written (see _run)


@dataclass
class Live:
    """What the hub holds in memory while a prediction is queued or running."""

    id: str
    kind: str
    origin: str
    list_output: bool = False  # the schema's Output is an array: live outputs are its items so far
    events: list[tuple[str, str]] = field(default_factory=list)  # server-sent events so far
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    instance: Instance | None = None
    canceled: bool = False
    shutdown: bool = False  # canceled by the hub's own shutdown, not by the client
    retries: int = 0  # times it went back to the queue because its server was already gone
    outputs_seen: int = 0
    logs_seen: int = 0
    logs_prefix: str = ""
    last_hook: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one event of this prediction at a time
    row: t.Prediction | None = None  # the database row as last written (saves a read per step)

    def publish(self, event: str, data: str) -> None:
        self.events.append((event, data))
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


def parse_prefer(value: str | None) -> float | None:
    """Seconds to hold the create request (``Prefer: wait`` / ``wait=N``, N clamped to 1..60)."""
    if not value:
        return None
    for part in value.split(","):
        part = part.strip().lower()
        if part == "wait":
            return 60.0
        m = re.fullmatch(r"wait\s*=\s*(\d+(?:\.\d+)?)", part)
        if m:
            return max(1.0, min(60.0, float(m.group(1))))
    return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: str) -> float:
    """``Cancel-After``: ``500ms``, ``30s``, ``5m``, ``1h30m`` or plain seconds."""
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        pos = m.end()
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if pos != len(text) or not text:
        raise ApiError(400, f"Cancel-After: {value!r} is not a duration such as 30s, 5m or 1h30m")
    return total


def _is_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(c <= " " for c in value)


def output_texts(value: Any) -> list[str]:
    """One server-sent ``output`` event per item of a list output, else one for the value."""
    items = value if isinstance(value, list) else [value]
    return [v if isinstance(v, str) else json.dumps(v) for v in items if v is not None]


# Core statements built once and run with parameters: the ORM-enabled insert/update with
# .values(...) spent ~0.7 ms per call building and cache-keying the statement.
_PT = t.Prediction.__table__
_INSERT = sa.insert(_PT)
_UPDATES: dict[tuple[frozenset[str], bool], Any] = {}
_MT = t.Model.__table__
_COUNT_RUN = sa.update(_MT).where(_MT.c.owner == sa.bindparam("o"), _MT.c.name == sa.bindparam("n")).values(
    run_count=_MT.c.run_count + 1)


def _update_statement(columns: frozenset[str], unless_terminal: bool) -> Any:
    """UPDATE predictions SET <columns> WHERE id = :_pid [AND status is not terminal]."""
    key = (columns, unless_terminal)
    stmt = _UPDATES.get(key)
    if stmt is None:
        where = [_PT.c.id == sa.bindparam("_pid")]
        if unless_terminal:
            where.append(_PT.c.status.not_in(TERMINAL))
        stmt = _UPDATES[key] = sa.update(_PT).where(*where).values(
            {c: sa.bindparam(c, type_=_PT.c[c].type) for c in columns})
    return stmt


class Hub:
    def __init__(self, settings: HubSettings, token: str, internal_base: str) -> None:
        self.settings = settings
        self.token = token
        self.internal_base = internal_base  # http://127.0.0.1:PORT, how model servers reach the hub
        self.db = Database(settings.database_url)
        self.files = FileStore(self.db, settings.data_dir, settings.max_file_bytes)
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self.fetcher = httpx.AsyncClient(timeout=settings.fetch_timeout, follow_redirects=True)
        self.specs: dict[str, ModelSpec] = {s.full_name: s for s in settings.models}
        self.current: dict[str, str] = {}  # model name -> version id it serves now
        self.pools: dict[str, Pool | Any] = {}  # runner.Pool, or ray_runner.RayPool under --backend ray
        self.cluster: Any = None  # ray_runner.RayCluster under --backend ray
        self.live: dict[str, Live] = {}
        self.callback_key = new_key()  # capability for the model servers' callbacks
        self.outbox: Outbox | None = None
        self.webhook_secret = ""
        self._file_cache: dict[str, t.File] = {}
        self._validators: dict[tuple[str, str], tuple[Any, dict[str, bool]]] = {}
        self._runnable: dict[str, tuple[t.Version, t.Model]] = {}
        self._versions: dict[str, tuple[t.Version, t.Model]] = {}
        self._timers: set[asyncio.Task[None]] = set()
        self.closing = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        from cogkit.hub.registry import register

        if self.settings.backend == "ray":
            from cogkit.hub.ray_runner import RayCluster

            self.cluster = RayCluster(self.settings.ray_address)
            await self.cluster.connect()
        await self.db.migrate()
        self.webhook_secret = await self._secret()
        self.outbox = Outbox(self.db, self.webhook_secret)
        self.current = await register(self.db, self.settings.models)
        await self._recover()
        async with self.db.session() as s:
            deployments = (await s.execute(sa.select(t.Deployment.owner, t.Deployment.name))).all()
        for owner, name in deployments:
            await self.warm_deployment(owner, name)
        for spec in self.settings.models:
            vid = self.current.get(spec.full_name)
            if spec.min_instances and vid:
                with contextlib.suppress(ApiError):
                    self._pool(await self._target(vid)).keep_warm(spec.min_instances)
        self.outbox.start()

    async def _secret(self) -> str:
        import base64
        import os

        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(t.Setting.value).where(t.Setting.key == "webhook_secret"))).first()
            if row is not None:
                return str(row.value)
            # 24 bytes: 32 base64 characters, no padding and no "_" (the py client splits on it)
            secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
            await conn.execute(sa.insert(t.Setting).values(key="webhook_secret", value=secret))
            return secret

    async def _recover(self) -> None:
        P = t.Prediction
        async with self.db.session() as s:
            rows = (await s.execute(sa.select(P).where(P.status.in_(("starting", "processing"))).order_by(P.pk))).scalars().all()
        origin = self.default_origin
        for row in rows:
            if row.status == "processing":
                live = Live(row.id, row.kind, origin, row=row)
                self.live[row.id] = live
                await self._finish(row.id, "failed", error="the hub restarted while this prediction was running, "
                                   "so it did not finish; run it again", output=row.output)
                continue
            live = Live(row.id, row.kind, origin, row=row)
            self.live[row.id] = live
            try:
                version, _ = await self.version_row(row.version)
                mode = "train" if row.kind == "training" else "predict"
                live.list_output = Interface.of(version.openapi_schema, mode).output_is_list
                target = await self._target(row.version, row.deployment, row.kind)
            except ApiError as exc:
                await self._finish(row.id, "failed", error=exc.detail)
                continue
            log.info("re-queueing %s %s after a restart", row.kind, row.id)
            self._submit(row.id, target)

    @property
    def default_origin(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.settings.port}"

    async def stop(self, grace: float) -> None:
        """Let running predictions finish for ``grace`` s, cancel the rest, fail what still
        runs, stop every model server. Queued predictions stay queued in the database."""
        self.closing = True
        for pool in self.pools.values():
            pool.closing = True
        running = [lv for lv in self.live.values() if lv.instance is not None and not lv.done.is_set()]
        if running:
            log.info("waiting up to %.0f s for %d running prediction(s)", grace, len(running))
            await asyncio.wait([asyncio.ensure_future(lv.done.wait()) for lv in running], timeout=grace)
        for lv in running:
            if not lv.done.is_set() and lv.instance is not None:
                lv.shutdown = True
                await lv.instance.cancel(lv.id, self._noun(lv.kind))
        if running:
            await asyncio.wait([asyncio.ensure_future(lv.done.wait()) for lv in running], timeout=2.0)
        for lv in running:
            if not lv.done.is_set():
                await self._finish(lv.id, "failed", error="the hub shut down while this prediction was running")
        await asyncio.gather(*(p.close(grace=3.0) for p in self.pools.values()), return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.close()
        for task in self._timers:
            task.cancel()
        if self.outbox is not None:
            await self.outbox.drain(timeout=3.0)
            await self.outbox.close()
        await self.client.aclose()
        await self.fetcher.aclose()
        await self.db.close()

    # ------------------------------------------------------------------ models and versions

    async def model_row(self, owner: str, name: str) -> t.Model:
        async with self.db.session() as s:
            row = (await s.execute(sa.select(t.Model).where(t.Model.owner == owner, t.Model.name == name))).scalar()
        if row is None:
            raise ApiError(404, f"Model {owner}/{name} does not exist")
        return row

    async def versions_of(self, model: t.Model) -> list[t.Version]:
        """Newest first; the version the hub serves now leads."""
        async with self.db.session() as s:
            rows = (await s.execute(sa.select(t.Version).where(t.Version.model_pk == model.pk, t.Version.deleted.is_(False))
                                    .order_by(t.Version.created_at.desc()))).scalars().all()
        cur = self.current.get(f"{model.owner}/{model.name}")
        return sorted(rows, key=lambda v: v.id != cur)

    async def latest_version(self, model: t.Model) -> t.Version | None:
        rows = await self.versions_of(model)
        return rows[0] if rows else None

    async def runnable(self, owner: str, name: str) -> tuple[t.Version, t.Model]:
        """The version a prediction on OWNER/NAME runs, and its model (cached: this is on every
        prediction's path; ``invalidate`` after any write to models or versions)."""
        key = f"{owner}/{name}"
        hit = self._runnable.get(key)
        if hit is None:
            model = await self.model_row(owner, name)
            version = await self.latest_version(model)
            if version is None:
                raise ApiError(404, f"Model {owner}/{name} has no version to run")
            hit = self._runnable[key] = (version, model)
        return hit

    async def version_row(self, vid: str) -> tuple[t.Version, t.Model]:
        hit = self._versions.get(vid)
        if hit is None:
            hit = await self._version_row(vid)
            if len(self._versions) > 4096:
                self._versions.clear()
            self._versions[vid] = hit
        return hit

    def invalidate(self) -> None:
        self._runnable.clear()
        self._versions.clear()

    async def _version_row(self, vid: str) -> tuple[t.Version, t.Model]:
        async with self.db.session() as s:
            row = (await s.execute(sa.select(t.Version, t.Model).join(t.Model, t.Version.model_pk == t.Model.pk)
                                   .where(t.Version.id == vid, t.Version.deleted.is_(False)))).first()
        if row is None:
            raise ApiError(404, f"Version {vid} does not exist")
        return row[0], row[1]

    async def _target(self, vid: str, deployment: str | None = None, kind: str = "prediction") -> Target:
        # trainings run on servers of their own, in train mode
        key = (f"{vid}@{deployment}" if deployment else vid) + ("#train" if kind == "training" else "")
        pool = self.pools.get(key)
        if pool is not None:
            return pool.target
        version, model = await self.version_row(vid)
        spec = self.specs.get(f"{model.owner}/{model.name}") or ModelSpec(model.owner, model.name)
        if not version.project_dir and not version.remote_url:
            raise ApiError(422, f"version {vid} has no model to run (it was registered without a project)")
        target = Target(
            key=key, project_dir=version.project_dir, url=version.remote_url, weights=version.weights,
            env=dict(spec.env), max_instances=spec.max_instances, min_instances=spec.min_instances,
            idle_timeout=spec.idle_timeout, cpus=spec.cpus, memory=spec.memory,
            args=["--upload-url", f"{self.internal_base}/internal/{self.callback_key}/uploads/"]
            + (["--x-mode", "train"] if kind == "training" else []),
        )
        if version.project_dir and self.cluster is not None:  # what Ray places a replica by
            from cogkit.config import load_config
            from cogkit.exceptions import ConfigError

            with contextlib.suppress(ConfigError, OSError):
                cfg = load_config(version.project_dir)
                target.gpu, target.slots = cfg.build.gpu, cfg.concurrency_max or 1
        if deployment:
            async with self.db.session() as s:
                owner, name = deployment.split("/", 1)
                dep = (await s.execute(sa.select(t.Deployment).where(t.Deployment.owner == owner,
                                                                     t.Deployment.name == name))).scalar()
            if dep is not None:
                target.max_instances = max(1, dep.max_instances)
        return target

    def _pool(self, target: Target) -> Any:
        pool = self.pools.get(target.key)
        if pool is None:
            if self.cluster is not None and target.project_dir:  # (a running Cog server's URL is reached directly)
                from cogkit.hub.ray_runner import RayPool

                pool = RayPool(target, self.cluster, self.settings.boot_timeout)
            else:
                pool = Pool(target, self.client, self.settings.boot_timeout)
            self.pools[target.key] = pool
        return pool

    async def warm_deployment(self, owner: str, name: str) -> None:
        """Keep a deployment's ``min_instances`` servers running."""
        async with self.db.session() as s:
            dep = (await s.execute(sa.select(t.Deployment).where(t.Deployment.owner == owner,
                                                                 t.Deployment.name == name))).scalar()
        if dep is None or dep.min_instances < 1:
            return
        try:
            target = await self._target(dep.version, f"{owner}/{name}")
        except ApiError as exc:
            log.warning("deployment %s/%s: %s", owner, name, exc.detail)
            return
        self._pool(target).keep_warm(dep.min_instances)

    def forget_deployment(self, name: str) -> None:
        """A deployment changed or went away: its servers retire once their work is done."""
        for key in [k for k in self.pools if k.split("#")[0].endswith("@" + name)]:
            self._timer(self._retire(self.pools.pop(key)))

    @staticmethod
    async def _retire(pool: Pool) -> None:
        while pool.tasks or not pool.queue.empty():
            await asyncio.sleep(0.5)
        await pool.close(grace=3.0)

    # ------------------------------------------------------------------ creating

    async def create(self, *, version: t.Version, model: t.Model, body: Any, origin: str, prefer: str | None,
                     cancel_after: str | None, kind: str = "prediction", deployment: str | None = None,
                     destination: str | None = None, allow_version_key: bool = False) -> tuple[t.Prediction, float | None]:
        """Validate, store and queue; returns the row and how long the client wants to wait."""
        if not isinstance(body, dict):
            raise invalid("", "the request body must be a JSON object", "type")
        allowed = {"input", "webhook", "webhook_events_filter", "webhook_completed", "stream"}
        if allow_version_key:
            allowed.add("version")
        if kind == "training":
            allowed.add("destination")
        for key in body:
            if key not in allowed:
                raise invalid(key, f"additional property {key!r} is not allowed", "additional_property_not_allowed")
        webhook, events = self._webhook_of(body)
        model_input = body.get("input", {})
        if model_input is None:
            model_input = {}
        if not isinstance(model_input, dict):
            raise invalid("input", "must be an object", "type")
        mode = "train" if kind == "training" else "predict"
        if kind == "training" and not version.can_train:
            raise ApiError(400, f"{model.owner}/{model.name} cannot be trained: its version {version.id[:12]} has no train()")
        forwarded = await self._validate_input(version, model_input, mode)
        deadline = now() + parse_duration(cancel_after) if cancel_after else None
        target = await self._target(version.id, deployment, kind)
        pid = new_id()
        values = dict(
            id=pid, kind=kind, model=f"{model.owner}/{model.name}", version=version.id, deployment=deployment,
            destination=destination, status="starting", input=self._redacted(version, mode, model_input),
            model_input=forwarded, output=None,
            logs="", error=None, metrics={}, created_at=now(), started_at=None, completed_at=None, deadline=deadline,
            webhook=webhook, webhook_events_filter=events, source="api", stream_key=new_key(),
        )
        async with self.db.begin() as conn:
            result = await conn.execute(_INSERT, values)
            values["pk"] = result.inserted_primary_key[0]
        row = t.Prediction(**values)
        list_output = self._validator(version, mode).interface.output_is_list  # built once per version
        self.live[pid] = Live(pid, kind, origin, list_output=list_output, row=row)
        self._submit(pid, target)
        if deadline is not None:
            self._timer(self._cancel_at(pid, deadline))
        return row, parse_prefer(prefer)

    def _webhook_of(self, body: dict) -> tuple[str | None, list[str] | None]:
        webhook = body.get("webhook")
        events = body.get("webhook_events_filter")
        legacy = body.get("webhook_completed")
        if webhook is None and legacy is not None:
            webhook, events = legacy, ["completed"]
        if webhook is not None and (not isinstance(webhook, str) or not _is_url(webhook)):
            raise invalid("webhook", "must be an http(s) URL", "format")
        if events is not None:
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise invalid("webhook_events_filter", "must be an array of strings", "type")
            bad = [e for e in events if e not in EVENTS]
            if bad:
                raise invalid("webhook_events_filter", f"{bad[0]!r} is not one of start, output, logs, completed", "enum")
        return webhook, events

    async def _validate_input(self, version: t.Version, model_input: dict, mode: str) -> dict:
        """Check the input against the version's schema (422 naming the field and the rule),
        then resolve file inputs into URLs the model server can fetch without credentials."""
        validator = self._validator(version, mode)
        kinds = validator.interface.file_inputs
        result = validator.validate(model_input)
        if result.unknown:
            name = result.unknown[0]
            raise invalid(f"input.{name}", f"{name!r} is not an input of this model "
                          f"(inputs: {', '.join(validator.properties) or 'none'})", "additional_property_not_allowed")
        if result.errors:
            fields = []
            for err in result.errors:
                path = [str(p) for p in err["loc"][1:]]
                field_name = ".".join(path)
                kind = "required" if err.get("type") == "value_error.missing" else "invalid"
                msg = "is required" if kind == "required" else err["msg"]
                fields.append({"type": kind, "field": field_name, "description": msg})
            detail = "; ".join(f"{f['field']}: {f['description']}" for f in fields)
            raise ApiError(422, detail, fields)
        forwarded = dict(model_input)
        for name in kinds:
            if name in forwarded and forwarded[name] is not None:
                forwarded[name] = await self._resolve_files(name, forwarded[name])
        return forwarded

    def _validator(self, version: t.Version, mode: str) -> Any:
        """The version's input validator (its ``interface`` names the file and secret
        inputs), built once per version: a pydantic model is far too slow to build per request."""
        from cogkit.validation import InputValidator

        key = (version.id, mode)
        cached = self._validators.get(key)
        if cached is None:
            if not Interface.of(version.openapi_schema, mode).inputs:
                raise ApiError(422, f"version {version.id[:12]} has no {mode} input schema")
            try:
                cached = InputValidator(version.openapi_schema, mode)
            except (KeyError, TypeError, ValueError):
                raise ApiError(422, f"version {version.id[:12]} has no valid {mode} input schema") from None
            self._validators[key] = cached
        return cached

    def _redacted(self, version: t.Version, mode: str, model_input: dict) -> dict:
        """The input as the API shows it: Secret inputs never come back."""
        secret = self._validator(version, mode).interface.secret_inputs
        return {k: ("**********" if k in secret and v is not None else v) for k, v in model_input.items()}

    async def _resolve_files(self, name: str, value: Any) -> Any:
        if isinstance(value, list):
            return [await self._resolve_files(f"{name}.{i}", v) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        if value.startswith("data:"):
            head, sep, data = value.partition(",")
            if head.endswith(";base64"):
                try:
                    pybase64.b64decode("".join(data.split()), validate=True)
                except ValueError:
                    sep = ""
            if not sep:
                raise invalid(f"input.{name}", "is not a valid data URL (data:<type>;base64,<base64 data>)",
                              "format")
            return value
        if not _is_url(value):
            raise invalid(f"input.{name}", "must be an http(s) URL or a data: URL", "format")
        path = urlsplit(value).path
        m = API_PATH.search(path)
        if m:
            row = await self.files.get(m.group(1))
            if row is not None:
                return self.files.key_url(self.internal_base, row)
        m = KEY_PATH.search(path)
        if m:
            row = await self.files.by_key(m.group(1))
            if row is not None:
                return self.files.key_url(self.internal_base, row)
        return await self._fetch_input(name, value)

    async def _fetch_input(self, name: str, url: str) -> str:
        """Fetch an input URL now, so an unreachable or too large file is the client's 422
        rather than a failed prediction later; the model server then reads the hub's copy."""
        field_name = f"input.{name}"

        async def chunks() -> Any:
            async with self.fetcher.stream("GET", url) as r:
                if r.status_code >= 400:
                    raise invalid(field_name, f"{url} answered HTTP {r.status_code}", "unreachable")
                length = r.headers.get("content-length")
                if length and length.isdigit() and int(length) > self.settings.max_file_bytes:
                    raise invalid(field_name, f"{url} is {length} bytes, over the limit of "
                                  f"{self.settings.max_file_bytes}", "too_large")
                async for block in r.aiter_bytes():
                    yield block

        fname = urlsplit(url).path.rsplit("/", 1)[-1] or "input"
        total = 4 * self.settings.fetch_timeout  # a server that trickles bytes is cut off too
        try:
            row = await asyncio.wait_for(self.files.save(chunks(), name=fname, content_type=None, kind="input"), total)
        except asyncio.TimeoutError:
            raise invalid(field_name, f"{url} did not arrive within {total:.0f} s", "unreachable") from None
        except ApiError as exc:
            if exc.status == 413:
                raise invalid(field_name, f"{url} is over the limit of {self.settings.max_file_bytes} bytes",
                              "too_large") from None
            raise
        except httpx.HTTPError as exc:
            raise invalid(field_name, f"cannot fetch {url}: {type(exc).__name__}"
                          f"{': ' + str(exc) if str(exc) else ''}", "unreachable") from None
        return self.files.key_url(self.internal_base, row)

    def _timer(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _cancel_at(self, pid: str, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - now()))
        await self.cancel(pid, wait=0)

    # ------------------------------------------------------------------ running

    @staticmethod
    def _noun(kind: str) -> str:
        return "trainings" if kind == "training" else "predictions"

    def _submit(self, pid: str, target: Target) -> None:
        async def job(inst: Instance, boot_time: float | None) -> None:
            await self._run(pid, inst, boot_time)

        async def boot_failed(error: str) -> None:
            await self._finish(pid, "failed", error=error)

        self._pool(target).submit(job, boot_failed)

    async def _run(self, pid: str, inst: Instance, boot_time: float | None) -> None:
        live = self.live.get(pid)
        if live is None or live.canceled or live.done.is_set() or self.closing:
            return  # (closing: it stays queued in the database and runs at the next start)
        live.instance = inst
        metrics: dict[str, Any] = {}
        if boot_time is not None:
            live.logs_prefix = f"cogkit hub: started a model server in {boot_time:.2f} s (cold boot)\n"
            metrics["boot_time"] = round(boot_time, 3)
        model_input = (live.row.model_input if live.row is not None else None) or {}
        started_at = now()  # (set again once the backend has started it: Ray may queue it first)
        # "processing" is written only once the prediction has run for PROCESSING_WRITE_DELAY
        # (or at once when a start webhook is wanted): a fast prediction gets a single
        # terminal write. The cost: a hub killed in that window runs it again after restart.
        delay = 0.0 if self._wants(live.row, None, "start") else PROCESSING_WRITE_DELAY
        writing = False

        async def mark_processing() -> None:
            nonlocal writing, started_at
            await inst.begun()
            started_at = now()
            if delay:
                await asyncio.sleep(delay)
            writing = True
            async with live.lock:
                async with self.db.begin() as conn:
                    row = await self._update(conn, pid, status="processing", started_at=started_at,
                                             logs=live.logs_prefix, metrics=metrics)
                    sent = await self._write_hook(conn, row, live, "start")
            if sent and self.outbox:
                self.outbox.poke()

        marked = asyncio.ensure_future(mark_processing())

        async def settle() -> None:  # the terminal write comes after any "processing" write
            if writing:
                await marked
            else:
                marked.cancel()

        if live.logs_prefix:
            live.publish("logs", live.logs_prefix.rstrip("\n"))
        noun = self._noun(live.kind)
        hook = f"{self.internal_base}/internal/{self.callback_key}/events/{pid}"
        events = ["output", "logs"] if live.list_output else ["logs"]  # single outputs come with the answer
        try:
            result = await inst.predict(pid, model_input, noun, webhook=hook, events=events,
                                        on_event=self.on_model_event)
        except NotStarted as exc:
            await settle()
            live.instance = None
            live.retries += 1
            if live.retries > 2 or self.closing:
                await self._finish(pid, "failed", error=str(exc), metrics=metrics, started_at=started_at)
            else:  # it never reached the dead server: run it on a fresh one
                log.info("%s: model server gone before it started; queueing it again", pid)
                self._submit(pid, inst.target)
            return
        except ServerGone as exc:
            await settle()
            await self._finish(pid, "failed", error=str(exc), metrics=metrics, started_at=started_at)
            return
        except ValueError as exc:
            await settle()
            await self._finish(pid, "failed", error=f"the model server refused the input: {exc}", metrics=metrics,
                               started_at=started_at)
            return
        await settle()
        status = result.get("status")
        if status not in TERMINAL:
            status, error = "failed", f"the model server answered status {status!r}"
        elif status == "canceled" and live.shutdown:
            status, error = "failed", "the hub shut down while this prediction was running; run it again"
        else:
            error = result.get("error")
        model_metrics = result.get("metrics") or {}
        if "predict_time" in model_metrics:
            metrics["predict_time"] = model_metrics["predict_time"]
        await self._finish(pid, status, output=result.get("output"), logs=for_clients(result.get("logs") or ""),
                           error=None if error is None else str(error), metrics=metrics, started_at=started_at)

    async def _update(self, conn: Any, pid: str, **values: Any) -> t.Prediction:
        """Write ``values`` to the row; returns the row as it now is (the in-memory copy of a
        live prediction, else read back)."""
        if values:
            await conn.execute(_update_statement(frozenset(values), False), {"_pid": pid, **values})
        live = self.live.get(pid)
        if live is not None and live.row is not None:
            for key, value in values.items():
                setattr(live.row, key, value)
            return live.row
        return await self._select(conn, pid)

    @staticmethod
    async def _select(conn: Any, pid: str) -> t.Prediction | None:
        row = (await conn.execute(sa.select(t.Prediction).where(t.Prediction.id == pid))).first()
        return None if row is None else t.Prediction(**row._mapping)

    @staticmethod
    def _wants(row: t.Prediction, live: Live | None, event: str) -> bool:
        """Whether the client's webhook gets ``event`` now (output/logs at most every 0.5 s)."""
        if not row.webhook:
            return False
        wanted = row.webhook_events_filter if row.webhook_events_filter is not None else EVENTS
        if event not in wanted:
            return False
        if event in ("output", "logs") and live is not None:
            if now() - live.last_hook < HOOK_THROTTLE:
                return False
            live.last_hook = now()
        return True

    async def _write_hook(self, conn: Any, row: t.Prediction, live: Live | None, event: str) -> bool:
        if not self._wants(row, live, event):
            return False
        origin = live.origin if live is not None else self.default_origin
        body = json.dumps(await self.render(row, origin))
        await conn.execute(sa.insert(t.Webhook).values(**message(row.id, row.webhook, event, body)))
        return True

    async def on_model_event(self, pid: str, body: dict) -> None:
        """A Cog webhook from a model server: new outputs and logs of a running prediction."""
        live = self.live.get(pid)
        if live is None or not isinstance(body, dict):
            return
        async with live.lock:
            if live.done.is_set():
                return
            output, logs = body.get("output"), for_clients(body.get("logs") or "")
            new_outputs: list[Any] = []
            # Cog reports a single output as a one-item list while running: only array
            # outputs (iterators, lists) stream item by item
            streaming = live.list_output and isinstance(output, list)
            if streaming and len(output) > live.outputs_seen:
                new_outputs = output[live.outputs_seen:]
                live.outputs_seen = len(output)
            new_logs = self._new_log_lines(live, logs)
            if not new_outputs and not new_logs:
                return
            for line in new_logs:
                live.publish("logs", line)
            for item in output_texts(await self.render_output(new_outputs)):
                live.publish("output", item)
            async with self.db.begin() as conn:
                values: dict[str, Any] = {"logs": live.logs_prefix + logs}
                if streaming:
                    values["output"] = output
                row = await self._update(conn, pid, **values)
                sent = False
                if new_outputs:
                    sent = await self._write_hook(conn, row, live, "output")
                if new_logs and not sent:
                    sent = await self._write_hook(conn, row, live, "logs")
        if sent and self.outbox:
            self.outbox.poke()

    @staticmethod
    def _new_log_lines(live: Live, logs: str) -> list[str]:
        if len(logs) <= live.logs_seen:
            return []
        end = logs.rfind("\n") + 1  # only whole lines; the rest comes with the next event
        if end <= live.logs_seen:
            return []
        lines = logs[live.logs_seen:end].splitlines()
        live.logs_seen = end
        return lines

    async def _finish(self, pid: str, status: str, *, output: Any = None, logs: str | None = None,
                      error: str | None = None, metrics: dict | None = None, started_at: float | None = None) -> None:
        live = self.live.get(pid)
        if live is None:
            await self._finish_locked(pid, None, status, output, logs, error, metrics, started_at)
            return
        async with live.lock:
            if not live.done.is_set():
                await self._finish_locked(pid, live, status, output, logs, error, metrics, started_at)

    async def _finish_locked(self, pid: str, live: Live | None, status: str, output: Any, logs: str | None,
                             error: str | None, metrics: dict | None, started_at: float | None) -> None:
        async with self.db.begin() as conn:
            current = live.row if live is not None and live.row is not None else await self._select(conn, pid)
            if current is None or current.status in TERMINAL:
                if live is not None:
                    live.done.set()
                return
            # model_input (secrets included) is only needed until the prediction has run
            values: dict[str, Any] = {"status": status, "completed_at": now(), "error": error, "model_input": None}
            if output is not None:
                values["output"] = output
            if logs is not None:
                values["logs"] = (live.logs_prefix if live else "") + logs
            if current.started_at is None and started_at is not None:
                values["started_at"] = started_at  # ran without a "processing" write of its own
            began = current.started_at or started_at
            merged = dict(current.metrics or {})
            merged.update(metrics or {})
            if "predict_time" not in merged and began is not None:
                merged["predict_time"] = round(values["completed_at"] - began, 6)
            values["metrics"] = merged
            written = await conn.execute(_update_statement(frozenset(values), True), {"_pid": pid, **values})
            if written.rowcount == 0:  # made terminal meanwhile (the row is the truth)
                if live is not None:
                    live.done.set()
                return
            if live is not None and live.row is not None:
                for key, value in values.items():
                    setattr(live.row, key, value)
                row = live.row
            else:
                row = await self._select(conn, pid)
            if status == "succeeded" and current.kind == "prediction":
                owner, name = current.model.split("/", 1)
                await conn.execute(_COUNT_RUN, {"o": owner, "n": name})
            if current.kind == "training" and status == "succeeded":
                await self._training_succeeded(conn, row)
                row = await self._select(conn, pid)
                if live is not None:
                    live.row = row
                status, error = row.status, row.error
            sent = await self._write_hook(conn, row, live, "completed")
        if sent and self.outbox:
            self.outbox.poke()
        if current.kind == "training":
            self.invalidate()  # a trained version may be the destination's latest now
        if live is not None:
            if logs is not None:
                for line in self._new_log_lines(live, logs if logs.endswith("\n") or not logs else logs + "\n"):
                    live.publish("logs", line)
            final = row.output
            if isinstance(final, list):
                rest = final[live.outputs_seen:]
                live.outputs_seen = len(final)
            else:
                rest = final
            if rest is not None and rest != []:
                for item in output_texts(await self.render_output(rest)):
                    live.publish("output", item)
            if status == "failed":
                live.publish("error", json.dumps({"detail": error or "the prediction failed"}))
            live.publish("done", "{}" if status == "succeeded" else json.dumps({"reason": status}))
            live.done.set()
            live.instance = None
            asyncio.get_running_loop().call_later(KEEP_LIVE, self.live.pop, pid, None)

    async def _training_succeeded(self, conn: Any, row: t.Prediction) -> None:
        """Hook for trainings: filled in by ``cogkit.hub.trainings``."""
        from cogkit.hub.trainings import publish_trained_version

        await publish_trained_version(self, conn, row)

    # ------------------------------------------------------------------ reading and canceling

    async def get(self, pid: str, kind: str = "prediction") -> t.Prediction:
        async with self.db.session() as s:
            row = (await s.execute(sa.select(t.Prediction).where(t.Prediction.id == pid,
                                                                 t.Prediction.kind == kind))).scalar()
        if row is None:
            raise ApiError(404, f"{kind.capitalize()} {pid} does not exist")
        return row

    async def by_stream_key(self, key: str) -> t.Prediction | None:
        async with self.db.session() as s:
            return (await s.execute(sa.select(t.Prediction).where(t.Prediction.stream_key == key))).scalar()

    async def wait(self, pid: str, seconds: float) -> t.Prediction | None:
        """Wait up to ``seconds`` for the prediction to finish; returns its row as it then
        is, when the hub holds it in memory."""
        live = self.live.get(pid)
        if live is None:
            return None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(live.done.wait(), seconds)
        return live.row

    async def cancel(self, pid: str, wait: float = 5.0) -> None:
        live = self.live.get(pid)
        if live is None or live.done.is_set():
            return
        live.canceled = True
        if live.instance is None:  # still queued: it never reaches a model server
            await self._finish(pid, "canceled")
            return
        await live.instance.cancel(pid, self._noun(live.kind))
        if wait:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.done.wait(), wait)

    # ------------------------------------------------------------------ rendering

    async def render(self, row: t.Prediction, origin: str, status: str | None = None) -> dict[str, Any]:
        return render.prediction(row, origin, await self.render_output(row.output), status)

    async def render_output(self, value: Any) -> Any:
        """Output files (the hub's key URLs) as ``data:`` URIs, or as key URLs under
        ``--public-url``: what both clients turn into FileOutput (reference §7.3)."""
        prefix = f"{self.internal_base}/files/"
        found = [s for s in find_files(value, str) if s.startswith(prefix)]
        if not found:
            return value
        mapping: dict[str, str] = {}
        for url in found:
            m = KEY_PATH.search(urlsplit(url).path)
            row = self._file_cache.get(m.group(1)) if m else None
            if m and row is None:
                row = await self.files.by_key(m.group(1))
                if row is not None:
                    if len(self._file_cache) > 1024:
                        self._file_cache.clear()
                    self._file_cache[m.group(1)] = row
            if row is None:
                continue
            if self.settings.public_url:
                mapping[url] = self.files.key_url(self.settings.public_url, row)
            else:
                mapping[url] = await asyncio.to_thread(self.files.data_uri, row)
        return map_files(value, lambda s, _: mapping.get(s, s), str)
