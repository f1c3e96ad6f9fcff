"""The Ray Serve backend (``cogkit hub --backend ray``): each model version a Ray Serve
deployment, placed, autoscaled, health-checked and restarted by Ray.

Same interface as ``runner.Pool`` / ``runner.Instance`` (``submit``, ``keep_warm``,
``close``; ``predict``, ``begun``, ``cancel``), so the hub's engine does not know which
backend runs a version. The hub keeps the API, the database, its FIFO queue, webhooks and
files; Ray only runs models (``ray_replica.ModelReplica``). A prediction is handed to Ray
when the pool has room for it (as many as ``max_instances`` replicas can run at once: Ray's
autoscaler sees the demand, the rest waits in the hub's queue), streams its events back
through Ray, and is canceled by canceling that stream.

Ray is imported here only, and only once ``--backend ray`` asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from cogkit.exceptions import CogkitError
from cogkit.hub.runner import Job, NotStarted, ServerGone, Target

log = logging.getLogger("cogkit.hub")

RELAY_INTERVAL = 0.1  # seconds between the live output/log updates of one prediction
UPSCALE_DELAY = 1.0  # seconds of sustained demand before Ray adds a replica
LOOK_BACK = 2.0  # seconds of load Ray's autoscaler averages over
METRICS_INTERVAL = 0.5  # seconds between the load reports it averages
HEALTH_PERIOD = 2.0  # seconds between a replica's health checks
WATCH_INTERVAL = 1.0  # seconds between checks that a deployment can start replicas

OnEvent = Callable[[str, dict[str, Any]], Awaitable[None]]


def _import_ray() -> Any:
    # Ray's fatal-signal handler would print a stack dump on the SIGTERM that stops the hub
    # (read when Ray's core library loads)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
        from ray import serve
    except ImportError:
        raise CogkitError("--backend ray needs Ray Serve: pip install 'cogkit[ray]'") from None
    return ray, serve


class RayCluster:
    """The hub's connection to a Ray cluster: ``address`` (``HOST:PORT`` of ``ray start
    --head``, or ``auto``), or a Ray started in-process when None."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._lock = asyncio.Lock()  # one Serve API call at a time (they are blocking calls in threads)
        # the pool each application was last deployed for: a pool retired after a deployment
        # changed must not delete the application its successor has already updated
        self._owners: dict[str, object] = {}

    async def connect(self) -> None:
        ray, serve = _import_ray()

        def connect() -> None:
            # in a thread, so Ray leaves the hub's signal handlers alone (its warning about that is
            # noise: logging_level ERROR)
            try:
                ray.init(address=self.address, namespace="cogkit", log_to_driver=False, logging_level=logging.ERROR,
                         include_dashboard=False if self.address is None else None)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise CogkitError(f"--ray-address: cannot connect to the Ray cluster at {self.address or '(local)'}: "
                                  f"{exc}") from None
            logging.getLogger("ray.serve").setLevel(logging.WARNING)  # not a line per deploy in the hub's log
            serve.start(proxy_location="Disabled")  # the hub owns HTTP; Ray serves no routes of its own

        await asyncio.to_thread(connect)

    async def deploy(self, target: Target, min_instances: int, boot_timeout: float, owner: object) -> Any:
        """Create or update the version's application; returns its handle once its
        ``min_instances`` replicas are running (at once when that is 0)."""
        _, serve = _import_ray()
        from cogkit.hub.ray_replica import ModelReplica

        config = _deployment_config(target, min_instances)
        app = serve.deployment(ModelReplica).options(**config).bind(asdict(target), boot_timeout)
        name = app_name(target.key)
        async with self._lock:
            try:
                [handle] = await asyncio.to_thread(
                    serve.run_many, [serve.RunTarget(app, name=name, route_prefix=None)],
                    wait_for_applications_running=True)
            except RuntimeError as exc:
                raise ServerGone(f"Ray could not start a replica of this model: {exc}") from None
            self._owners[name] = owner
        return handle

    async def problem(self, key: str) -> str | None:
        """Why the version's deployment cannot run anything now (no replica running and Ray
        gave up starting one), else None."""
        _, serve = _import_ray()
        try:
            status = await asyncio.to_thread(serve.status)
        except Exception as exc:  # the cluster is gone: say so rather than wait forever
            return f"the Ray cluster does not answer: {_first_line(exc)}"
        app = status.applications.get(app_name(key))
        deployment = app.deployments.get("model") if app is not None else None
        if deployment is None or deployment.replica_states.get("RUNNING"):
            return None
        state = str(getattr(deployment.status, "value", deployment.status))
        if state == "UNHEALTHY" and not _is_start_failure(deployment.message):
            return None  # a replica died or failed a health check: Serve is replacing it
        if state not in ("UNHEALTHY", "DEPLOY_FAILED"):
            return None
        return "Ray could not start a replica of this model: " + _constructor_error(deployment.message)

    async def delete(self, key: str, owner: object) -> None:
        _, serve = _import_ray()
        async with self._lock:
            if self._owners.get(app_name(key)) is not owner:
                return  # never deployed by this pool, or redeployed by another since
            del self._owners[app_name(key)]
            try:
                # not waiting for the replicas' graceful stop: the hub's shutdown stays within its 15 s
                await asyncio.to_thread(serve.delete, app_name(key), _blocking=False)
            except Exception as exc:  # the cluster may be gone already
                log.warning("could not delete Ray application %s: %s", app_name(key), exc)

    async def close(self) -> None:
        """Nothing to do: Ray disconnects at the hub's exit (a cluster started elsewhere keeps
        running). An explicit ``ray.shutdown()`` here raced Serve's router threads, which
        then tried to reconnect and logged tracebacks."""


