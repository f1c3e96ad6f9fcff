"""The SDK surface a predictor sees: types, Input, decorators, metrics scope, `import cog`."""

import dataclasses
import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cogkit
from cogkit import BaseModel, CancelationException, Input, Secret, URLFile, concurrent, current_scope
from cogkit.loader import PredictorRef, load_target
from cogkit.exceptions import PredictorError
from cogkit.scope import scope


def test_public_names() -> None:
    for name in ["BasePredictor", "BaseRunner", "Input", "Path", "File", "Secret", "URLPath", "ConcatenateIterator",
                 "AsyncConcatenateIterator", "BaseModel", "current_scope", "emit_metric", "CancelationException",
                 "streaming", "concurrent", "__version__"]:
        assert hasattr(cogkit, name), name
    assert issubclass(CancelationException, BaseException) and not issubclass(CancelationException, Exception)
    assert issubclass(cogkit.BasePredictor, cogkit.BaseRunner)


def test_secret_masks_its_value() -> None:
    s = Secret("sk-123")
    assert str(s) == "**********" and "sk-123" not in repr(s)
    assert s.get_secret_value() == "sk-123"
    assert str(Secret(None)) == ""


def test_basemodel_subclasses_are_keyword_dataclasses() -> None:
    class Out(BaseModel):
        text: str
        count: int = 0

    o = Out(text="a")
    assert dataclasses.is_dataclass(o) and o.count == 0
    with pytest.raises(TypeError):
        Out("a")  # keyword-only, as in Cog


def test_input_rejects_default_factory() -> None:
    with pytest.raises(TypeError, match="default_factory"):
        Input(default_factory=list)


def test_concurrent_decorator_rules() -> None:
    with pytest.raises(TypeError):
        concurrent(max=True)
    with pytest.raises(ValueError):
        concurrent(max=0)
    with pytest.raises(TypeError, match="async"):
        concurrent(max=2)(lambda self: None)

    @concurrent(max=4)
    async def run(self) -> str:
        return ""

    assert run._cogkit_concurrency == 4


def test_urlfile_reads_the_downloaded_copy_and_pickles(tmp_path: Path) -> None:
    local = tmp_path / "x.bin"
    local.write_bytes(b"data")
    f = URLFile("http://example.com/a/x.bin?sig=1", local)
    assert f.name == "x.bin" and f.read() == b"data"
    g = pickle.loads(pickle.dumps(f))
    assert g.read() == b"data" and isinstance(g, io.IOBase)


def test_metrics_modes_and_rules() -> None:
    seen = []
    with scope(sink=lambda k, v, m: seen.append((k, v, m)), context={"user": "u1"}) as sc:
        current_scope().record_metric("tokens", 3)
        current_scope().record_metric("tokens", 2, "incr")
        current_scope().record_metric("timing.steps", 1.5, "append")
        current_scope().record_metric("timing.steps", 2.5, "append")
        current_scope().metrics["flag"] = True
        del current_scope().metrics["flag"]
        assert current_scope().context == {"user": "u1"}
        with pytest.raises(TypeError, match="Invalid metric mode"):
            current_scope().record_metric("x", 1, "sum")
        with pytest.raises(ValueError, match="reserved"):
            current_scope().record_metric("predict_time", 1)
        with pytest.raises(ValueError):
            current_scope().record_metric("a.b.c.d.e", 1)
        with pytest.raises(ValueError):
            current_scope().record_metric("_x", 1)
        with pytest.raises(TypeError):
            current_scope().record_metric("tokens", "three")
        assert sc.metrics.snapshot() == {"tokens": 5, "timing.steps": [1.5, 2.5]}
    assert ("tokens", 2, "incr") in seen
    # Outside a prediction: a silent no-op scope.
    current_scope().record_metric("anything", object())


def test_predictor_refs() -> None:
    assert PredictorRef.parse("predict.py:Predictor") == PredictorRef("predict.py", "Predictor")
    assert PredictorRef.parse("sub/run.py:Runner") == PredictorRef("sub/run.py", "Runner")
    assert PredictorRef.parse("predict.py") == PredictorRef("predict.py", None)
    with pytest.raises(PredictorError, match="must be in the form"):
        PredictorRef.parse("predict:Predictor")


def test_ref_without_name_prefers_runner(tmp_path: Path) -> None:
    (tmp_path / "both.py").write_text(textwrap.dedent("""
        from cog import BaseRunner, BasePredictor
        class Predictor(BasePredictor):
            def predict(self) -> str: return "p"
        class Runner(BaseRunner):
            def run(self) -> str: return "r"
    """))
    assert load_target("both.py", tmp_path).__name__ == "Runner"


def _run(code: str, cwd: Path, extra_path: str | None = None) -> str:
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = extra_path
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_cog_resolves_to_cogkit_when_cog_is_absent(tmp_path: Path) -> None:
    (tmp_path / "predict.py").write_text(textwrap.dedent("""
        from cog import BasePredictor, Input, Path, Secret
        from cog.types import ConcatenateIterator
        from cog.server.exceptions import CancelationException  # where Cog <= 0.16 had it
        from cog import ExperimentalFeatureWarning
        import warnings
        warnings.filterwarnings("ignore", category=ExperimentalFeatureWarning)
        import cog
        class Predictor(BasePredictor):
            def predict(self, s: Secret = Input(default=None)) -> str:
                return cog.__name__ + " " + BasePredictor.__module__
    """))
    out = _run("""
        from cogkit.loader import load_target
        p = load_target('predict.py:Predictor', '.')()
        print(p.predict())
        import sys; print('cogkit' in sys.modules['cog'].__cogkit_alias__)
    """, tmp_path)
    assert out.splitlines() == ["cog cogkit.predictor", "True"]


def test_a_real_cog_install_wins_over_the_alias(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "cog"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    out = _run("""
        from cogkit.compat import install_cog_alias
        install_cog_alias()
        import cog
        print(getattr(cog, 'REAL', False))
    """, tmp_path, extra_path=str(tmp_path / "site"))
    assert out == "True"
