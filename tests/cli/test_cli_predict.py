"""`cogkit predict` end to end on the 8 conformance fixtures, run unchanged (`from cog import ...`)."""

import base64
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path



def _fixture(conformance_dir: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(conformance_dir / "predictors" / name, dest)
    return dest


def cogkit(cwd: Path, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cogkit", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_hello(conformance_dir: Path, tmp_path: Path) -> None:
    r = cogkit(_fixture(conformance_dir, tmp_path, "hello"), "predict", "-i", "text=world")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello world\n"


def test_run_alias_and_json_input(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "hello")
    r = cogkit(d, "run", "--json", '{"text": "json"}')
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["status"] == "succeeded" and record["output"] == "hello json"
    assert record["metrics"]["predict_time"] > 0


def test_unknown_input_did_you_mean_and_validation_errors(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "types_zoo")
    r = cogkit(d, "predict", "-i", "promt=hi")
    assert r.returncode == 1 and 'unknown input "promt"; did you mean "prompt"?' in r.stderr
    r = cogkit(d, "predict", "-i", "prompt=", "-i", "steps=99", "-i", "mode=slow")
    assert r.returncode == 1
    assert _error_lines(r.stderr) == [  # current Cog's words, one line per problem, in input order
        'invalid input "prompt": must be at least 1 character long',
        'invalid input "mode": must be one of: fast, balanced, quality',
        'invalid input "steps": must be less than or equal to 50',
    ]


def _error_lines(stderr: str) -> list[str]:
    return [line[len("error: "):] for line in stderr.splitlines() if line.startswith("error: ")]


def test_input_errors_in_current_cogs_words(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "types_zoo")
    r = cogkit(d, "predict", "-i", "steps=3")
    assert r.returncode == 1 and _error_lines(r.stderr) == ['missing required input "prompt"']
    r = cogkit(d, "predict", "--json", '{"prompt": null, "level": 5, "steps": "abc", "temperature": 3}')
    assert r.returncode == 1
    assert _error_lines(r.stderr) == [
        'invalid input "prompt": must not be null',
        'invalid input "level": must be one of: 1, 2, 3',
        'invalid input "steps": expected integer, got string',
        'invalid input "temperature": must be less than or equal to 2',
    ]
    r = cogkit(d, "predict", "-i", "prompt=x", "-i", "steps=0", "-i", "code=ABC")
    assert _error_lines(r.stderr) == [
        'invalid input "code": must match the pattern "^[a-z]+$"',
        'invalid input "steps": must be greater than or equal to 1',
    ]
    assert "Traceback" not in r.stderr and "setup" not in r.stderr.lower()  # before the model loads


def test_types_zoo_every_input_kind(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "types_zoo")
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "img.png").write_bytes(b"\x89PNG....")
    www = tmp_path / "www"
    www.mkdir()
    (www / "doc.txt").write_text("from http")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = cogkit(
            d, "predict",
            "-i", "prompt=hi", "-i", "seed=7", "-i", "mode=quality", "-i", "level=3", "-i", "temperature=1",
            "-i", "flag=true", "-i", f"image=@{tmp_path / 'img.png'}",
            "-i", f"document=http://127.0.0.1:{srv.server_address[1]}/doc.txt",
            "-i", "api_key=sk-secret", "-i", "tags=a", "-i", "tags=b",
            "-i", f"files=@{tmp_path / 'a.txt'}", "-i", "files=data:text/plain;base64," + base64.b64encode(b"beta").decode(),
        )
    finally:
        srv.shutdown()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["prompt"] == ["str", "hi"] and out["seed"] == ["int", 7]
    assert out["level"] == ["int", 3] and out["mode"] == ["str", "quality"]
    assert out["temperature"] == ["int", 1]  # as sent, like Cog 0.23.1
    assert out["flag"] == ["bool", True] and out["tags"] == ["list", ["a", "b"]]
    assert out["image"]["type"] == "Path" and out["image"]["suffix"] == "png" and out["image"]["size"] == 8
    assert out["document"] == {"type": "URLFile", "size": 9, "sha256": out["document"]["sha256"]}
    assert out["api_key"] == {"type": "Secret", "str": "**********", "len": 9}
    assert [f["size"] for f in out["files"]] == [5, 4] and out["files"][0]["suffix"] == "txt"
    assert out["seed"] and out["note"] == ["NoneType", None]
    assert "sk-secret" not in r.stdout + r.stderr


def test_seed_default_none_is_optional_d1(conformance_dir: Path, tmp_path: Path) -> None:
    r = cogkit(_fixture(conformance_dir, tmp_path, "types_zoo"), "predict", "-i", "prompt=hi")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seed"] == ["NoneType", None]


def test_path_output_written(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "path_output")
    r = cogkit(d, "predict", "-i", "width=3")
    assert r.returncode == 0, r.stderr
    assert (d / "output.png").read_bytes().startswith(b"\x89PNG")
    r = cogkit(d, "predict", "-o", str(tmp_path / "custom"))  # no extension: taken from the file
    assert r.returncode == 0 and (tmp_path / "custom.png").is_file()
    (tmp_path / "outdir").mkdir()
    r = cogkit(d, "predict", "-o", str(tmp_path / "outdir"))
    assert r.returncode == 0 and (tmp_path / "outdir" / "output.png").is_file()


def test_list_path_output(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "list_path_output")
    r = cogkit(d, "predict", "-i", "count=2", "-o", str(tmp_path / "out.txt"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.0.txt").read_text() == "file number 0\n"
    assert (tmp_path / "out.1.txt").read_text() == "file number 1\n"


def test_concatenate_iterator_streams_text(conformance_dir: Path, tmp_path: Path) -> None:
    r = cogkit(_fixture(conformance_dir, tmp_path, "concat_iterator"), "predict", "-i", "count=5")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "tok0 tok1 tok2 tok3 tok4 \n"


def test_structured_output(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "model_output")
    r = cogkit(d, "predict", "-i", "text=abc")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"] == "ABC" and out["count"] == 3 and out["note"] is None and out["tags"] == ["a", "b", "c"]
    assert Path(d / out["file"]).read_text() == "abc"


def test_failure_exits_non_zero_with_the_error(conformance_dir: Path, tmp_path: Path) -> None:
    r = cogkit(_fixture(conformance_dir, tmp_path, "predict_raises"), "predict")
    assert r.returncode == 1
    assert "about to raise" in r.stderr
    assert "ValueError: predict failed on purpose: boom" in r.stderr


def test_slow_setup_and_setup_timeout(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "slow")
    r = cogkit(d, "predict", "-i", "seconds=0.2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "slept 0.2\n" and "slow setup: starting" in r.stderr
    r = cogkit(d, "predict", "-i", "seconds=0.2", "--setup-timeout", "0.5")
    assert r.returncode == 1 and "setup" in r.stderr.lower()


def test_setup_failure_is_reported(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n')
    (tmp_path / "predict.py").write_text(
        "from cog import BasePredictor\n"
        "class Predictor(BasePredictor):\n"
        "    def setup(self):\n        print('loading'); raise RuntimeError('no weights here')\n"
        "    def predict(self) -> str:\n        return 'x'\n"
    )
    r = cogkit(tmp_path, "predict")
    assert r.returncode == 1
    assert "error: model setup failed: RuntimeError: no weights here" in r.stderr
    assert r.stderr.count("loading\n") == 1 and r.stderr.count("Traceback") == 1  # logs shown once


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text("predict: predict.py\n")
    r = cogkit(tmp_path, "predict")
    assert r.returncode == 1 and "predict: 'predict.py' must be in the form" in r.stderr


def test_init_then_predict(tmp_path: Path) -> None:
    r = cogkit(tmp_path, "init")
    assert r.returncode == 0, r.stderr
    assert {"cog.yaml", "predict.py", ".dockerignore"} <= {p.name for p in tmp_path.iterdir()}
    from cogkit.config import load_config

    assert load_config(tmp_path).warnings == []  # no deprecated key ('predict:') in the scaffold
    r = cogkit(tmp_path, "predict", "-i", "text=hi", "-i", "repeat=2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "output.txt").read_text() == "hi\nhi\n"
    assert cogkit(tmp_path, "init").returncode == 1  # refuses to overwrite


WORKER_FIXTURES = Path(__file__).parents[1] / "fixtures" / "worker"


def _project(tmp_path: Path, fixture: str, ref: str) -> Path:
    """A project folder running ``tests/fixtures/worker/<fixture>`` as predict.py."""
    shutil.copy(WORKER_FIXTURES / fixture, tmp_path / "predict.py")
    (tmp_path / "cog.yaml").write_text(f'build:\n  python_version: "3.11"\nrun: "predict.py:{ref}"\n')
    return tmp_path


def test_json_record_metrics_replay_modes_and_nest_dotted_names(tmp_path: Path) -> None:
    r = cogkit(_project(tmp_path, "metrics.py", "Predictor"), "predict", "--json", '{"n": 5}')
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)["metrics"]
    assert metrics["tokens"] == 5 and metrics["steps"] == 3  # incr 1 then incr 2
    assert metrics["timing"] == {"load": 0.5} and metrics["predict_time"] > 0


def test_text_iterators_go_to_the_output_file_when_one_is_asked_for(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "concat_iterator")
    r = cogkit(d, "predict", "-i", "count=3", "-o", str(tmp_path / "tokens"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and (tmp_path / "tokens.txt").read_text() == "tok0 tok1 tok2 \n"  # joined, not streamed
    (tmp_path / "items").mkdir()
    r = cogkit(_project(tmp_path / "items", "iterators.py", "Predictor"), "predict", "-o", str(tmp_path / "items.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "items.json").read_text()) == ["item0", "item1", "item2"]


def test_closed_stdout_stops_quietly(tmp_path: Path) -> None:
    """``cogkit predict | head -1``: no traceback, the prediction is canceled, exit 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogkit", "predict", "-i", "count=100000000", "-i", "pause=0.001"],
        cwd=_project(tmp_path, "iterators.py", "Predictor"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"item0\n"
    proc.stdout.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


def test_ctrl_c_cancels_and_a_second_one_stops_the_model_at_once(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogkit", "predict", "-i", "mode=swallow"],
        cwd=_project(tmp_path, "cancel_sync.py", "Predictor"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    assert proc.stderr.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    lines: list[str] = []
    while "ignoring cancel\n" not in lines and len(lines) < 200:  # it prints "started" every 0.1 s
        lines.append(proc.stderr.readline())
    assert "Canceling the prediction (Ctrl-C again to quit)...\n" in lines and "ignoring cancel\n" in lines, lines
    proc.send_signal(signal.SIGINT)  # the model swallows cancels: stop it without the 5 s grace
    _, err = proc.communicate(timeout=4)
    assert proc.returncode == 130, err
    assert 'prediction failed with status "canceled"' in err and "Traceback" not in err


def test_temp_files_are_all_removed(tmp_path: Path) -> None:
    """The work folder for inputs and the worker's temp copy of a returned file object
    (and the folder made for it) are gone after the run."""
    (tmp_path / "p").mkdir()
    project = _project(tmp_path / "p", "outputs.py", "Predictor")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp_path / "in.txt").write_text("x")
    r = cogkit(project, "predict", "-i", "kind=fileobj", "-o", str(tmp_path / "out"), env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.bin").read_bytes() == b"file bytes"
    assert list(tmp.iterdir()) == []


def test_schema_without_an_entry_point_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text('build:\n  python_version: "3.11"\n')
    r = cogkit(tmp_path, "schema")
    assert r.returncode == 1 and "no 'run:' key" in r.stderr and "Traceback" not in r.stderr
    _project(tmp_path, "hello.py", "Predictor")
    r = cogkit(tmp_path, "schema", "--mode", "train")
    assert r.returncode == 1 and "no 'train:' key" in r.stderr
    assert json.loads(cogkit(tmp_path, "schema").stdout)["components"]["schemas"]["Input"]["required"] == ["text"]


def test_sigterm_stops_the_model_and_removes_temp_files(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text('run: "predict.py:Predictor"\n')
    (tmp_path / "predict.py").write_text(
        "import time\nfrom cog import BasePredictor, Path\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, image: Path) -> str:\n"
        "        print('sleeping', flush=True)\n        time.sleep(60)\n        return 'woke'\n"
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp_path / "in.txt").write_text("x")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogkit", "predict", "-i", f"image=@{tmp_path / 'in.txt'}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.stderr is not None and proc.stderr.readline() == "sleeping\n"
    assert any(tmp.iterdir())  # the input's copy is there while it runs
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert list(tmp.iterdir()) == []


def test_a_file_input_that_cannot_be_fetched_names_the_input(conformance_dir: Path, tmp_path: Path) -> None:
    d = _fixture(conformance_dir, tmp_path, "types_zoo")
    base = ["predict", "-i", "prompt=hi", "-i", "seed=7", "-i", "mode=quality", "-i", "level=3", "-i", "temperature=1",
            "-i", "flag=true", "-i", "api_key=k"]
    r = cogkit(d, *base, "-i", "image=file:///etc/passwd")
    assert r.returncode == 1 and r.stdout == ""
    assert 'error: invalid input "image": file: URLs are not allowed' in r.stderr, r.stderr
    r = cogkit(d, *base, "-i", "files=http://127.0.0.1:9/x.png")  # nothing listens on port 9
    assert r.returncode == 1
    assert 'error: invalid input "files.0": could not fetch http://127.0.0.1:9/x.png' in r.stderr, r.stderr
