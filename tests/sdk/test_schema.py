"""The OpenAPI document cogkit publishes, against Cog 0.23.1's goldens and the spec's rules."""


import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator, List, Literal, Optional

import pytest

from cogkit import AsyncConcatenateIterator, BaseModel, BasePredictor, ConcatenateIterator, File, Input, Secret
from cogkit import Path as CogPath
from cogkit import streaming
from cogkit.exceptions import PredictorError
from cogkit.schema import openapi_document, title_case
from cogkit.signature import inspect_predictor
from tests import conformance_fixtures
from tests.schema_compare import differences


# The deviations the conformance README documents for the goldens (D1 for types_zoo).
EXPECTED_DIFFS = {
    "types_zoo": {
        "components/schemas/Input/properties/seed/nullable: extra in candidate (true)",
        "components/schemas/Input/required: ['prompt', 'seed'] != ['prompt']",
    }
}


def _schema_via_cli(fixture_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "cogkit", "schema"], cwd=fixture_dir, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", conformance_fixtures.NAMES)
def test_fixture_schema_matches_golden(conformance_dir: Path, name: str) -> None:
    golden = json.loads((conformance_dir / "golden" / f"{name}.openapi.json").read_text())
    candidate = _schema_via_cli(conformance_dir / "predictors" / name)
    assert set(differences(golden, candidate)) == EXPECTED_DIFFS.get(name, set())


def _doc(cls: type, mode: str = "predict") -> dict[str, Any]:
    return openapi_document(inspect_predictor(cls, mode))


def _input(cls: type) -> dict[str, Any]:
    return _doc(cls)["components"]["schemas"]["Input"]


def test_worked_example_from_spec() -> None:
    """cog-spec §2.7, with deviation D1 (seed: default=None is optional and nullable)."""

    class Runner(BasePredictor):
        def predict(
            self,
            prompt: str = Input(description="Text prompt"),
            negative_prompt: Optional[str] = Input(description="What to avoid", default=None),
            width: int = Input(description="Output width", default=512, ge=64, le=2048),
            guidance_scale: float = Input(default=7.5, ge=1, le=20),
            scheduler: str = Input(description="Sampler", default="DDIM", choices=["DDIM", "K_EULER"]),
            num_outputs: int = Input(default=1, choices=[1, 2, 4]),
            image: CogPath = Input(description="Init image"),
            mask: Optional[CogPath] = Input(description="Inpainting mask", default=None),
            seed: int = Input(description="Random seed", default=None),
            api_key: Secret = Input(description="Provider key", default=None),
            tags: list[str] = Input(description="Style tags"),
            upscale: bool = False,
            caption: str = Input(default="", max_length=200, regex="^[a-z ]*$"),
        ) -> Iterator[CogPath]:
            raise NotImplementedError

    doc = _doc(Runner)
    s = doc["components"]["schemas"]
    inp = s["Input"]
    assert list(inp["properties"]) == [
        "prompt", "negative_prompt", "width", "guidance_scale", "scheduler", "num_outputs",
        "image", "mask", "seed", "api_key", "tags", "upscale", "caption",
    ]
    assert inp["required"] == ["prompt", "image", "tags"]
    p = inp["properties"]
    assert p["prompt"] == {"type": "string", "title": "Prompt", "description": "Text prompt", "x-order": 0}
    assert p["negative_prompt"] == {"type": "string", "title": "Negative Prompt", "description": "What to avoid", "nullable": True, "x-order": 1}
    assert p["width"] == {"type": "integer", "title": "Width", "description": "Output width", "default": 512, "minimum": 64, "maximum": 2048, "x-order": 2}
    assert p["scheduler"] == {"allOf": [{"$ref": "#/components/schemas/scheduler"}], "default": "DDIM", "description": "Sampler", "x-order": 4}
    assert p["image"] == {"type": "string", "format": "uri", "title": "Image", "description": "Init image", "x-order": 6}
    assert p["seed"] == {"type": "integer", "title": "Seed", "description": "Random seed", "nullable": True, "x-order": 8}
    assert p["api_key"] == {
        "type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True,
        "title": "Api Key", "description": "Provider key", "nullable": True, "x-order": 9,
    }
    assert p["tags"] == {"type": "array", "items": {"type": "string"}, "title": "Tags", "description": "Style tags", "x-order": 10}
    assert p["upscale"] == {"type": "boolean", "title": "Upscale", "default": False, "x-order": 11}
    assert p["caption"] == {"type": "string", "title": "Caption", "default": "", "maxLength": 200, "pattern": "^[a-z ]*$", "x-order": 12}
    assert s["Output"] == {"title": "Output", "type": "array", "items": {"type": "string", "format": "uri"}, "x-cog-array-type": "iterator"}
    assert s["scheduler"] == {"title": "scheduler", "description": "An enumeration.", "enum": ["DDIM", "K_EULER"], "type": "string"}
    assert s["num_outputs"] == {"title": "num_outputs", "description": "An enumeration.", "enum": [1, 2, 4], "type": "integer"}
    assert list(s)[:4] == ["Input", "Output", "scheduler", "num_outputs"]