def app_name(key: str) -> str:
    """The Serve application of a version key (``vid``, ``vid@owner/name``, ``...#train``)."""
    return "cogkit-" + re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def _deployment_config(target: Target, min_instances: int) -> dict[str, Any]:
    slots = max(1, target.slots)
    actor: dict[str, Any] = {"num_cpus": target.cpus if target.cpus is not None else 1}
    if target.gpu:
        actor["num_gpus"] = 1
    if target.memory:
        actor["memory"] = target.memory
    low = max(0, min(min_instances, target.max_instances))
    return {
        "name": "model",
        "ray_actor_options": actor,
        "max_ongoing_requests": slots,  # the model's concurrency slots: Ray never oversubscribes a server
        "autoscaling_config": {
            "min_replicas": low, "max_replicas": max(1, target.max_instances), "initial_replicas": low,
            "target_ongoing_requests": slots, "upscale_delay_s": UPSCALE_DELAY, "look_back_period_s": LOOK_BACK,
            "metrics_interval_s": METRICS_INTERVAL,
            "downscale_delay_s": target.idle_timeout, "downscale_to_zero_delay_s": target.idle_timeout,
        },
        "health_check_period_s": HEALTH_PERIOD,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 5.0,
        "max_constructor_retry_count": 3,
    }


class RayInstance:
    """One prediction's run on a replica Ray chose."""

    def __init__(self, pool: RayPool) -> None:
        self.pool = pool
        self.target = pool.target
        self._response: Any = None
        self._started = asyncio.Event()
        self._canceled = False
        self._failure: str | None = None  # why the pool gave up on it before it started

    async def begun(self) -> None:
        """Returns once a replica has started the prediction (until then it is queued)."""
        await self._started.wait()

    async def predict(self, pid: str, model_input: dict[str, Any], noun: str = "predictions",
                      webhook: str | None = None, events: list[str] | None = None,
                      on_event: OnEvent | None = None) -> dict[str, Any]:
        """Run one prediction; live outputs and logs go to ``on_event`` as Cog-shaped
        bodies (at most every RELAY_INTERVAL s); the final body is the answer."""
        _import_ray()
        from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError

        output: list[Any] = []
        logs: list[str] = []
        dirty = asyncio.Event()
        sending = asyncio.Lock()

        async def relay() -> None:
            while on_event is not None:
                await dirty.wait()
                dirty.clear()
                async with sending:
                    await on_event(pid, {"output": list(output), "logs": "".join(logs)})
                await asyncio.sleep(RELAY_INTERVAL)

        relaying = asyncio.ensure_future(relay())
        self._response = self.pool.handle.options(stream=True).run.remote(pid, noun, model_input)
        self.pool.waiting(self)
        try:
            async for batch in self._response:
                for event, data in batch:
                    if event == "start":
                        self._started.set()
                        self.pool.started(self)
                    elif event == "log":
                        logs.append(data.get("data", ""))
                        dirty.set()
                    elif event == "output":
                        output.append(data.get("chunk"))
                        dirty.set()
                    elif event == "completed":
                        return data
                    elif event == "refused":
                        status, body = data.get("status"), data.get("body")
                        if status == 422:
                            detail = body.get("detail") if isinstance(body, dict) else body
                            raise ValueError(detail if isinstance(detail, str) else str(detail))
                        raise NotStarted(f"the replica's model server answered {status}: {body}")
                    elif event == "gone":
                        if not self._started.is_set():
                            raise NotStarted(data.get("error", "the model server is gone"))
                        raise ServerGone(data.get("error", "the model server stopped"))
            raise ServerGone("the Ray replica ended the prediction's stream without a result")
        except TaskCancelledError:
            if self._failure is not None:
                raise ServerGone(self._failure) from None
            if self._canceled:
                return {"status": "canceled", "output": output or None, "logs": "".join(logs)}
            raise ServerGone("Ray canceled the prediction") from None
        except RayActorError as exc:
            gone = "before it started the prediction" if not self._started.is_set() else "while running the prediction"
            msg = f"the Ray replica running this model died {gone}: {_first_line(exc)}"
            if not self._started.is_set():
                raise NotStarted(msg) from None
            raise ServerGone(msg) from None
        except RayTaskError as exc:
            raise ServerGone(f"the Ray replica failed: {_first_line(exc)}") from None
        finally:
            self.pool.started(self)
            async with sending:  # a live update being written goes first; the final answer has the rest
                relaying.cancel()

    async def cancel(self, pid: str, noun: str = "predictions") -> None:
        self._canceled = True
        if self._response is not None:
            self._response.cancel()

    def fail(self, reason: str) -> None:
        """Give up before a replica took it (the deployment cannot start one)."""
        self._failure = reason
        if self._response is not None:
            self._response.cancel()


