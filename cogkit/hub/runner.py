"""Model servers: each version's ``cogkit serve`` processes on loopback ports, started on
first use, up to ``max_instances`` side by side, stopped when idle, replaced after a crash.

The hub talks to them with Cog's own protocol (a synchronous ``PUT /predictions/{id}``),
so any Cog server works behind it; a server that dies mid-prediction fails that
prediction with a clear error instead of leaving it running forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from cogkit.hub.loopback import Broken, LoopbackClient, Refused

log = logging.getLogger("cogkit.hub")


@dataclass
class Target:
    """What to run: a project folder (spawned) or a running server's URL."""

    key: str  # the version id
    project_dir: str | None = None
    url: str | None = None
    weights: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    max_instances: int = 1
    min_instances: int = 0  # servers kept running when idle
    idle_timeout: float = 300.0
    args: list[str] = field(default_factory=list)  # extra `cogkit.server` flags (the hub's --upload-url)
    # what the Ray backend places by (the local backend runs one prediction per server)
    slots: int = 1  # cog.yaml concurrency.max
    gpu: bool = False  # cog.yaml build.gpu
    cpus: float | None = None  # hub.yaml; Ray's default for a replica is 1
    memory: int | None = None  # bytes, hub.yaml


class ServerGone(Exception):
    """The model server stopped (or could not start) while a prediction needed it."""