def test_literal_is_choices_d7() -> None:
    class P(BasePredictor):
        def predict(self, mode: Literal["a", "b"] = "a", level: Literal[1, 2] = Input(default=2)) -> str:
            return mode

    s = _doc(P)["components"]["schemas"]
    assert s["Input"]["properties"]["mode"] == {"allOf": [{"$ref": "#/components/schemas/mode"}], "default": "a", "x-order": 0}
    assert s["mode"] == {"title": "mode", "description": "An enumeration.", "enum": ["a", "b"], "type": "string"}
    assert s["level"]["type"] == "integer"


def test_literal_below_the_top_level_is_an_inline_enum() -> None:
    class P(BasePredictor):
        def predict(self, kinds: List[Literal["a", "b"]] = Input(default=[])) -> Literal[1, 2]:
            return 1

    s = _doc(P)["components"]["schemas"]
    assert s["Input"]["properties"]["kinds"]["items"] == {"type": "string", "enum": ["a", "b"]}
    assert s["Output"] == {"title": "Output", "type": "integer", "enum": [1, 2]}
    assert "kinds" not in s  # no enum component: that form is for top-level inputs


def test_title_case() -> None:
    assert title_case("num_inference_steps") == "Num Inference Steps"
    assert title_case("TTFT_ms") == "TTFT Ms"


def test_train_mode_document() -> None:
    class T(BasePredictor):
        def train(self, steps: int = 10) -> CogPath:
            raise NotImplementedError

    doc = _doc(T, "train")
    s = doc["components"]["schemas"]
    assert "TrainingInput" in s and "TrainingOutput" in s and "Input" not in s
    assert s["TrainingInput"]["title"] == "TrainingInput"
    assert s["TrainingOutput"] == {"title": "Output", "type": "string", "format": "uri"}
    post = doc["paths"]["/trainings"]["post"]
    assert post["operationId"] == "train_trainings_post"
    assert post["description"] == "Run a single training on the model"
    cancel = doc["paths"]["/trainings/{training_id}/cancel"]["post"]
    assert cancel["parameters"][0]["schema"]["title"] == "Training Id"
    assert s["TrainingResponse"]["properties"]["input"] == {"$ref": "#/components/schemas/TrainingInput"}


