"""The PhotoMaker predictor end to end on tiny weights: through the worker (one child,
setup once), through `cogkit predict` in models/photomaker, and through the HTTP
server, including the trigger-word errors each client sees."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cogkit.worker.client import Worker
from cogkit.worker.protocol import Done, Failed, FileInput, FileOutput, Log
from tests.fixtures.server.harness import ServerProcess, copy_fixture
from tests.tiny_models import tiny_photomaker_weights  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[3]
PM_DIR = REPO / "models" / "photomaker"
ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
TRIGGER_RULE = "prompt: must contain the trigger word `img` right after a class word, e.g. 'a photo of a man img'"


def face(path: pathlib.Path, seed: int, size=(48, 64), fmt: str | None = None) -> pathlib.Path:
    arr = (np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, fmt) if fmt else Image.fromarray(arr).save(path)
    return path


def f(path) -> FileInput:
    return FileInput(path=str(path), source=str(path), kind="local")


def test_worker_runs_one_and_four_images_and_reports_rule_errors(tiny_photomaker_weights, tmp_path):
    faces = [face(tmp_path / f"{i}.png", i) for i in range(4)]
    base = dict(prompt="a photo of a woman img", num_steps=2, seed=1, style_name="Cinematic")
    cases = {
        "one": dict(base, input_image=f(faces[0])),
        "four": dict(base, input_image=f(faces[0]), input_image2=f(faces[1]), input_image3=f(faces[2]),
                     input_image4=f(faces[3]), num_outputs=2, output_format="jpg"),
        "no-trigger": dict(base, input_image=f(faces[0]), prompt="a photo of a woman"),
        "negative": dict(base, input_image=f(faces[0]), negative_prompt="img"),
        "after-errors": dict(base, input_image=f(faces[1])),
    }

    async def main():
        w = Worker("predict.py:Predictor", PM_DIR, weights=str(tiny_photomaker_weights), env=ENV, setup_timeout=120)
        await w.start()
        info = await w.wait_ready()
        assert info.status == "succeeded", info.logs
        assert "LoRA fused into 64 UNet layers" in info.logs
        results = {}
        try:
            for name, inputs in cases.items():
                handle = await w.predict(name, inputs)
                logs, last = [], None
                async for ev in handle:
                    last = ev
                    if isinstance(ev, Log):
                        logs.append(ev.text)
                results[name] = (getattr(handle, "terminal", last), "".join(logs))
        finally:
            await w.shutdown(grace=5.0)
        return results

    results = asyncio.run(asyncio.wait_for(main(), 600))
    for name, count in (("one", 1), ("four", 2), ("after-errors", 1)):
        terminal, logs = results[name]
        assert isinstance(terminal, Done), (name, terminal, logs)
        assert len(terminal.output) == count and all(isinstance(o, FileOutput) for o in terminal.output)
        for o in terminal.output:
            with Image.open(o.path) as im:
                assert im.size == (64, 64)
        assert "[progress] denoising: 2/2" in logs
    assert "4 ID image(s)" in results["four"][1]
    terminal, _ = results["no-trigger"]
    assert isinstance(terminal, Failed) and TRIGGER_RULE in terminal.error
    terminal, _ = results["negative"]
    assert isinstance(terminal, Failed) and "negative_prompt: must not contain the trigger word `img`" in terminal.error


def cogkit_predict(weights, cwd, *inputs: str, out: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "cogkit", "predict"]
    for item in inputs:
        args += ["-i", item]
    if out is not None:
        args += ["-o", str(out)]
    env = {**os.environ, **ENV, "COG_WEIGHTS": str(weights)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cogkit_predict_writes_images_and_fails_clearly(tiny_photomaker_weights, tmp_path):
    a, b = face(tmp_path / "a.jpg", 1, (300, 200), "JPEG"), face(tmp_path / "b.webp", 2, fmt="WEBP")
    done = cogkit_predict(tiny_photomaker_weights, PM_DIR, f"input_image=@{a}", f"input_image2=@{b}",
                          "prompt=a photo of a man img", "num_steps=2", "num_outputs=2", "seed=5",
                          out=tmp_path / "out.png")
    assert done.returncode == 0, done.stderr
    written = sorted(tmp_path.glob("out*.png"))
    assert len(written) == 2 and all(Image.open(p).size == (64, 64) for p in written)
    bad = cogkit_predict(tiny_photomaker_weights, PM_DIR, f"input_image=@{a}", "prompt=img a photo of a man",
                         "num_steps=2", out=tmp_path / "bad.png")
    assert bad.returncode != 0
    assert "prompt: the trigger word `img` must follow a class word such as man, woman or person" in bad.stderr
    assert not list(tmp_path.glob("bad*"))


def data_url(path: pathlib.Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_http_server_fails_the_prediction_with_the_rule(tiny_photomaker_weights, tmp_path):
    project = copy_fixture(PM_DIR, tmp_path, "photomaker")
    srv = ServerProcess(project, env={**ENV, "COG_WEIGHTS": str(tiny_photomaker_weights)}, ready_timeout=180)
    try:
        img = data_url(face(tmp_path / "f.png", 3))
        r = srv.predict({"input_image": img, "prompt": "a photo of a man", "num_steps": 2})
        body = r.json()
        assert body["status"] == "failed" and TRIGGER_RULE in body["error"], body
        r = srv.predict({"input_image": img, "prompt": "a photo of a man img", "num_steps": 2,
                         "style_name": "Neonpunk"})
        body = r.json()
        assert body["status"] == "succeeded", body
        (out,) = body["output"]
        assert out.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(out.split(",", 1)[1]))) as im:
            assert im.size == (64, 64)
        r = srv.predict({"input_image": img, "style_strength_ratio": 60})
        assert r.status_code == 422 and "style_strength_ratio" in r.text
        r = srv.predict({"input_image": img, "style_name": "Watercolor"})
        assert r.status_code == 422 and "style_name" in r.text
    finally:
        srv.stop()
