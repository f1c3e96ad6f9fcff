"""`cogkit train` end to end on unchanged Cog trainers (`from cog import BaseModel, Input, Path`):
a class with setup()/train() returning a TrainingOutput, and a function returning a Path."""

import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from tests.cli.test_cli_predict import _error_lines, cogkit
from tests.fixtures.server.harness import ServerProcess, copy_fixture

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cli"


def _project(tmp_path: Path, name: str) -> Path:
    return copy_fixture(FIXTURES / name, tmp_path)


def _tar_text(path: Path, member: str) -> str:
    with tarfile.open(path) as tar:
        f = tar.extractfile(member)
        assert f is not None
        return f.read().decode()


def test_training_output_fields_match_the_servers_and_files_are_written_beside(tmp_path: Path) -> None:
    d = _project(tmp_path, "train_class")
    r = cogkit(d, "train", "-i", "steps=3", "-i", "optimizer=sgd")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # the TrainingOutput's fields as indented JSON, nothing else on stdout
    assert out == {"weights": "weights.tar", "final_loss": 0.125}
    assert _tar_text(d / out["weights"], "adapter.txt") == "base-v1 sgd 3\n"
    assert "Written output to: weights.tar" in r.stderr
    assert "[progress] training: 3/3" in r.stderr  # progress lines reach stderr (a bar on a terminal)

    srv = ServerProcess(d, "--x-mode", "train", env={"COG_TRAIN_TYPE_STUB": "train.py:Trainer"})
    try:
        body = srv.client.post("/trainings", json={"input": {"steps": 3, "optimizer": "sgd"}}).json()
        served = srv.client.get("/openapi.json").json()
    finally:
        srv.stop()
    assert body["status"] == "succeeded", body
    assert list(body["output"]) == list(out)  # the same field names, in the same order
    assert body["output"]["final_loss"] == out["final_loss"]
    assert body["output"]["weights"].startswith("data:")  # the server sends the file; the CLI writes it
    assert served == json.loads(cogkit(d, "schema", "--mode", "train").stdout)  # what `cogkit train` checks inputs against


def test_json_record_has_predicts_shape(tmp_path: Path) -> None:
    d = _project(tmp_path, "train_class")
    r = cogkit(d, "train", "--json", '{"steps": 2}')
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    predicted = json.loads(cogkit(d, "predict", "--json", '{"prompt": "hi"}').stdout)
    assert list(record) == list(predicted) == ["status", "output", "error", "logs", "metrics"]
    assert record["status"] == "succeeded" and record["error"] is None
    assert record["output"] == {"weights": "weights.tar", "final_loss": 0.25}
    assert (d / "weights.tar").is_file()
    assert "[progress] training: 2/2" in record["logs"] and record["metrics"]["predict_time"] > 0


