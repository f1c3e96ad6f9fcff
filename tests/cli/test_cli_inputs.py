"""`-i name=value` / `--json` parsing, guided by the schema, as Cog's CLI does it."""

import json
from pathlib import Path
from typing import List, Optional

import pytest

from cogkit import BasePredictor, Input
from cogkit import Path as CogPath
from cogkit.cli.inputs import LocalFile, for_validation, parse_flags, parse_json
from cogkit.exceptions import CogkitError
from cogkit.schema import openapi_document
from cogkit.signature import inspect_predictor


class P(BasePredictor):
    def predict(
        self,
        prompt: str,
        steps: int = 4,
        scale: float = 1.5,
        fast: bool = False,
        mode: str = Input(choices=["a", "b"], default="a"),
        level: int = Input(choices=[1, 2], default=1),
        tags: List[str] = Input(default=[]),
        sizes: List[int] = Input(default=[]),
        image: Optional[CogPath] = None,
        extra: dict = Input(default={}),
    ) -> str:
        return ""


DOC = openapi_document(inspect_predictor(P))


def test_coercion_by_schema_type() -> None:
    v = parse_flags(["prompt=a photo", "steps=8", "scale=2", "fast=true", "level=2", "mode=b", 'extra={"k": 1}'], DOC)
    assert v == {"prompt": "a photo", "steps": 8, "scale": 2, "fast": True, "level": 2, "mode": "b", "extra": {"k": 1}}
    assert parse_flags(["scale=0.25"], DOC)["scale"] == 0.25


def test_unparseable_values_stay_strings_for_the_validator() -> None:
    assert parse_flags(["steps=eight", "fast=yes"], DOC) == {"steps": "eight", "fast": "yes"}


def test_lists_by_repetition_or_json() -> None:
    assert parse_flags(["tags=a", "tags=b", "sizes=3"], DOC) == {"tags": ["a", "b"], "sizes": [3]}
    assert parse_flags(["sizes=[1, 2]"], DOC) == {"sizes": [1, 2]}


def test_quotes_and_equals_in_values() -> None:
    assert parse_flags(['prompt="a=b"'], DOC) == {"prompt": "a=b"}


def test_unknown_input_suggests_a_name() -> None:
    with pytest.raises(CogkitError, match='unknown input "promt"; did you mean "prompt"\\?'):
        parse_flags(["promt=hi"], DOC)
    with pytest.raises(CogkitError, match="expected the form name=value"):
        parse_flags(["prompt"], DOC)
    with pytest.raises(CogkitError, match="given twice"):
        parse_flags(["steps=1", "steps=2"], DOC)


def test_at_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("from a file")
    (tmp_path / "img.png").write_bytes(b"png")
    v = parse_flags([f"prompt=@{tmp_path / 'p.txt'}", f"image=@{tmp_path / 'img.png'}"], DOC)
    assert v["prompt"] == "from a file"
    assert v["image"] == LocalFile(str(tmp_path / "img.png"))
    assert for_validation(v)["image"] == str(tmp_path / "img.png")


def test_json_inputs(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text(json.dumps({"prompt": "x", "steps": 2}))
    assert parse_json(f"@{tmp_path / 'in.json'}", DOC) == {"prompt": "x", "steps": 2}
    with pytest.raises(CogkitError, match="did you mean"):
        parse_json('{"step": 2}', DOC)
    with pytest.raises(CogkitError, match="JSON object"):
        parse_json("[1]", DOC)
    with pytest.raises(CogkitError, match="no such file"):
        parse_json(f"@{tmp_path / 'missing.json'}", DOC)
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe")
    with pytest.raises(CogkitError, match="cannot read .* as text"):
        parse_flags([f"prompt=@{tmp_path / 'bin.dat'}"], DOC)
