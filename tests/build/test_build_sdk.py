"""build.sdk_version: this cogkit for its own version and for every bare version (a Cog
SDK pin, whatever its number), a cogkit release from the package index for cogkit==X
only, and a clear error when the index does not have it. The index is a real PEP 503 folder on disk that pip reads through
PIP_INDEX_URL, with pip's other configuration switched off, so nothing depends on the
network."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from pathlib import Path

import pytest

from cogkit._version import COG_COMPAT_VERSION, __version__
from cogkit.build.builders import BuildError
from cogkit.build.pipeline import BuildOptions, prepare_context
from cogkit.build.sdk import sdk_wheel
from cogkit.config import load_config

RELEASE = "0.24.0"  # above COG_COMPAT_VERSION: bare, still a Cog pin; cogkit==0.24.0 is a release


def _wheel(folder: Path, version: str) -> Path:
    """A minimal, valid cogkit wheel of ``version``."""
    info = f"cogkit-{version}.dist-info"
    files = {
        "cogkit/__init__.py": f"__version__ = {version!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: cogkit\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for n, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"cogkit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A simple index holding cogkit RELEASE, and pip pointed at it alone."""
    project = tmp_path / "index" / "simple" / "cogkit"
    project.mkdir(parents=True)
    wheel = _wheel(project, RELEASE)
    (project / "index.html").write_text(f'<html><body><a href="{wheel.name}">{wheel.name}</a></body></html>\n')
    url = (tmp_path / "index" / "simple").as_uri() + "/"
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip.conf: no other index, find-links, constraints
    monkeypatch.setenv("PIP_INDEX_URL", url)
    return url


def _project(root: Path, sdk_version: str) -> Path:
    root.mkdir(parents=True)
    (root / "predict.py").write_text("from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n"
                                     "    def predict(self) -> str:\n        return 'x'\n")
    (root / "cog.yaml").write_text(f'build:\n  python_version: "3.11"\n  sdk_version: "{sdk_version}"\n'
                                   'run: "predict.py:Predictor"\n')
    return root


@pytest.mark.parametrize("spec", [None, __version__, "0.16.8", COG_COMPAT_VERSION, "0.17.0rc2", "prerelease",
                                  ">=0.16,<0.17", RELEASE, "99.0"])
def test_this_cogkit_for_its_version_and_cogs(tmp_path: Path, spec: str | None) -> None:
    messages: list[str] = []
    wheel = sdk_wheel(spec, tmp_path, "cog.yaml", messages.append)
    assert wheel.path.name == f"cogkit-{__version__}-py3-none-any.whl" and wheel.version == __version__
    noted = [m for m in messages if m.startswith("note: build.sdk_version")]
    if spec in (None, __version__):
        assert not messages
    else:
        above = f" (not Cog {spec}'s; write cogkit==X.Y.Z for a cogkit release)" if spec in (RELEASE, "99.0") else ""
        assert noted == [f"note: build.sdk_version {spec} is Cog's SDK; the image gets this cogkit ({__version__}), "
                         f"which provides `cog` and speaks Cog {COG_COMPAT_VERSION}'s protocol{above}"]


@pytest.mark.parametrize("spec, message", [
    ("latest", "'latest' is not a version"),
    ("cogkit>=0.2", "'cogkit>=0.2': name a cogkit release as cogkit==X.Y.Z"),
])
def test_unreadable_sdk_versions_are_clear_errors(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(BuildError, match=re.escape(f"cog.yaml: build.sdk_version: {message}")):
        sdk_wheel(spec, tmp_path, "cog.yaml", lambda m: None)


@pytest.mark.parametrize("spec", [f"cogkit=={RELEASE}", "cogkit==0.24"])  # 0.24: the wheel says 0.24.0
def test_a_cogkit_release_comes_from_the_package_index(tmp_path: Path, local_index: str, spec: str) -> None:
    project = _project(tmp_path / "p", spec)
    messages: list[str] = []
    prepare_context(load_config(project), tmp_path / "ctx", BuildOptions(), log=messages.append)
    ctx = tmp_path / "ctx"
    assert sorted(p.name for p in (ctx / "build" / "wheel").iterdir()) == [f"cogkit-{RELEASE}-py3-none-any.whl"]
    dockerfile = (ctx / "Dockerfile").read_text()
    assert f"pip install /tmp/cogkit-wheel/cogkit-{RELEASE}-py3-none-any.whl" in dockerfile
    assert f'run.cogkit.version="{RELEASE}"' in dockerfile
    assert f"build.sdk_version {spec}: cogkit {spec.split('==')[1]} from the package index" in messages


def test_a_cogkit_release_that_does_not_exist_is_a_clear_error(tmp_path: Path, local_index: str) -> None:
    project = _project(tmp_path / "p", "cogkit==99.0.0")
    with pytest.raises(BuildError) as err:
        prepare_context(load_config(project), tmp_path / "ctx", BuildOptions(), log=lambda m: None)
    assert str(err.value) == (
        f"{project / 'cog.yaml'}: build.sdk_version: cogkit 99.0.0 does not exist (not on {local_index}; it has: "
        f"{RELEASE}); write cogkit=={__version__} (this cogkit) or a released cogkit, or a bare Cog SDK version "
        "(this cogkit too)"
    )


def test_the_index_url_is_redacted_in_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_INDEX_URL", "http://user:t0ken@127.0.0.1:9/simple/?key=s3cret")  # nothing listens on 9
    with pytest.raises(BuildError) as err:
        sdk_wheel(f"cogkit=={RELEASE}", tmp_path, "cog.yaml", lambda m: None)
    message = str(err.value)
    assert "http://127.0.0.1:9/simple/" in message
    assert "t0ken" not in message and "s3cret" not in message
