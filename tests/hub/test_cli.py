"""``cogkit hub`` as a command: help, configuration errors, the generated token, and
content-addressed versions across restarts."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import time

import httpx
import pytest

from cogkit.exceptions import ConfigError
from cogkit.hub.settings import settings_from
from tests.hub.conftest import CONFORMANCE, HubProcess, free_port

pytestmark = pytest.mark.timeout(300)


def _cogkit(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cogkit", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_help_exits_0_and_names_the_options():
    proc = _cogkit("hub", "--help")
    assert proc.returncode == 0
    for flag in ("--host", "--port", "--db", "--token", "--config", "--model", "--weights", "--data-dir",
                 "--public-url", "--backend", "--ray-address"):
        assert flag in proc.stdout


def _args(*argv: str):
    import argparse

    from cogkit.hub.settings import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv, message", [
    (["--model", "acme/hello"], "expected OWNER/NAME=VALUE"),
    (["--model", "nope=/tmp"], "is not OWNER/NAME"),
    (["--model", "acme/x=/definitely/not/here"], "has no cog.yaml"),
    (["--weights", "acme/other=/tmp"], "is not a model given with --model"),
    (["--public-url", "ftp://x"], "must start with https://"),
    (["--ray-address", "127.0.0.1:6379"], "--ray-address: only applies with --backend ray"),
])
def test_bad_options_are_clear_errors(argv, message):
    with pytest.raises(ConfigError) as info:
        settings_from(_args(*argv), environ={})
    assert message in str(info.value)


@pytest.mark.parametrize("yaml_text, message", [
    ("models: [1, 2", "is not valid YAML"),
    ("colour: blue", "unknown key(s) colour"),
    ("models:\n  acme/x:\n    max_instances: 0\n    path: .", "max_instances: must be an integer >= 1"),
    ("models:\n  acme/x:\n    flavour: 1", "unknown key(s) flavour"),
    ("page_size: lots", "page_size must be a positive integer"),
    ("backend: k8s", "backend: 'k8s' is not one of: local, ray"),
    ("models:\n  acme/x:\n    min_instances: -1\n    path: .", "min_instances: must be an integer >= 0"),
    ("models:\n  acme/x:\n    min_instances: 3\n    max_instances: 2\n    path: .",
     "min_instances: 3 is more than max_instances (2)"),
    ("models:\n  acme/x:\n    cpus: 0\n    path: .", "cpus: must be a number > 0"),
    ("models:\n  acme/x:\n    memory: lots\n    path: .", "memory: must be a positive number of bytes or a size"),
])
def test_bad_hub_yaml_is_a_clear_error(tmp_path, yaml_text, message):
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        settings_from(_args("--config", str(cfg)), environ={})
    assert message in str(info.value)


def test_hub_yaml_models_and_env_token(tmp_path):
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(f"models:\n  acme/hello:\n    path: {CONFORMANCE / 'hello'}\n    max_instances: 2\n"
                   f"    env: {{GREETING: hi}}\n    description: says hello\n"
                   "collections:\n  demos:\n    name: Demos\n    models: [acme/hello]\n")
    s = settings_from(_args("--config", str(cfg)), environ={"COGKIT_HUB_TOKEN": "from-env"})
    assert s.token == "from-env"
    (m,) = s.models
    assert (m.full_name, m.max_instances, m.env, m.description) == ("acme/hello", 2, {"GREETING": "hi"}, "says hello")
    assert s.collections[0].models == ["acme/hello"]


def test_ray_backend_options(tmp_path):
    cfg = tmp_path / "hub.yaml"
    cfg.write_text(f"backend: ray\nmodels:\n  acme/hello:\n    path: {CONFORMANCE / 'hello'}\n    min_instances: 1\n"
                   "    max_instances: 3\n    cpus: 0.5\n    memory: 1.5GiB\n")
    s = settings_from(_args("--config", str(cfg)), environ={"RAY_ADDRESS": "10.0.0.1:6379"})
    (m,) = s.models
    assert (s.backend, s.ray_address) == ("ray", "10.0.0.1:6379")
    assert (m.min_instances, m.max_instances, m.cpus, m.memory) == (1, 3, 0.5, int(1.5 * 2**30))
    s = settings_from(_args("--config", str(cfg), "--ray-address", "auto"), environ={"RAY_ADDRESS": "x:1"})
    assert s.ray_address == "auto"
    # RAY_ADDRESS alone does not switch the backend
    assert settings_from(_args(), environ={"RAY_ADDRESS": "x:1"}).backend == "local"


def test_a_broken_model_is_a_clear_start_up_error(tmp_path):
    project = tmp_path / "broken"
    project.mkdir()
    (project / "cog.yaml").write_text('predict: "predict.py:Predictor"\n')
    (project / "predict.py").write_text("this is not python\n")
    proc = _cogkit("hub", "--port", str(free_port()), "--data-dir", str(tmp_path / "d"), "--model",
                   f"acme/broken={project}")
    assert proc.returncode == 1
    assert "error: cannot read the schema of" in proc.stderr
    assert "Traceback" not in proc.stderr.split("error:")[0][-200:]


def _start_plain(data, port: int, *extra: str) -> subprocess.Popen:
    """``cogkit hub`` without --token, waited for until it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "cogkit", "hub", "--port", str(port), "--data-dir", str(data),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health-check", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.communicate()[0])


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    return proc.communicate(timeout=30)[0]