def test_streaming_accept_deprecated_and_concatenate() -> None:
    class P(BasePredictor):
        @streaming
        async def predict(
            self,
            weights: CogPath = Input(accept=".safetensors", default=None),
            old: str = Input(default="x", deprecated=True),
        ) -> AsyncConcatenateIterator[str]:
            yield "x"

    doc = _doc(P)
    assert doc["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    props = doc["components"]["schemas"]["Input"]["properties"]
    assert props["weights"]["x-cog-accept"] == ".safetensors"
    assert props["old"]["deprecated"] is True
    assert doc["components"]["schemas"]["Output"]["x-cog-array-display"] == "concatenate"


def test_structured_outputs() -> None:
    class Out(BaseModel):
        image: CogPath
        caption: Optional[str]
        scores: List[float]
        seed: int = 0

    class P(BasePredictor):
        def predict(self) -> Out:
            raise NotImplementedError

    out = _doc(P)["components"]["schemas"]["Output"]
    assert out == {
        "title": "Output",
        "type": "object",
        "properties": {
            "image": {"title": "Image", "type": "string", "format": "uri"},
            "caption": {"title": "Caption", "type": "string", "nullable": True},
            "scores": {"title": "Scores", "type": "array", "items": {"type": "number"}},
            "seed": {"title": "Seed", "type": "integer"},
        },
        "required": ["image", "scores"],
    }


@pytest.mark.parametrize(
    ("annotation", "fragment"),
    [
        (dict, {"type": "object"}),
        (list, {"type": "array", "items": {}}),
        (List, {"type": "array", "items": {}}),
        (tuple, {"type": "array", "items": {}}),
    ],
)
def test_plain_json_outputs(annotation: Any, fragment: dict[str, Any]) -> None:
    def predict() -> str:
        raise NotImplementedError

    predict.__annotations__["return"] = annotation
    assert _doc(predict)["components"]["schemas"]["Output"] == {"title": "Output", **fragment}


def test_union_dict_and_file_inputs() -> None:
    class P(BasePredictor):
        def predict(self, x: str | list[str], cfg: dict = Input(default={}), doc: File = None) -> dict[str, int]:
            raise NotImplementedError

    doc = _doc(P)["components"]["schemas"]
    props = doc["Input"]["properties"]
    assert props["x"]["anyOf"] == [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    assert doc["Input"]["required"] == ["x"]
    assert props["cfg"]["type"] == "object"
    assert props["doc"]["format"] == "uri" and props["doc"]["nullable"] is True
    assert doc["Output"] == {"title": "Output", "type": "object", "additionalProperties": {"type": "integer"}}


@pytest.mark.parametrize(
    "source, message",
    [
        ("def predict(self, x) -> str: ...", "needs a type annotation"),
        ("def predict(self, x: str): ...", "return type annotation is required"),
        ("def predict(self, x: str) -> Optional[str]: ...", "must not be Optional"),
        ("def predict(self, x: list[list[str]]) -> str: ...", "nested generic"),
        ("def predict(self, x: str = Input(choices=['a'])) -> str: ...", "at least 2"),
        ("def predict(self, x: int = Input(choices=[1, 2], ge=0)) -> str: ...", "cannot be combined"),
        ("def predict(self, x: int = Input(default=0, ge=1)) -> str: ...", "less than ge=1"),
        ("def predict(self, x: str = Input(default='A', regex='^[a-z]+$')) -> str: ...", "does not match"),
        ("def predict(self, x: str = Input(ge=1)) -> str: ...", "int and float inputs only"),
        ("def predict(self, *args: str) -> str: ...", "not supported"),
        ("def predict(self, x: str) -> ConcatenateIterator[int]: ...", "must be str"),
        ("def predict(self, x: tuple) -> str: ...", "unsupported type"),
        ("def predict(self, x: str = Input(accept='image/*')) -> str: ...", "Path and File inputs only"),
    ],
)
def test_invalid_signatures_name_the_input_and_rule(source: str, message: str) -> None:
    ns: dict[str, Any] = {}
    code = "class P(BasePredictor):\n" + textwrap.indent(source, "    ")
    exec(code, {"BasePredictor": BasePredictor, "Input": Input, "Optional": Optional, "ConcatenateIterator": ConcatenateIterator}, ns)
    with pytest.raises(PredictorError, match=message):
        inspect_predictor(ns["P"])


def test_run_and_predict_both_defined_is_an_error() -> None:
    class P(BasePredictor):
        def run(self) -> str:
            return ""

        def predict(self) -> str:
            return ""

    with pytest.raises(PredictorError, match="either run\\(\\) or predict\\(\\), not both"):
        inspect_predictor(P)


def test_function_predictor_schema() -> None:
    def predict(text: str = Input(description="t")) -> str:
        return text

    info = inspect_predictor(predict)
    assert info.is_function and info.method == "predict"
    assert openapi_document(info)["components"]["schemas"]["Input"]["required"] == ["text"]