def test_function_trainer_path_output_goes_to_weights_or_to_o(tmp_path: Path) -> None:
    d = _project(tmp_path, "train_function")
    r = cogkit(d, "train", "-i", "text=one\ntwo\n", "-i", "epochs=2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert _tar_text(d / "weights.tar", "data.txt") == "one\ntwo\n" * 2  # weights + the file's extension
    assert "training on 2 examples" in r.stderr and "Written output to: weights.tar" in r.stderr
    r = cogkit(d, "train", "-i", "text=x", "-o", str(tmp_path / "custom"))
    assert r.returncode == 0 and _tar_text(tmp_path / "custom.tar", "data.txt") == "x"
    r = cogkit(d, "train", "-i", "text=y", "-o", str(tmp_path / "lora.tar"))
    assert r.returncode == 0 and _tar_text(tmp_path / "lora.tar", "data.txt") == "y"
    (tmp_path / "outdir").mkdir()
    r = cogkit(d, "train", "-i", "text=z", "-o", str(tmp_path / "outdir"))  # a folder: output.<ext> in it, as cog train
    assert r.returncode == 0 and _tar_text(tmp_path / "outdir" / "output.tar", "data.txt") == "z"


def test_invalid_input_fails_before_setup_completes(tmp_path: Path) -> None:
    d = _project(tmp_path, "train_class")
    marker = tmp_path / "setup-finished"
    slow = ("-e", "TRAIN_SETUP_SECONDS=5", "-e", f"TRAIN_SETUP_MARKER={marker}")
    r = cogkit(d, "train", "-i", "steps=0", *slow)
    assert r.returncode == 1
    assert _error_lines(r.stderr) == ['invalid input "steps": must be greater than or equal to 1']
    # The worker is gone once cogkit returns: had it waited for setup(), the mark would be there.
    assert not marker.exists() and "trainer setup: ready" not in r.stderr
    r = cogkit(d, "train", "--json", '{"steps": "abc", "optimizer": "lion"}', *slow)
    assert r.returncode == 1 and _error_lines(r.stderr) == [
        'invalid input "steps": expected integer, got string',
        'invalid input "optimizer": must be one of: adamw, sgd',
    ]
    r = cogkit(d, "train", "-i", "step=3")
    assert r.returncode == 1 and _error_lines(r.stderr) == ['unknown input "step"; did you mean "steps"?']
    r = cogkit(_project(tmp_path, "train_function"), "train", "-i", "epochs=2")
    assert r.returncode == 1 and _error_lines(r.stderr) == ['missing required input "text"']
    assert not marker.exists() and "Traceback" not in r.stderr


def test_setup_output_is_shown_on_stderr(tmp_path: Path) -> None:
    r = cogkit(_project(tmp_path, "train_class"), "train", "-i", "steps=1")
    assert r.returncode == 0, r.stderr
    assert "trainer setup: loading the base model\n" in r.stderr and "trainer setup: ready\n" in r.stderr
    assert "trainer setup" not in r.stdout


def test_failing_training_exits_1_with_the_error(tmp_path: Path) -> None:
    d = _project(tmp_path, "train_function")
    r = cogkit(d, "train", "-i", "text=a", "-i", "fail=true")
    assert r.returncode == 1
    assert 'error: training failed with status "failed": RuntimeError: loss diverged to nan in epoch 1\n' in r.stderr
    assert "training on 1 examples" in r.stderr and r.stdout == ""
    assert not (d / "weights.tar").exists()


def test_missing_train_key_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text('build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n')
    r = cogkit(tmp_path, "train", "-i", "steps=1")
    assert r.returncode == 1
    assert "no 'train:' key, so there is nothing to train" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_cancels_the_training(tmp_path: Path) -> None:
    d = _project(tmp_path, "train_class")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogkit", "train", "-i", "steps=100000", "-i", "step_seconds=0.05"],
        cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while not proc.stderr.readline().startswith("[progress] training: "):
        assert time.monotonic() < deadline and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert "Canceling the training (Ctrl-C again to quit)..." in err
    assert 'error: training failed with status "canceled"' in err and "Traceback" not in err
    assert not list(d.glob("weights*"))


def test_predict_train_is_a_deprecated_alias(tmp_path: Path) -> None:
    d = _project(tmp_path, "train_function")
    r = cogkit(d, "predict", "--train", "-i", "text=hi")
    assert r.returncode == 0, r.stderr
    assert 'warning: "cogkit predict --train" is deprecated; use "cogkit train"' in r.stderr
    assert _tar_text(d / "weights.tar", "data.txt") == "hi"


def test_help(tmp_path: Path) -> None:
    r = cogkit(tmp_path, "train", "--help")
    assert r.returncode == 0 and "usage: cogkit train" in r.stdout
    assert all(flag in r.stdout for flag in ("--input", "--json", "--output", "--env", "--weights", "--setup-timeout"))
    assert '"weights"' in r.stdout  # -o's default
    top = cogkit(tmp_path, "--help").stdout
    assert "train " in top and "run one training" in top


def test_schema_of_a_project_with_predict_and_train(tmp_path: Path) -> None:
    """Cog's merged document: the predict document is the base, the train paths and
    components are added (TrainingOutput keeps the title "Output")."""
    d = _project(tmp_path, "train_class")
    docs = {}
    for mode in ("all", "predict", "train"):
        r = cogkit(d, "schema", "--mode", mode)
        assert r.returncode == 0, r.stderr
        docs[mode] = json.loads(r.stdout)
    full, schemas = docs["all"], docs["all"]["components"]["schemas"]
    assert list(full["paths"]) == [
        "/", "/health-check", "/predictions", "/predictions/{prediction_id}/cancel",
        "/trainings", "/trainings/{training_id}/cancel",
    ]
    assert {"Input", "Output", "PredictionRequest", "PredictionResponse", "TrainingInput", "TrainingOutput",
            "TrainingRequest", "TrainingResponse", "Status", "HTTPValidationError", "ValidationError",
            "optimizer"} == set(schemas)
    assert schemas["TrainingOutput"] == {
        "title": "Output",
        "type": "object",
        "properties": {
            "weights": {"title": "Weights", "type": "string", "format": "uri"},
            "final_loss": {"title": "Final Loss", "type": "number"},
        },
        "required": ["weights", "final_loss"],
    }
    assert schemas["TrainingInput"]["title"] == "TrainingInput" and list(schemas["TrainingInput"]["properties"]) == [
        "steps", "optimizer", "step_seconds",
    ]
    assert schemas["TrainingInput"]["properties"]["optimizer"]["allOf"] == [{"$ref": "#/components/schemas/optimizer"}]
    post = full["paths"]["/trainings"]["post"]
    assert (post["summary"], post["operationId"], post["description"]) == (
        "Train", "train_trainings_post", "Run a single training on the model",
    )
    cancel = full["paths"]["/trainings/{training_id}/cancel"]["post"]
    assert cancel["operationId"] == "cancel_trainings__training_id__cancel_post"
    assert cancel["parameters"][0]["schema"]["title"] == "Training Id"
    # each part as its own document would have it
    for mode in ("predict", "train"):
        part = docs[mode]
        assert all(full["paths"][k] == v for k, v in part["paths"].items())
        assert all(schemas[k] == v for k, v in part["components"]["schemas"].items())
    assert "/trainings" not in docs["predict"]["paths"] and "TrainingInput" not in docs["predict"]["components"]["schemas"]
    assert "/predictions" not in docs["train"]["paths"] and "Input" not in docs["train"]["components"]["schemas"]