def test_generated_token_is_printed_once_stored_privately_and_reused(tmp_path):
    data, port = tmp_path / "data", free_port()
    proc = _start_plain(data, port, "--model", f"acme/hello={CONFORMANCE / 'hello'}")
    try:
        token_file = data / "token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/v1/account").status_code == 401
        assert httpx.get(base + "/v1/account", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        out = _stop(proc)
    assert token in out  # printed at the first start
    out = _stop(_start_plain(data, port))
    assert token not in out and "API token in" in out  # later starts point at the file instead
    assert token_file.read_text().strip() == token


def test_changing_predict_py_adds_a_version_and_keeps_the_old(tmp_path):
    project = tmp_path / "hello"
    shutil.copytree(CONFORMANCE / "hello", project)
    hub = HubProcess(tmp_path / "data", None, {"acme/hello": project}).start()
    try:
        with hub.client() as c:
            old = c.post("/v1/models/acme/hello/predictions", json={"input": {"text": "a"}},
                         headers={"Prefer": "wait"}).json()
            assert old["output"] == "hello a"
    finally:
        hub.stop()
    (project / "predict.py").write_text((project / "predict.py").read_text().replace('"hello "', '"howdy "'))
    hub.start()
    try:
        with hub.client() as c:
            versions = c.get("/v1/models/acme/hello/versions").json()["results"]
            assert len(versions) == 2 and versions[1]["id"] == old["version"]
            new = c.post("/v1/models/acme/hello/predictions", json={"input": {"text": "a"}},
                         headers={"Prefer": "wait"}).json()
            assert new["output"] == "howdy a" and new["version"] == versions[0]["id"] != old["version"]
            assert c.get(f"/v1/predictions/{old['id']}").json()["output"] == "hello a"  # history kept
    finally:
        hub.stop()
    hub.start()  # unchanged: no new version
    try:
        with hub.client() as c:
            assert len(c.get("/v1/models/acme/hello/versions").json()["results"]) == 2
    finally:
        hub.stop()


def test_public_url_gives_token_free_file_urls(tmp_path):
    hub = HubProcess(tmp_path / "data", None, {"acme/image": CONFORMANCE / "path_output"})
    hub.extra = ["--public-url", f"http://127.0.0.1:{hub.port}/"]  # (https behind a real proxy)
    hub.start()
    try:
        with hub.client() as c:
            p = c.post("/v1/models/acme/image/predictions", json={"input": {}}, headers={"Prefer": "wait"}).json()
        assert p["output"].startswith(f"http://127.0.0.1:{hub.port}/files/") and p["output"].endswith("/out.png")
        r = httpx.get(p["output"])  # no token
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG") and r.headers["content-type"] == "image/png"
        assert p["urls"]["get"].startswith(f"http://127.0.0.1:{hub.port}/v1/predictions/")
    finally:
        hub.stop()


def test_idle_model_servers_stop_and_start_again(tmp_path):
    config = f"models:\n  acme/hello:\n    path: {CONFORMANCE / 'hello'}\n    idle_timeout: 1\n"
    hub = HubProcess(tmp_path / "data", None, {}, config=config).start()
    try:
        with hub.client() as c:
            first = c.post("/v1/models/acme/hello/predictions", json={"input": {"text": "a"}},
                           headers={"Prefer": "wait"}).json()
            assert "cold boot" in first["logs"] and len(hub.children()) == 1
            deadline = time.monotonic() + 15
            while hub.children() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert hub.children() == [], "the idle model server was not stopped"
            again = c.post("/v1/models/acme/hello/predictions", json={"input": {"text": "b"}},
                           headers={"Prefer": "wait"}).json()
            assert again["output"] == "hello b" and "cold boot" in again["logs"]
    finally:
        hub.stop()
