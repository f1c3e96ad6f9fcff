"""cog.yaml: every documented key parses; every mistake names file, key and rule."""

import textwrap
from pathlib import Path

import pytest

from cogkit.config import load_config, predictor_ref
from cogkit.exceptions import ConfigError


def _load(tmp_path: Path, text: str):
    (tmp_path / "cog.yaml").write_text(textwrap.dedent(text))
    return load_config(tmp_path)


def test_full_config(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy\n")
    cfg = _load(tmp_path, """
        build:
          gpu: true
          cuda: "12.4"
          cudnn: "9"
          python_version: "3.11"
          python_requirements: requirements.txt
          system_packages: [libgl1, ffmpeg]
          run:
            - echo hi
            - command: pip install private
              mounts:
                - type: secret
                  id: token
                  target: /run/secrets/token
          pre_install: ["echo old"]
        run: "predict.py:Runner"
        train: "train.py:train"
        image: r8.im/me/model
        concurrency:
          max: 4
          default_target: 2
        environment:
          - HF_HOME=/src/.hf
          - EMPTY=
    """)
    assert cfg.build.gpu and cfg.build.cuda == "12.4" and cfg.build.python_version == "3.11"
    assert cfg.build.system_packages == ["libgl1", "ffmpeg"]
    assert [r.command for r in cfg.build.run] == ["echo hi", "pip install private", "echo old"]
    assert cfg.build.run[1].mounts[0].id == "token"
    assert cfg.predict == "predict.py:Runner" and cfg.train == "train.py:train"
    assert cfg.concurrency_max == 4 and cfg.environment == {"HF_HOME": "/src/.hf", "EMPTY": ""}
    assert any("pre_install" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    "text, key, rule",
    [
        ("bogus: 1", "bogus", "unknown key"),
        ("build:\n  gpus: true", "build.gpus", "unknown key"),
        ("build:\n  python_version: 3.1", "build.python_version", "write it as a string"),
        ("build:\n  python_version: '3.8'", "build.python_version", "minimum is 3.10"),
        ("build:\n  gpu: 'yes'", "build.gpu", "true or false"),
        ("build:\n  cuda: '10.2'", "build.cuda", ">= 11"),
        ("build:\n  python_requirements: missing.txt", "build.python_requirements", "does not exist"),
        ("build:\n  system_packages: libgl1", "build.system_packages", "list of strings"),
        ("build:\n  run: [\"a\\nb\"]", "build.run[0]", "newlines"),
        ("predict: predict.py", "predict", "must be in the form"),
        ("run: 'predict.py:A:B'", "run", "must be in the form"),
        ("run: a.py:A\npredict: b.py:B", "predict", "cannot be combined"),
        ("concurrency:\n  max: 0", "concurrency.max", "integer >= 1"),
        ("concurrency: {}", "concurrency.max", "required"),
        ("environment: [PATH=/x]", "environment[0]", "reserved"),
        ("environment: [CUDA_HOME=/x]", "environment[0]", "reserved"),
        ("environment: ['1BAD=x']", "environment[0]", "NAME=value"),
        ("environment: [A=1, A=2]", "environment[1]", "set twice"),
        ("image: a\nmodel: b", "model", "cannot be combined"),
        ("weights:\n  - name: Bad Name\n    target: /w\n    source: {uri: x}", "weights[0].name", "lowercase"),
    ],
)
def test_errors_name_file_key_and_rule(tmp_path: Path, text: str, key: str, rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    msg = str(err.value)
    assert str(tmp_path / "cog.yaml") in msg and f": {key}: " in msg and rule in msg


def test_missing_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path)
    (tmp_path / "cog.yaml").write_text("build: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path)


def test_predictor_ref_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(tmp_path, "predict: predict.py:Predictor\n")
    assert predictor_ref("predict", tmp_path) == "predict.py:Predictor"
    monkeypatch.setenv("COG_PREDICT_TYPE_STUB", "other.py:Other")
    assert predictor_ref("predict", tmp_path) == "other.py:Other"
    with pytest.raises(ConfigError, match="train"):
        predictor_ref("train", tmp_path)
