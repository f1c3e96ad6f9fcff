"""The worker: a real child process per test, driven through cogkit.worker.client.Worker.

Fixture predictors live in tests/fixtures/worker/. Each test spawns its own child
(~0.1 s); nothing is mocked: crashes are real signals and exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cogkit.worker.client import WorkerBusy, WorkerNotReady
from cogkit.worker.client import Worker as _Worker
from cogkit.worker.protocol import Canceled, Done, Failed, FileInput, FileOutput, Log, Metric, Output

FIXTURES = Path(__file__).parents[1] / "fixtures" / "worker"
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def Worker(ref: str, project_dir: Path | str = FIXTURES, **kw: Any) -> _Worker:  # noqa: N802
    return _Worker(ref, project_dir, **kw)


async def started(ref: str, **kw: Any) -> _Worker:
    w = Worker(ref, **kw)
    await w.start()
    await w.wait_ready()
    return w


class Result:
    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.terminal = events[-1]
        self.logs = "".join(e.text for e in events if isinstance(e, Log))
        self.outputs = [e.value for e in events if isinstance(e, Output)]
        self.metrics = [e for e in events if isinstance(e, Metric)]


async def collect(handle: Any) -> Result:
    return Result([ev async for ev in handle])


async def predict(w: _Worker, pid: str, inputs: dict[str, Any] | None = None, **kw: Any) -> Result:
    return await collect(await w.predict(pid, inputs or {}, **kw))


async def wait_for_log(handle: Any, text: str, into: list[Any]) -> None:
    """Consume events until a Log containing ``text`` arrived (kept in ``into``)."""
    async for ev in handle:
        into.append(ev)
        if isinstance(ev, Log) and text in ev.text:
            return
    raise AssertionError(f"{text!r} never logged; got {into!r}")


async def rest(handle: Any, into: list[Any]) -> Result:
    async for ev in handle:
        into.append(ev)
    return Result(into)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- basics


def test_hello_round_trip_and_setup_logs_kept_apart() -> None:
    async def main() -> None:
        w = Worker("hello.py:Predictor")
        assert w.state == "STARTING"
        await w.start()
        assert w.loaded is not None
        assert w.loaded.schema["components"]["schemas"]["Input"]["required"] == ["text"]
        assert not w.loaded.is_async and w.loaded.max_concurrency == 1
        setup = await w.wait_ready()
        assert w.state == "READY"
        assert setup.status == "succeeded" and setup.logs == "setting up\n"
        assert setup.completed_at is not None and setup.completed_at >= setup.started_at
        for i in range(3):
            r = await predict(w, f"p{i}", {"text": "world"})
            assert isinstance(r.terminal, Done)
            assert r.terminal.output == "hello world"
            assert r.logs == "predicting world\n"  # setup output is not repeated here
            assert r.terminal.predict_time > 0
        assert w.setup.logs == "setting up\n"
        await w.shutdown()
        assert w.state == "STOPPED"

    run(main())


def test_slot_is_free_when_terminal_event_arrives_and_busy_when_taken() -> None:
    async def main() -> None:
        w = await started("hello.py:Predictor")
        for i in range(50):  # a client sending its next request right after a response
            h = await w.predict(f"s{i}", {"text": "x"})
            async for ev in h:
                if isinstance(ev, (Done, Failed, Canceled)):
                    assert w.free_slots == 1
        w2 = await started("cancel_sync.py:Predictor")
        h = await w2.predict("long", {"mode": "sleep"})
        assert w2.free_slots == 0
        with pytest.raises(WorkerBusy):
            await w2.predict("other", {})
        with pytest.raises(ValueError, match="already running"):
            await w2.predict("long", {})
        assert await w2.cancel("long")
        await collect(h)
        assert w2.free_slots == 1
        assert not await w2.cancel("long")  # no longer in flight
        await w.shutdown()
        await w2.shutdown()

    run(main())


def test_child_imports_stay_light() -> None:
    async def main() -> None:
        w = await started("modules.py:predict")
        r = await predict(w, "m")
        assert r.terminal.output == ""  # no pydantic, fastapi, httpx, numpy, torch, asyncio
        await w.shutdown()

    run(main())


# --------------------------------------------------------------------------- logs


def test_logs_capture_python_c_level_and_subprocess_output_in_order() -> None:
    async def main() -> None:
        w = await started("logs.py:Predictor")
        assert w.setup.logs == "setup: print\nsetup: fd2\n"
        r = await predict(w, "a", {"tag": "x"})
        assert isinstance(r.terminal, Done), r.terminal
        assert r.logs == (
            "x print\nx stderr\nlog: x logging\nx fd1\nx printf\nx subprocess\nx partial"
        )
        streams = {e.text: e.stream for e in r.events if isinstance(e, Log)}
        assert streams["x stderr\n"] == "stderr" and streams["x print\n"] == "stdout"
        r2 = await predict(w, "b", {"tag": "y"})  # nothing of the first run leaks into the second
        assert r2.logs.startswith("y print\n") and "x " not in r2.logs
        assert w.setup.logs == "setup: print\nsetup: fd2\n"
        await w.shutdown()

    run(main())


def test_echo_logs_copies_output_to_parent_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        w = await started("hello.py:Predictor", echo_logs=True)
        await predict(w, "e", {"text": "echo"})
        await w.shutdown()

    run(main())
    err = capsys.readouterr().err
    assert "setting up\n" in err and "predicting echo\n" in err


def test_concurrent_async_predictions_get_their_own_logs() -> None:
    async def main() -> None:
        w = await started("async_sleep.py:Predictor")
        handles = [await w.predict(tag, {"seconds": 0.3, "tag": tag}) for tag in "abc"]
        results = await asyncio.gather(*(collect(h) for h in handles))
        for tag, r in zip("abc", results):
            assert r.logs == f"start {tag}\nend {tag}\n"
        await w.shutdown()

    run(main())


# --------------------------------------------------------------------------- cancel


@pytest.mark.parametrize("mode", ["sleep", "long_sleep", "busy", "print"])
def test_cancel_sync_prediction(mode: str) -> None:
    async def main() -> None:
        w = await started("cancel_sync.py:Predictor")
        child_pid = w.pid
        h = await w.predict("c", {"mode": mode})
        seen: list[Any] = []
        await wait_for_log(h, "started", seen)
        t0 = time.monotonic()
        assert await w.cancel("c")
        r = await rest(h, seen)
        latency = time.monotonic() - t0
        assert isinstance(r.terminal, Canceled), r.terminal
        assert latency < 1.0, f"cancel took {latency:.2f} s"
        assert "cleanup after cancel" in r.logs  # CancelationException raised inside predict
        assert w.pid == child_pid and w.state == "READY"  # no restart was needed
        r2 = await predict(w, "after", {"mode": "sleep", "seconds": 0.0})
        assert isinstance(r2.terminal, Done) and r2.terminal.output == "finished"
        await w.shutdown()

    run(main())


def test_cancel_async_prediction_leaves_the_others_running() -> None:
    async def main() -> None:
        w = await started("async_sleep.py:Predictor")
        keep = await w.predict("keep", {"seconds": 0.5, "tag": "keep"})
        stop = await w.predict("stop", {"seconds": 30, "tag": "stop"})
        seen: list[Any] = []
        await wait_for_log(stop, "start stop", seen)
        t0 = time.monotonic()
        assert await w.cancel("stop")
        r = await rest(stop, seen)
        assert isinstance(r.terminal, Canceled) and time.monotonic() - t0 < 1.0
        assert "cancelled stop" in r.logs  # asyncio.CancelledError inside predict
        rk = await collect(keep)
        assert isinstance(rk.terminal, Done) and rk.terminal.output["tag"] == "keep"
        await w.shutdown()

    run(main())


def test_cancel_sent_with_the_prediction_still_ends_an_async_prediction() -> None:
    """Predict and Cancel read together: the task is canceled before its first step."""

    async def main() -> None:
        w = await started("async_sleep.py:Predictor", cancel_grace=60)
        for i in range(5):
            h = w.submit(f"early{i}", {"seconds": 30})
            await w.cancel(f"early{i}")
            r = await asyncio.wait_for(collect(h), 5)
            assert isinstance(r.terminal, Canceled), r.terminal
        assert w.restarts == 0 and w.free_slots == 4
        await w.shutdown()

    run(main())


@pytest.mark.parametrize(
    ("ref", "inputs"),
    [
        ("cancel_sync.py:Predictor", {"mode": "swallow"}),
        ("async_sleep.py:Predictor", {"seconds": 30, "swallow": True, "tag": "s"}),
    ],
)
def test_cancel_ignored_by_predict_escalates_to_a_restart(ref: str, inputs: dict[str, Any]) -> None:
    async def main() -> None:
        w = await started(ref, cancel_grace=0.5)
        first_pid = w.pid
        h = await w.predict("stubborn", inputs)
        seen: list[Any] = []
        await wait_for_log(h, "start", seen)
        await w.cancel("stubborn")
        r = await rest(h, seen)
        assert isinstance(r.terminal, Canceled)
        assert "ignoring cancel" in r.logs
        await w.wait_ready()
        assert w.state == "READY" and w.restarts == 1 and w.pid != first_pid
        assert not pid_alive(first_pid)
        await w.shutdown()

    run(main())


def test_kill_ends_a_prediction_that_ignores_its_cancel_at_once() -> None:
    async def main() -> None:
        w = await started("cancel_sync.py:Predictor", cancel_grace=60)
        first_pid = w.pid
        h = await w.predict("stubborn", {"mode": "swallow"})
        seen: list[Any] = []
        await wait_for_log(h, "started", seen)
        await w.cancel("stubborn")
        await wait_for_log(h, "ignoring cancel", seen)
        w.kill()
        r = await asyncio.wait_for(rest(h, seen), 5)
        assert isinstance(r.terminal, Canceled)
        await w.wait_ready()
        assert w.state == "READY" and w.restarts == 1 and not pid_alive(first_pid)
        await w.shutdown()

    run(main())


# --------------------------------------------------------------------------- crashes


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("exit", "Worker crashed (exit code 3)"),
        ("segv", "Worker crashed (killed by signal SIGSEGV)"),
        ("kill", "Worker crashed (killed by signal SIGKILL)"),
        ("garbage", "Worker crashed (invalid message"),
    ],
)
def test_crash_fails_the_prediction_and_the_worker_restarts(how: str, error: str) -> None:
    async def main() -> None:
        w = await started("crash.py:Predictor")
        first_pid = w.pid
        r = await predict(w, "crash", {"how": how})
        assert isinstance(r.terminal, Failed)
        assert r.terminal.error.startswith(error), r.terminal.error
        assert "about to " + how in r.logs
        if how == "segv":  # faulthandler's report reaches the prediction's logs
            assert "Segmentation fault" in r.logs and "crash.py" in r.logs
        assert w.state == "STARTING"
        with pytest.raises(WorkerNotReady):
            await w.predict("too-early", {})
        setup = await w.wait_ready()
        assert w.state == "READY" and w.restarts == 1
        assert setup.logs == f"setup in {w.pid}\n"  # the new child's setup
        assert w.pid != first_pid and not pid_alive(first_pid)
        r2 = await predict(w, "next", {"how": "ok"})
        assert isinstance(r2.terminal, Done) and r2.terminal.output == f"ok from {w.pid}"
        await w.shutdown()

    run(main())


@pytest.mark.parametrize(("how", "error"), [("raise", "ValueError: boom"), ("sysexit", "SystemExit: 2")])
def test_exceptions_fail_only_the_prediction(how: str, error: str) -> None:
    async def main() -> None:
        w = await started("crash.py:Predictor")
        child_pid = w.pid
        r = await predict(w, "f", {"how": how})
        assert isinstance(r.terminal, Failed) and r.terminal.error == error
        assert "Traceback (most recent call last)" in r.logs and r.logs.rstrip().endswith(error)
        assert "crash.py" in r.logs and "cogkit/worker" not in r.logs  # the user's frames only
        assert w.pid == child_pid and w.state == "READY" and w.restarts == 0
        r2 = await predict(w, "g", {"how": "ok"})
        assert isinstance(r2.terminal, Done)
        await w.shutdown()

    run(main())


def test_setup_exception_is_setup_failed_with_logs() -> None:
    async def main() -> None:
        w = Worker("setup_fails.py:Predictor")
        await w.start()
        assert w.loaded is not None  # loading worked; setup runs after start() returns
        setup = await w.wait_ready()
        assert w.state == "SETUP_FAILED" and setup.status == "failed"
        assert setup.error == "RuntimeError: weights are missing"
        assert setup.logs.startswith("loading weights\nTraceback")
        assert setup.logs.endswith("RuntimeError: weights are missing\n")
        with pytest.raises(WorkerNotReady):
            await w.predict("x", {})
        await asyncio.sleep(0.2)
        assert w.state == "SETUP_FAILED"  # the child's exit is not treated as a crash
        await w.shutdown()

    run(main())


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("missing.py:Predictor", "PredictorError: predictor file"),
        ("hello.py:Nope", "PredictorError: hello.py has no attribute 'Nope'"),
    ],
)
def test_load_failure_is_setup_failed(ref: str, error: str) -> None:
    async def main() -> None:
        w = Worker(ref)
        await w.start()
        assert w.state == "SETUP_FAILED" and w.loaded is None
        assert w.setup.error is not None and w.setup.error.startswith(error)
        assert error in w.setup.logs
        await w.shutdown()

    run(main())


def test_failed_restart_makes_the_worker_defunct(tmp_path: Path) -> None:
    async def main() -> None:
        w = await started("restart_fails.py:Predictor", env={"MARKER": str(tmp_path / "marker")})
        assert w.state == "READY"
        r = await predict(w, "x")
        assert isinstance(r.terminal, Failed) and r.terminal.error == "Worker crashed (exit code 1)"
        setup = await w.wait_ready()
        assert w.state == "DEFUNCT" and setup.error == "RuntimeError: second setup fails"
        await w.shutdown()

    run(main())


def test_no_restart_when_disabled() -> None:
    async def main() -> None:
        w = await started("crash.py:Predictor", restart_on_crash=False)
        r = await predict(w, "x", {"how": "exit"})
        assert isinstance(r.terminal, Failed)
        assert w.state == "DEFUNCT"
        await w.shutdown()

    run(main())


def test_setup_timeout() -> None:
    async def main() -> None:
        w = Worker("slow_setup.py:Predictor", setup_timeout=0.5)
        await w.start()
        setup = await w.wait_ready()
        assert w.state == "SETUP_FAILED"
        assert setup.error == "setup timed out after 0.5 seconds"
        assert "slow setup starting" in setup.logs
        await w.shutdown()

    run(main())


def test_crash_during_setup_is_setup_failed() -> None:
    async def main() -> None:
        w = Worker("slow_setup.py:Predictor")
        await w.start()
        while "slow setup starting" not in w.setup.logs:
            await asyncio.sleep(0.01)
        assert w.pid is not None
        os.kill(w.pid, signal.SIGKILL)
        setup = await w.wait_ready()
        assert w.state == "SETUP_FAILED" and w.restarts == 0
        assert setup.error == "Worker crashed during setup (killed by signal SIGKILL)"
        await w.shutdown()

    run(main())


def test_sync_predictor_with_max_concurrency_above_one_fails_setup() -> None:
    async def main() -> None:
        w = await started("hello.py:Predictor", max_concurrency=2)
        assert w.state == "SETUP_FAILED"
        assert w.setup.error == "COG_MAX_CONCURRENCY > 1 requires an async run() or predict() method"
        assert w.setup.logs.endswith("COG_MAX_CONCURRENCY > 1 requires an async run() or predict() method\n")
        await w.shutdown()

    run(main())


def test_parent_exit_stops_the_child(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from cogkit.worker.client import Worker\n"
        "async def main():\n"
        f"    w = Worker('cancel_sync.py:Predictor', {str(FIXTURES)!r})\n"
        "    await w.start(); await w.wait_ready()\n"
        "    await w.predict('p', {'mode': 'sleep'})\n"
        "    print(w.pid, flush=True)\n"
        "    os._exit(0)  # no shutdown: the child must notice on its own\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=True)
    child = int(out.stdout.strip())
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


def test_shutdown_cancels_what_does_not_finish_in_time() -> None:
    async def main() -> None:
        w = await started("cancel_sync.py:Predictor")
        child_pid = w.pid
        h = await w.predict("long", {"mode": "sleep"})
        seen: list[Any] = []
        await wait_for_log(h, "started", seen)
        await w.shutdown(grace=0.2)
        r = await rest(h, seen)
        assert isinstance(r.terminal, Canceled)
        assert w.state == "STOPPED" and not pid_alive(child_pid)
        with pytest.raises(WorkerNotReady):
            await w.predict("after", {})

    run(main())


# --------------------------------------------------------------------------- async concurrency


def test_async_predictions_run_concurrently_up_to_the_limit() -> None:
    async def main() -> None:
        w = await started("async_sleep.py:Predictor")
        assert w.loaded is not None and w.loaded.is_async and w.max_concurrency == 4
        t0 = time.monotonic()
        handles = [await w.predict(f"p{i}", {"seconds": 0.5, "tag": str(i)}) for i in range(4)]
        assert w.free_slots == 0
        with pytest.raises(WorkerBusy):
            await w.predict("fifth", {})
        results = await asyncio.gather(*(collect(h) for h in handles))
        elapsed = time.monotonic() - t0
        outs = [r.terminal.output for r in results]
        assert all(isinstance(r.terminal, Done) for r in results)
        # they overlapped: every one started before any one ended
        assert max(o["started"] for o in outs) < min(o["ended"] for o in outs)
        assert elapsed < 1.5, f"4 x 0.5 s took {elapsed:.2f} s"
        assert w.free_slots == 4
        await w.shutdown()

    run(main())


def test_max_concurrency_argument_overrides_the_decorator() -> None:
    async def main() -> None:
        w = await started("async_sleep.py:Predictor", max_concurrency=2)
        assert w.max_concurrency == 2
        await w.shutdown()

    run(main())


# --------------------------------------------------------------------------- outputs


def test_iterator_outputs_arrive_as_they_are_yielded() -> None:
    async def main() -> None:
        w = await started("iterators.py:Predictor")
        h = await w.predict("it", {"count": 3, "pause": 0.4})
        arrivals: list[tuple[float, Any]] = []
        async for ev in h:
            arrivals.append((time.monotonic(), ev))
        items = [ev.value for _, ev in arrivals if isinstance(ev, Output)]
        assert items == ["item0", "item1", "item2"]
        done_at, done = arrivals[-1]
        assert isinstance(done, Done) and done.output is None
        first_at = next(t for t, ev in arrivals if isinstance(ev, Output))
        assert done_at - first_at > 0.6  # the first item came while the generator still ran

        r = await predict(w, "fail", {"count": 3, "fail_at": 1})
        assert r.outputs == ["item0"]
        assert isinstance(r.terminal, Failed) and r.terminal.error == "RuntimeError: failed at 1"
        await w.shutdown()

        w = await started("iterators.py:Tokens")
        assert w.loaded is not None and w.loaded.output_iterator
        r = await predict(w, "tok")
        assert r.outputs == ["a", "b", "c"] and isinstance(r.terminal, Done)
        await w.shutdown()

        w = await started("iterators.py:AsyncItems")
        r = await predict(w, "aio", {"count": 4})
        assert r.outputs == [0, 1, 2, 3] and isinstance(r.terminal, Done)
        await w.shutdown()

    run(main())


def test_outputs_are_made_json_like() -> None:
    async def main() -> None:
        w = await started("outputs.py:Predictor")
        r = await predict(w, "m", {"kind": "model"})
        out = r.terminal.output
        assert out["text"] == "x" and out["note"] is None
        assert isinstance(out["file"], FileOutput) and not out["file"].owned
        assert Path(out["file"].path).read_text() == "hi"

        r = await predict(w, "c", {"kind": "containers"})
        assert r.terminal.output == {
            "t": [1, 2],
            "s": [3],
            "e": "red",
            "d": "2024-01-02T03:04:05",
            "7": "int key",
        }
        r = await predict(w, "n", {"kind": "numpy"})
        assert r.terminal.output == {"scalar": 1.5, "int": 3, "array": [0, 1, 2], "bool": True}
        assert type(r.terminal.output["int"]) is int
        r = await predict(w, "p", {"kind": "pydantic"})
        assert r.terminal.output == {"a": 1, "b": ["x"]}
        r = await predict(w, "f", {"kind": "fileobj"})
        fo = r.terminal.output
        assert isinstance(fo, FileOutput) and fo.owned and os.path.basename(fo.path) == "result.bin"
        assert Path(fo.path).read_bytes() == b"file bytes"
        fo.discard()  # the temp copy and the folder made for it
        assert not os.path.exists(os.path.dirname(fo.path))
        r = await predict(w, "s", {"kind": "secret"})
        assert r.terminal.output == "**********"
        r = await predict(w, "b", {"kind": "bad"})
        assert isinstance(r.terminal, Failed)
        assert r.terminal.error == "TypeError: Object of type object is not JSON serializable"
        await w.shutdown()

    run(main())


# --------------------------------------------------------------------------- inputs


def test_inputs_are_converted_to_what_predict_expects(tmp_path: Path) -> None:
    image = tmp_path / "image.txt"
    image.write_text("image bytes")
    doc = tmp_path / "doc.txt"
    doc.write_text("doc bytes")
    listed = tmp_path / "listed.txt"
    listed.write_text("listed")

    async def main() -> None:
        w = await started("inputs.py:Predictor")
        r = await predict(
            w,
            "a",
            {
                "image": FileInput(str(image), "data:text/plain;base64,xx", "data"),
                "doc": FileInput(str(doc), "data:text/plain;base64,yy", "data"),
                "token": "s3cret",
                "tokens": ["t1", "t2"],
                "files": [FileInput(str(listed), "https://example.com/listed.txt", "http")],
                "scale": 2,
                "size": "large",
                "unknown": "ignored",
            },
        )
        assert isinstance(r.terminal, Done), r.logs
        out = r.terminal.output
        assert out["image"] == ["Path", "image bytes"]
        assert out["doc"] == ["BytesIO", "doc bytes"]
        assert out["token"] == ["Secret", "s3cret"]
        assert out["tokens"] == ["Secret", "Secret"]
        assert out["files"] == [["Path", "listed"]]
        assert out["scale"] == ["int", 2]  # an int sent for a float input stays an int (Cog 0.23.1)
        assert out["tags"] == ["x", "mutated"]
        assert out["seed"] is None
        assert out["size"] == ["Size", "large"]

        r = await predict(
            w,
            "b",
            {
                "image": FileInput(str(image), str(image), "local"),
                "doc": FileInput(str(doc), "https://example.com/files/doc.txt", "http"),
            },
        )
        out = r.terminal.output
        assert out["image"] == ["Path", "image bytes"]
        assert out["doc"] == ["URLFile", "doc bytes"]
        assert out["tags"] == ["x", "mutated"]  # the default was copied, not shared
        assert out["scale"] == ["float", 1.0] and out["size"] == ["Size", "small"]
        assert out["tokens"] == ["Secret"]

        r = await predict(w, "c", {"image": str(image), "doc": FileInput(str(doc), str(doc), "local")})
        assert r.terminal.output["doc"] == ["BufferedReader", "doc bytes"]

        r = await predict(w, "d", {})
        assert isinstance(r.terminal, Failed) and "missing 1 required positional argument: 'image'" in r.terminal.error
        await w.shutdown()

    run(main())


def test_setup_weights_from_argument_or_env() -> None:
    async def main() -> None:
        w = await started("weights.py:Predictor", weights="/models/w.safetensors")
        assert (await predict(w, "a")).terminal.output == "'/models/w.safetensors'"
        await w.shutdown()
        w = await started("weights.py:Predictor", env={"COG_WEIGHTS": "https://x/w.tar"})
        assert (await predict(w, "a")).terminal.output == "'https://x/w.tar'"
        await w.shutdown()
        w = await started("weights.py:Predictor", env={"COG_WEIGHTS": ""})
        assert (await predict(w, "a")).terminal.output == "''"
        await w.shutdown()

    run(main())


def test_function_predictor_and_train_mode() -> None:
    async def main() -> None:
        w = await started("function.py:predict")
        r = await predict(w, "a", {"x": 2, "y": 3})
        assert r.terminal.output == {"sum": 5, "types": ["int", "int"]}
        r = await predict(w, "b", {"x": 2})
        assert r.terminal.output == {"sum": 3.5, "types": ["int", "float"]}
        await w.shutdown()

        w = await started("function.py:train", mode="train")
        assert w.loaded is not None and "TrainingInput" in w.loaded.schema["components"]["schemas"]
        assert (await predict(w, "t")).terminal.output == "trained 2 steps"
        await w.shutdown()

        w = await started("trainer.py:Trainer", mode="train")
        assert (await predict(w, "t", {"epochs": 5})).terminal.output == "trained 5 epochs"
        await w.shutdown()

    run(main())


def test_metrics_and_context() -> None:
    async def main() -> None:
        w = await started("metrics.py:Predictor")
        r = await predict(w, "m", {"n": 7}, context={"user": "u1"})
        assert [(m.name, m.value, m.mode) for m in r.metrics] == [
            ("tokens", 7, "replace"),
            ("steps", 1, "incr"),
            ("steps", 2, "incr"),
            ("timing.load", 0.5, "replace"),
        ]
        assert r.terminal.output == {"user": "u1"}
        r = await predict(w, "n")
        assert r.terminal.output == {}
        await w.shutdown()

    run(main())


# --------------------------------------------------------------------------- healthcheck


def test_healthcheck_messages(tmp_path: Path) -> None:
    mode = tmp_path / "health"

    async def main() -> None:
        w = await started("health.py:Predictor", env={"HEALTH_FILE": str(mode)})
        assert w.loaded is not None and w.loaded.has_healthcheck
        mode.write_text("ok")
        assert await w.healthcheck() == (True, None)
        mode.write_text("false")
        assert await w.healthcheck() == (False, "Healthcheck failed: user-defined healthcheck returned False")
        mode.write_text("raise")
        assert await w.healthcheck() == (False, "Healthcheck failed: database unreachable")
        mode.write_text("hang")
        results = await asyncio.gather(w.healthcheck(timeout=0.3), w.healthcheck(timeout=0.3))
        assert results == [(False, "Healthcheck failed: user-defined healthcheck timed out after 0.3 seconds")] * 2
        r = await predict(w, "p")  # predictions go on while the hook hangs
        assert isinstance(r.terminal, Done)
        await w.shutdown()

        w = await started("health_async.py:Predictor", env={"HEALTH_FILE": str(mode)})
        mode.write_text("ok")
        assert await w.healthcheck() == (True, None)
        mode.write_text("no")
        assert await w.healthcheck() == (False, "Healthcheck failed: user-defined healthcheck returned False")
        await w.shutdown()

        w = await started("hello.py:Predictor")  # no hook: always healthy
        assert await w.healthcheck() == (True, None)
        await w.shutdown()

    run(main())


def test_logs_written_before_a_yield_arrive_before_the_item() -> None:
    async def main() -> None:
        w = await started("stream_order.py:Predictor")
        r = await predict(w, "s", {"count": 2})
        sequence = [e.text if isinstance(e, Log) else ("item", e.value) for e in r.events[:-1]]
        assert sequence[:6] == [
            "fd before 0\n",
            "print before 0\n",
            ("item", "0"),
            "fd before 1\n",
            "print before 1\n",
            ("item", "1"),
        ]
        assert "".join(sequence[6:]) == "café\n"  # a character split across two writes survives
        await w.shutdown()

    run(main())


def test_large_output_round_trip() -> None:
    async def main() -> None:
        w = await started("outputs.py:Predictor")
        r = await predict(w, "big", {"kind": "big"})
        assert isinstance(r.terminal, Done) and r.terminal.output == "x" * (8 << 20)
        await w.shutdown()

    run(main())


def test_shutdown_lets_short_work_finish_and_can_stop_a_starting_worker() -> None:
    async def main() -> None:
        w = await started("cancel_sync.py:Predictor")
        h = await w.predict("short", {"mode": "sleep", "seconds": 0.3})
        await w.shutdown(grace=5)
        r = await collect(h)
        assert isinstance(r.terminal, Done) and r.terminal.output == "finished"
        with pytest.raises(RuntimeError):
            await w.start()

        w = Worker("slow_setup.py:Predictor")
        await w.start()
        child_pid = w.pid
        await w.shutdown()
        assert w.state == "STOPPED" and w.setup.error == "Worker was shut down during setup"
        assert (await w.wait_ready()) is w.setup
        assert child_pid is not None and not pid_alive(child_pid)

    run(main())


def test_child_refuses_another_protocol_version() -> None:
    import socket

    from cogkit.worker._framing import HEADER, decode_from_child, encode
    from cogkit.worker.protocol import Hello, LoadFailed

    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cogkit.worker.child import main; main()", str(child.fileno())],
        pass_fds=(child.fileno(),),
        stderr=subprocess.DEVNULL,
    )
    child.close()
    parent.sendall(encode(Hello(version=999)))
    rfile = parent.makefile("rb")
    (size,) = HEADER.unpack(rfile.read(HEADER.size))
    msg = decode_from_child(rfile.read(size))
    assert isinstance(msg, LoadFailed) and "protocol version" in msg.error
    assert proc.wait(timeout=10) == 2
    parent.close()


def test_forked_processes_are_captured_and_never_touch_the_socket() -> None:
    async def main() -> None:
        w = await started("forks.py:Predictor")
        for tag in ("a", "b"):
            r = await predict(w, tag, {"tag": tag})
            assert isinstance(r.terminal, Done), r.logs
            assert r.logs == f"{tag} from the forked process\n{tag} stderr from the forked process\n"
            assert r.terminal.output == "exit 0, sockets in a subprocess: 0"
        assert w.restarts == 0 and w.state == "READY"
        await w.shutdown()

    run(main())


def test_worker_under_uvloop() -> None:
    """The server runs on uvloop: spawn, predict, crash and restart, cancel there too."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        w = await started("crash.py:Predictor")
        r = await predict(w, "a", {"how": "segv"})
        assert isinstance(r.terminal, Failed) and "SIGSEGV" in r.terminal.error
        await w.wait_ready()
        r = await predict(w, "b", {"how": "ok"})
        assert isinstance(r.terminal, Done) and w.restarts == 1
        await w.shutdown()
        w = await started("cancel_sync.py:Predictor")
        h = await w.predict("c", {"mode": "sleep"})
        seen: list[Any] = []
        await wait_for_log(h, "started", seen)
        await w.cancel("c")
        assert isinstance((await rest(h, seen)).terminal, Canceled)
        await w.shutdown()

    uvloop.run(asyncio.wait_for(main(), 30))