class NotStarted(ServerGone):
    """The model server was gone before it got the prediction: it can run elsewhere."""


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the hub dies, even by SIGKILL, so no
    model server outlives it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    def __init__(self, target: Target, client: httpx.AsyncClient) -> None:
        self.target = target
        self.client = client
        self.proc: asyncio.subprocess.Process | None = None
        self.url = target.url or ""
        self.busy = False
        self.dead = False  # its server stopped answering (before the process is reaped)
        self.last_used = time.monotonic()
        self.setup_logs = ""
        self.loopback: LoopbackClient | None = None  # the fast path to a server the hub started

    async def start(self, timeout: float) -> float:
        """Start the server and wait for READY; returns the boot time in seconds."""
        t0 = time.monotonic()
        if self.target.url:
            return 0.0
        port = _free_port()
        env = dict(os.environ)
        env.update(self.target.env)
        if self.target.weights:
            env["COG_WEIGHTS"] = self.target.weights
        env.setdefault("COGKIT_SHUTDOWN_GRACE", "3")
        env.setdefault("COG_THROTTLE_RESPONSE_INTERVAL", "0.1")  # live logs/outputs reach the hub quickly
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cogkit.server", "--host", "127.0.0.1", "--port", str(port), *self.target.args,
            cwd=self.target.project_dir, env=env, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.url = f"http://127.0.0.1:{port}"
        self.loopback = LoopbackClient("127.0.0.1", port)
        deadline = t0 + timeout
        while True:
            if self.proc.returncode is not None:
                raise ServerGone(f"the model server exited during start-up (exit code {self.proc.returncode})")
            try:
                r = await self.client.get(self.url + "/health-check", timeout=2.0)
                body = r.json()
                status = body.get("status")
                self.setup_logs = ((body.get("setup") or {}).get("logs")) or ""
                if status in ("READY", "BUSY"):
                    return time.monotonic() - t0
                if status in ("SETUP_FAILED", "DEFUNCT"):
                    await self.stop()
                    raise ServerGone(f"model setup failed:\n{self.setup_logs}".rstrip())
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline:
                await self.stop()
                raise ServerGone(f"the model server was not ready within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    @property
    def alive(self) -> bool:
        if self.dead:
            return False
        return self.target.url is not None or (self.proc is not None and self.proc.returncode is None)

    async def begun(self) -> None:
        """The prediction starts as soon as it is handed over (``predict``)."""

    async def predict(self, pid: str, model_input: dict[str, Any], noun: str = "predictions",
                      webhook: str | None = None, events: list[str] | None = None,
                      on_event: Any = None) -> dict[str, Any]:
        """Run one prediction synchronously; live outputs and logs arrive meanwhile as Cog
        webhooks on ``webhook`` (the final state is this call's answer). ``on_event`` is
        the Ray backend's way for the same updates; a Cog server has only webhooks."""
        body: dict[str, Any] = {"input": model_input}
        if webhook:
            body["webhook"] = webhook
            body["webhook_events_filter"] = events or ["output", "logs"]
        path = f"/{noun}/{pid}"
        try:
            if self.loopback is not None:
                r = await self.loopback.request("PUT", path, orjson.dumps(body))
                status, raw = r.status, r.body
            else:  # a Cog server somewhere else: any URL httpx can reach
                resp = await self.client.put(self.url + path, json=body, timeout=None)
                status, raw = resp.status_code, resp.content
        except (Refused, httpx.ConnectError) as exc:
            self.dead = True
            raise NotStarted(f"the model server at {self.url} is gone: {exc}") from None
        except (Broken, httpx.TransportError) as exc:
            self.dead = True
            code = self.proc.returncode if self.proc is not None else None
            raise ServerGone(f"the model server stopped while running the prediction"
                             f"{f' (exit code {code})' if code is not None else ''}: {exc}") from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if status == 422:
            detail = answer.get("detail") if isinstance(answer, dict) else raw[:500]
            raise ValueError(detail if isinstance(detail, str) else str(detail))
        if status >= 400 or not isinstance(answer, dict):
            raise ServerGone(f"the model server answered {status}: {raw[:500].decode('utf-8', 'replace')}")
        return answer

    async def cancel(self, pid: str, noun: str = "predictions") -> None:
        with contextlib.suppress(httpx.TransportError):
            await self.client.post(f"{self.url}/{noun}/{pid}/cancel", timeout=5.0)

    async def stop(self, grace: float = 5.0) -> None:
        if self.loopback is not None:
            self.loopback.close()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


Job = Callable[[Instance, float | None], Awaitable[None]]


class Pool:
    """The instances of one version and its FIFO queue of jobs."""

    def __init__(self, target: Target, client: httpx.AsyncClient, boot_timeout: float) -> None:
        self.target = target
        self.client = client
        self.boot_timeout = boot_timeout
        self.instances: list[Instance] = []
        self.queue: asyncio.Queue[tuple[Job, Callable[[str], Awaitable[None]]]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.starting = 0
        self.closing = False  # no new work starts once the hub shuts down
        self.min_instances = 0  # servers kept running even when idle (a deployment's min_instances)
        self._reaper = asyncio.ensure_future(self._reap_idle())

    def submit(self, job: Job, on_boot_error: Callable[[str], Awaitable[None]]) -> None:
        self.queue.put_nowait((job, on_boot_error))
        self._dispatch()

    def keep_warm(self, n: int) -> None:
        """Start servers until ``n`` run (at most ``max_instances``), and keep them when idle."""
        self.min_instances = min(n, self.target.max_instances)
        while not self.closing and len([i for i in self.instances if i.alive or i.busy]) < self.min_instances:
            inst = Instance(self.target, self.client)
            inst.busy = True  # not handed work before it is READY
            self.instances.append(inst)
            task = asyncio.ensure_future(self._warm(inst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _warm(self, inst: Instance) -> None:
        try:
            await inst.start(self.boot_timeout)
        except ServerGone as exc:
            log.warning("could not start a warm model server: %s", exc)
            self.instances.remove(inst)
            return
        inst.busy = False
        inst.last_used = time.monotonic()
        self._dispatch()

    def _dispatch(self) -> None:
        while not self.queue.empty() and not self.closing:
            inst = next((i for i in self.instances if not i.busy and i.alive), None)
            boot = None
            if inst is None:
                self.instances = [i for i in self.instances if i.alive or i.busy]
                if len(self.instances) + self.starting >= self.target.max_instances:
                    return
                inst = Instance(self.target, self.client)
                self.instances.append(inst)
                boot = True
            inst.busy = True
            job, on_error = self.queue.get_nowait()
            task = asyncio.ensure_future(self._run(inst, job, on_error, boot))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, inst: Instance, job: Job, on_error: Callable[[str], Awaitable[None]], boot: bool | None) -> None:
        boot_time = None
        try:
            if boot:
                try:
                    boot_time = await inst.start(self.boot_timeout)
                except ServerGone as exc:
                    self.instances.remove(inst)
                    await on_error(str(exc))
                    return
            await job(inst, boot_time)
        except Exception:  # a job never takes the pool down
            log.exception("prediction job failed")
        finally:
            inst.busy = False
            inst.last_used = time.monotonic()
            if not inst.alive and inst in self.instances:
                self.instances.remove(inst)
            self._dispatch()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.target.idle_timeout / 2))
            now = time.monotonic()
            for inst in list(self.instances):
                if len(self.instances) <= self.min_instances:
                    break
                if not inst.busy and now - inst.last_used > self.target.idle_timeout and inst.proc is not None:
                    self.instances.remove(inst)
                    log.info("stopping idle model server %s", inst.url)
                    await inst.stop()

    async def close(self, grace: float) -> None:
        self.closing = True
        self._reaper.cancel()
        await asyncio.gather(*(i.stop(grace) for i in self.instances), return_exceptions=True)
        self.instances.clear()
