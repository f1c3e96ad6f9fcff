"""Input validation: every rule, Cog's 422 item shape and coglet's messages, D1–D3."""

import json
from pathlib import Path
from typing import List, Literal, Optional

import pytest

from cogkit import BasePredictor, Input, Secret
from cogkit import Path as CogPath
from cogkit.schema import openapi_document
from cogkit.signature import inspect_predictor
from cogkit.validation import InputValidator


class Zoo(BasePredictor):
    def predict(
        self,
        prompt: str = Input(min_length=1, max_length=5),
        seed: int = Input(default=None),
        code: str = Input(default="abc", regex="^[a-z]+$"),
        mode: str = Input(choices=["fast", "slow"], default="fast"),
        level: int = Input(choices=[1, 2, 3], default=1),
        steps: int = Input(ge=1, le=50, default=10),
        temperature: float = Input(ge=0.0, le=2.0, default=0.7),
        flag: bool = False,
        image: Optional[CogPath] = None,
        api_key: Optional[Secret] = None,
        tags: List[str] = Input(default=["x"]),
        counts: List[int] = Input(default=[], ge=0),
        kind: Literal["a", "b"] = "a",
        note: Optional[str] = None,
    ) -> str:
        return ""


@pytest.fixture(scope="module")
def validator() -> InputValidator:
    return InputValidator(openapi_document(inspect_predictor(Zoo)))


def _errors(v: InputValidator, payload: object) -> list[tuple[list, str, str]]:
    return [(e["loc"], e["msg"], e["type"]) for e in v.validate(payload).errors]


def test_valid_input_is_forwarded_as_sent(validator: InputValidator) -> None:
    result = validator.validate({"prompt": "hi", "temperature": 1})
    assert result.ok and result.inputs == {"prompt": "hi", "temperature": 1}
    assert type(result.inputs["temperature"]) is int  # Cog 0.23.1 does not convert 1 to 1.0


@pytest.mark.parametrize(
    "payload, loc, msg",
    [
        ({}, "prompt", "Field required"),
        ({"prompt": ""}, "prompt", '"" is shorter than 1 character'),
        ({"prompt": "toolong"}, "prompt", '"toolong" is longer than 5 characters'),
        ({"prompt": 5}, "prompt", '5 is not of type "string"'),
        ({"prompt": None}, "prompt", 'null is not of type "string"'),
        ({"prompt": "a", "code": "ABC"}, "code", '"ABC" does not match "^[a-z]+$"'),
        ({"prompt": "a", "mode": "medium"}, "mode", '"medium" is not one of ["fast","slow"]'),
        ({"prompt": "a", "mode": 3}, "mode", '3 is not of type "string"'),
        ({"prompt": "a", "level": 4}, "level", "4 is not one of [1,2,3]"),
        ({"prompt": "a", "level": True}, "level", 'true is not of type "integer"'),
        ({"prompt": "a", "steps": 0}, "steps", "0 is less than the minimum of 1"),
        ({"prompt": "a", "steps": 51}, "steps", "51 is greater than the maximum of 50"),
        ({"prompt": "a", "steps": "5"}, "steps", '"5" is not of type "integer"'),
        ({"prompt": "a", "steps": 5.5}, "steps", '5.5 is not of type "integer"'),
        ({"prompt": "a", "temperature": 2.5}, "temperature", "2.5 is greater than the maximum of 2"),
        ({"prompt": "a", "temperature": "hot"}, "temperature", '"hot" is not of type "number"'),
        ({"prompt": "a", "flag": "yes"}, "flag", '"yes" is not of type "boolean"'),
        ({"prompt": "a", "flag": 1}, "flag", '1 is not of type "boolean"'),
        ({"prompt": "a", "tags": "x"}, "tags", '"x" is not of type "array"'),
        ({"prompt": "a", "kind": "c"}, "kind", '"c" is not one of ["a","b"]'),
        ({"prompt": "a", "image": 3}, "image", '3 is not of type "string"'),
    ],
)
def test_each_rule_names_field_and_rule(validator: InputValidator, payload: dict, loc: str, msg: str) -> None:
    errors = _errors(validator, payload)
    assert len(errors) == 1, errors
    assert errors[0][0] == ["body", "input", loc]
    assert errors[0][1] == msg
    assert errors[0][2] == ("value_error.missing" if msg == "Field required" else "value_error")


