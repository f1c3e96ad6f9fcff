"""Fixtures for the hub tests: a real ``cogkit hub`` process on a free port, on SQLite or
on a real PostgreSQL server these fixtures start themselves (Debian's postgresql,
``initdb`` + ``pg_ctl`` on a temp dir), serving the Cog conformance predictors and the
hub fixtures in tests/fixtures/hub."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO.parent / "shared" / "conformance" / "cog-0.23.1" / "predictors"
FIXTURES = REPO / "tests" / "fixtures" / "hub"
TOKEN = "test-token-0123456789"

MODELS = {
    "acme/hello": CONFORMANCE / "hello",
    "acme/concat": CONFORMANCE / "concat_iterator",
    "acme/image": CONFORMANCE / "path_output",
    "acme/files": CONFORMANCE / "list_path_output",
    "acme/slow": CONFORMANCE / "slow",
    "acme/raises": CONFORMANCE / "predict_raises",
    "acme/filesize": FIXTURES / "filesize",
    "acme/progress": FIXTURES / "progress",
    "acme/progress-cogkit": FIXTURES / "progress_cogkit",
    "acme/trainer": FIXTURES / "trainer",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COGKIT_HUB_TOKEN", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class HubProcess:
    """One ``cogkit hub`` (``python -m cogkit hub``) with its data dir; restartable."""

    def __init__(self, data_dir: Path, db_url: str | None, models: dict[str, Path], config: str | None = None,
                 token: str = TOKEN, extra: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.models = models
        self.config = config
        self.token = token
        self.extra = extra or []
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "hub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> HubProcess:
        args = [sys.executable, "-m", "cogkit", "hub", "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--token", self.token, *self.extra]
        if self.db_url:
            args += ["--db", self.db_url]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config:
            cfg = self.data_dir / "hub.yaml"
            cfg.write_text(self.config)
            args += ["--config", str(cfg)]
        for ref, path in self.models.items():
            args += ["--model", f"{ref}={path}"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=str(self.data_dir))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cogkit hub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health-check", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cogkit hub did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> float:
        """Stop the hub; returns the seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"cogkit hub did not stop within {timeout} s:\n{self.log()}")
        return time.monotonic() - t0

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kw)

    def children(self) -> list[int]:
        """Pids of the model servers this hub started (its direct children)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]


# ---------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class Postgres:
    """A throwaway PostgreSQL cluster in a temp dir, on a free port."""

    def __init__(self) -> None:
        initdb = _pg_bin("initdb")
        if initdb is None:
            pytest.fail("PostgreSQL is not installed (initdb not found): run scripts/install-hub-tools.sh "
                        "(apt-get install postgresql); the hub's tests need a real PostgreSQL server")
        self.bin = Path(initdb).parent
        self.dir = Path(tempfile.mkdtemp(prefix="cogkit-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            os.chmod(self.dir, 0o777)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                   "-o", f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c fsync=off", "start"])
        self.n = 0

    def _run(self, args: list[str]) -> None:
        proc = subprocess.run(self.as_user + args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")

    def new_database(self) -> str:
        self.n += 1
        name = f"hub{self.n}"
        self._run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name])
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def db_url_for(request):
    """``db_url_for("sqlite" | "postgresql")`` -> a fresh database URL (None: the default SQLite)."""

    def make(kind: str) -> str | None:
        if kind == "sqlite":
            return None
        return request.getfixturevalue("postgres").new_database()

    return make


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hub(request, tmp_path_factory, db_url_for):
    """A hub serving every test model, on each database."""
    data = tmp_path_factory.mktemp(f"hub-{request.param}")
    proc = HubProcess(data, db_url_for(request.param), MODELS, config="page_size: 3\n").start()
    proc.db_kind = request.param
    yield proc
    proc.stop()


@pytest.fixture()
def receiver():
    """A real HTTP server that records the webhooks it gets (tests/hub/receiver.py)."""
    from tests.hub.receiver import Receiver

    r = Receiver()
    yield r
    r.close()