def _is_start_failure(message: str) -> bool:
    """Whether an UNHEALTHY status says new replicas fail to start (their constructor, i.e.
    the model's setup), rather than that a running one died and is being replaced."""
    return "ServerGone" in (message or "") or "constructor" in (message or "")


def _constructor_error(message: str) -> str:
    """The replica's own error out of Serve's status message (which wraps it in a traceback)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message or "")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("ray::"))  # Ray's actor banner
    marker = "ServerGone: "
    at = text.rfind(marker)
    if at >= 0:
        return text[at + len(marker):].strip()
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-5:]) or "(no reason given)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayPool:
    """The hub's queue for one version and its Serve application."""

    def __init__(self, target: Target, cluster: RayCluster, boot_timeout: float) -> None:
        self.target = target
        self.cluster = cluster
        self.boot_timeout = boot_timeout
        self.queue: asyncio.Queue[tuple[Job, Callable[[str], Awaitable[None]]]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.min_instances = target.min_instances
        self.handle: Any = None
        self.inflight = 0
        self._deploying: asyncio.Task[None] | None = None
        self._waiting: set[RayInstance] = set()  # handed to Ray, no replica has started them yet
        self._watcher: asyncio.Task[None] | None = None

    @property
    def capacity(self) -> int:
        """Predictions handed to Ray at once: what ``max_instances`` replicas can run. That is
        demand enough for the autoscaler to reach the maximum, and no more: a request that waits
        in Ray's router for a busy replica is retried with back-off (measured: 2 replicas gave
        1.69x one replica with twice this, 1.79x with this; bench/hub_ray.py)."""
        return max(1, self.target.max_instances) * max(1, self.target.slots)

    def submit(self, job: Job, on_boot_error: Callable[[str], Awaitable[None]]) -> None:
        self.queue.put_nowait((job, on_boot_error))
        self._dispatch()

    def keep_warm(self, n: int) -> None:
        self.min_instances = min(n, self.target.max_instances)
        self._deploy()  # (re)deploying with the new minimum

    def _deploy(self) -> None:
        if self.closing or (self._deploying is not None and not self._deploying.done()):
            return
        self._deploying = asyncio.ensure_future(self._deploy_now())

    async def _deploy_now(self) -> None:
        t0 = time.monotonic()
        try:
            self.handle = await self.cluster.deploy(self.target, self.min_instances, self.boot_timeout, self)
        except ServerGone as exc:
            log.warning("%s: %s", app_name(self.target.key), exc)
            while not self.queue.empty():  # nothing can run them: each fails with the reason
                _, on_error = self.queue.get_nowait()
                await on_error(str(exc))
            return
        log.info("Ray application %s ready in %.1f s", app_name(self.target.key), time.monotonic() - t0)
        self._dispatch()

    def _dispatch(self) -> None:
        if self.closing:
            return
        if self.handle is None:
            self._deploy()
            return
        while not self.queue.empty() and self.inflight < self.capacity:
            job, _ = self.queue.get_nowait()
            self.inflight += 1
            task = asyncio.ensure_future(self._run(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, job: Job) -> None:
        try:
            await job(RayInstance(self), None)  # type: ignore[arg-type]
        except Exception:  # a job never takes the pool down
            log.exception("prediction job failed")
        finally:
            self.inflight -= 1
            self._dispatch()

    def waiting(self, inst: RayInstance) -> None:
        self._waiting.add(inst)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch())

    def started(self, inst: RayInstance) -> None:
        self._waiting.discard(inst)

    async def _watch(self) -> None:
        """While predictions wait for a replica, check that Ray can still start one: a model
        whose setup fails would otherwise leave them waiting in Ray's router for ever."""
        while self._waiting and not self.closing:
            await asyncio.sleep(WATCH_INTERVAL)
            if not self._waiting:
                return
            problem = await self.cluster.problem(self.target.key)
            if problem is not None:
                log.warning("%s: %s", app_name(self.target.key), problem)
                for inst in list(self._waiting):
                    self._waiting.discard(inst)
                    inst.fail(problem)

    async def close(self, grace: float) -> None:
        self.closing = True
        if self._deploying is not None:
            self._deploying.cancel()
        await self.cluster.delete(self.target.key, self)