def test_list_item_errors_carry_the_index(validator: InputValidator) -> None:
    assert _errors(validator, {"prompt": "a", "tags": ["ok", 3]}) == [
        (["body", "input", "tags", 1], '3 is not of type "string"', "value_error")
    ]
    assert _errors(validator, {"prompt": "a", "counts": [1, -1]}) == [
        (["body", "input", "counts", 1], "-1 is less than the minimum of 0", "value_error")
    ]


def test_literal_list_items_must_be_one_of_the_values() -> None:
    class P(BasePredictor):
        def predict(self, kinds: List[Literal["a", "b"]] = Input(default=[])) -> str:
            return ""

    v = InputValidator(openapi_document(inspect_predictor(P)))
    assert _errors(v, {"kinds": ["a", "c"]}) == [
        (["body", "input", "kinds", 1], '"c" is not one of ["a","b"]', "value_error")
    ]
    assert v.validate({"kinds": ["b", "a"]}).ok


def test_all_errors_reported_at_once_in_input_order(validator: InputValidator) -> None:
    errors = _errors(validator, {"prompt": 1, "seed": "x", "steps": 99, "flag": "no"})
    assert [e[0][2] for e in errors] == ["prompt", "seed", "steps", "flag"]


def test_default_none_is_optional_and_null_accepted_d1_d2(validator: InputValidator) -> None:
    assert validator.validate({"prompt": "a"}).ok  # seed omitted: D1
    assert validator.validate({"prompt": "a", "seed": None, "note": None, "image": None, "api_key": None}).ok  # D2


def test_messages_never_quote_a_secret(validator: InputValidator) -> None:
    errors = _errors(validator, {"prompt": "a", "api_key": 12345})
    assert errors == [(["body", "input", "api_key"], '"**********" is not of type "string"', "value_error")]


def test_unknown_keys_dropped_and_reported_d3(validator: InputValidator) -> None:
    result = validator.validate({"prompt": "a", "extra": 1, "other": "x"})
    assert result.ok and result.inputs == {"prompt": "a"} and result.unknown == ["extra", "other"]


def test_input_not_an_object(validator: InputValidator) -> None:
    assert _errors(validator, "str") == [(["body", "input", "__root__"], '"str" is not of type "object"', "value_error")]
    assert _errors(validator, [1]) == [(["body", "input", "__root__"], '[1] is not of type "object"', "value_error")]


def test_goldens_422_bodies(conformance_dir: Path) -> None:
    """Every 422 input error recorded from Cog 0.23.1 comes out identical (except D1/D2 cases)."""
    import subprocess
    import sys

    checked = 0
    for exchanges in sorted((conformance_dir / "golden").glob("*.exchanges.json")):
        name = exchanges.name.split(".")[0]
        doc = json.loads(
            subprocess.run([sys.executable, "-m", "cogkit", "schema"], cwd=conformance_dir / "predictors" / name,
                           capture_output=True, text=True, check=True).stdout
        )
        v = InputValidator(doc)
        for run in json.loads(exchanges.read_text())["runs"]:
            for ex in run["exchanges"]:
                req, resp = ex.get("request") or {}, ex.get("response") or {}
                body = req.get("body")
                if resp.get("status") != 422 or not isinstance(body, dict) or "/predictions/" in req.get("path", ""):
                    continue
                if ex["name"] in ("predict_sync_invalid_1", "null_for_optional") and name == "types_zoo":
                    assert v.validate(body.get("input")).ok  # D1 / D2: accepted by cogkit
                    continue
                assert v.validate(body.get("input")).errors == resp["body"]["detail"], ex["name"]
                checked += 1
    assert checked >= 20
