"""The OpenAPI 3.0.2 document Cog publishes for a predictor, built from its PredictorInfo.

Shapes follow Cog 0.23.1's generator (see ../shared/reference/cog-spec.md §2),
with cogkit's documented deviations: ``default=None`` inputs are optional and
nullable (D1) and ``Literal[...]`` works like ``choices`` (D7).
"""

from __future__ import annotations

import copy
from typing import Any

from cogkit._version import COG_COMPAT_VERSION
from cogkit.input import MISSING
from cogkit.signature import (
    ANY,
    BOOL,
    FILE,
    FLOAT,
    INT,
    OBJECT,
    PATH,
    SECRET,
    STR,
    InputField,
    PredictorInfo,
    TypeSpec,
)

_REF = "#/components/schemas/"
STATUSES = ["starting", "processing", "succeeded", "canceled", "failed"]


def title_case(name: str) -> str:
    """``num_inference_steps`` -> ``Num Inference Steps`` (rest of each word kept as written)."""
    return " ".join(p[:1].upper() + p[1:] for p in name.split("_") if p)


def go_number(value: Any) -> Any:
    """Integral floats are written as ints, as Cog's Go generator does (``minimum: 1``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [go_number(v) for v in value]
    if isinstance(value, dict):
        return {k: go_number(v) for k, v in value.items()}
    return value


def type_schema(spec: TypeSpec) -> dict[str, Any]:
    """The JSON-schema fragment of one type (no title, no x-order)."""
    k = spec.kind
    if k in (STR, INT):
        frag: dict[str, Any] = {"type": "string" if k == STR else "integer"}
        if spec.choices is not None:
            # Literal/Enum values below the top level (a top-level input's become an
            # enum component instead, see input_property)
            frag["enum"] = list(spec.choices)
        return frag
    if k == FLOAT:
        return {"type": "number"}
    if k == BOOL:
        return {"type": "boolean"}
    if k in (PATH, FILE):
        return {"type": "string", "format": "uri"}
    if k == SECRET:
        return {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
    if k == OBJECT:
        out: dict[str, Any] = {"type": "object"}
        if spec.additional is not None:
            out["additionalProperties"] = type_schema(spec.additional)
        return out
    if k == ANY:
        return {}
    if k == "list":
        assert spec.item is not None
        return {"type": "array", "items": type_schema(spec.item)}
    if k == "union":
        return {"anyOf": [type_schema(m) for m in spec.members]}
    if k == "model":
        props: dict[str, Any] = {}
        required = []
        for name, fspec, req, nullable in spec.fields:
            prop = {"title": title_case(name), **type_schema(fspec)}
            if nullable:
                prop["nullable"] = True
            props[name] = prop
            if req:
                required.append(name)
        out = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        return out
    raise ValueError(f"no schema for type kind {k!r}")


def input_property(f: InputField) -> dict[str, Any]:
    info = f.info
    prop: dict[str, Any]
    if f.choices is not None:
        prop = {"allOf": [{"$ref": _REF + f.name}]}
    else:
        prop = {"title": title_case(f.name), **type_schema(f.type)}
    if f.default is not MISSING:
        prop["default"] = copy.deepcopy(f.default)
    if f.nullable:
        prop["nullable"] = True
    if info.description is not None:
        prop["description"] = info.description
    target = prop["items"] if f.type.kind == "list" and "items" in prop else prop
    if info.ge is not None:
        target["minimum"] = info.ge
    if info.le is not None:
        target["maximum"] = info.le
    if info.min_length is not None:
        prop["minLength"] = info.min_length
    if info.max_length is not None:
        prop["maxLength"] = info.max_length
    if info.regex is not None:
        prop["pattern"] = info.regex
    if info.deprecated:
        prop["deprecated"] = True
    if info.accept is not None:
        prop["x-cog-accept"] = info.accept
    prop["x-order"] = f.order
    return prop


def enum_component(f: InputField) -> dict[str, Any]:
    choices = f.choices or []
    kind = "integer" if all(isinstance(c, int) and not isinstance(c, bool) for c in choices) else "string"
    return {"title": f.name, "description": "An enumeration.", "enum": list(choices), "type": kind}


def input_component(info: PredictorInfo, title: str) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "title": title,
        "type": "object",
        "properties": {f.name: input_property(f) for f in info.inputs},
    }
    required = [f.name for f in info.inputs if f.required]
    if required:
        comp["required"] = required
    return comp


def output_component(info: PredictorInfo) -> dict[str, Any]:
    out = info.output
    frag = type_schema(out.type)
    if out.iterator:
        frag = {"type": "array", "items": frag, "x-cog-array-type": "iterator"}
        if out.concatenate:
            frag["x-cog-array-display"] = "concatenate"
    return {"title": "Output", **frag}


def _json_response(ref: str | None) -> dict[str, Any]:
    schema = {"$ref": _REF + ref} if ref else {}
    return {"description": "Successful Response", "content": {"application/json": {"schema": schema}}}


_VALIDATION_RESPONSE = {
    "description": "Validation Error",
    "content": {"application/json": {"schema": {"$ref": _REF + "HTTPValidationError"}}},
}


def _fixed_components(prefix: str, inp: str, outp: str) -> dict[str, Any]:
    def string(title: str, fmt: str | None = None) -> dict[str, Any]:
        s = {"title": title, "type": "string"}
        if fmt:
            s["format"] = fmt
        return s

    return {
        f"{prefix}Request": {
            "title": f"{prefix}Request",
            "type": "object",
            "properties": {"id": string("Id"), "input": {"$ref": _REF + inp}},
        },
        f"{prefix}Response": {
            "title": f"{prefix}Response",
            "type": "object",
            "properties": {
                "input": {"$ref": _REF + inp},
                "output": {"$ref": _REF + outp},
                "id": string("Id"),
                "version": string("Version"),
                "created_at": string("Created At", "date-time"),
                "started_at": string("Started At", "date-time"),
                "completed_at": string("Completed At", "date-time"),
                "status": string("Status"),
                "error": string("Error"),
                "logs": string("Logs"),
                "metrics": {"title": "Metrics", "type": "object"},
            },
        },
        "Status": {"title": "Status", "description": "An enumeration.", "enum": list(STATUSES), "type": "string"},
        "HTTPValidationError": {
            "title": "HTTPValidationError",
            "type": "object",
            "properties": {
                "detail": {"title": "Detail", "type": "array", "items": {"$ref": _REF + "ValidationError"}}
            },
        },
        "ValidationError": {
            "title": "ValidationError",
            "type": "object",
            "required": ["loc", "msg", "type"],
            "properties": {
                "loc": {
                    "title": "Location",
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": {"title": "Message", "type": "string"},
                "type": {"title": "Error Type", "type": "string"},
            },
        },
    }


def _paths(mode: str, streaming: bool) -> dict[str, Any]:
    if mode == "train":
        coll, noun, verb, prefix, desc = "trainings", "training", "train", "Training", "Run a single training on the model"
    else:
        coll, noun, verb, prefix, desc = "predictions", "prediction", "predict", "Prediction", "Run a single prediction on the model"
    post: dict[str, Any] = {
        "summary": verb.title(),
        "description": desc,
        "operationId": f"{verb}_{coll}_post",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": _REF + f"{prefix}Request"}}}},
        "responses": {"200": _json_response(f"{prefix}Response"), "422": _VALIDATION_RESPONSE},
    }
    if streaming:
        post["x-cog-streaming"] = True
    return {
        f"/{coll}": {"post": post},
        f"/{coll}/{{{noun}_id}}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": f"cancel_{coll}__{noun}_id__cancel_post",
                "parameters": [
                    {
                        "required": True,
                        "schema": {"title": f"{title_case(noun)} Id", "type": "string"},
                        "name": f"{noun}_id",
                        "in": "path",
                    }
                ],
                "responses": {"200": _json_response(None), "422": _VALIDATION_RESPONSE},
            }
        },
    }


def openapi_document(info: PredictorInfo, train: PredictorInfo | None = None) -> dict[str, Any]:
    """The whole document; ``info`` may be a train-mode PredictorInfo on its own, or
    ``train`` may be given beside a predict-mode ``info`` to get Cog's merged document."""
    doc: dict[str, Any] = {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": COG_COMPAT_VERSION},
        "paths": {
            "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _json_response(None)}}},
            "/health-check": {
                "get": {
                    "summary": "Healthcheck",
                    "operationId": "healthcheck_health_check_get",
                    "responses": {"200": _json_response(None)},
                }
            },
        },
        "components": {"schemas": {}},
    }
    for part in (info, train):
        if part is None:
            continue
        schemas = doc["components"]["schemas"]
        prefix = "Training" if part.mode == "train" else ""
        inp, outp = f"{prefix}Input", f"{prefix}Output"
        part_schemas: dict[str, Any] = {inp: input_component(part, inp), outp: output_component(part)}
        for f in part.inputs:
            if f.choices is not None:
                part_schemas[f.name] = enum_component(f)
        part_schemas.update(_fixed_components("Training" if part.mode == "train" else "Prediction", inp, outp))
        for key, value in part_schemas.items():
            schemas.setdefault(key, value)
        for key, value in _paths(part.mode, part.streaming).items():
            doc["paths"].setdefault(key, value)
    return go_number(doc)


def project_document(project_dir: str = ".", predict_ref: str | None = None, train_ref: str | None = None) -> dict[str, Any]:
    """Import the predictor(s) of a project in this process and return its document.

    Used by ``cogkit schema`` and at build time; the server gets the same document
    from its worker process instead, so it never imports user code itself.
    """
    from cogkit.loader import load_target
    from cogkit.signature import inspect_predictor

    infos = []
    if predict_ref:
        infos.append(inspect_predictor(load_target(predict_ref, project_dir), "predict"))
    if train_ref:
        infos.append(inspect_predictor(load_target(train_ref, project_dir), "train"))
    if not infos:
        raise ValueError("project_document needs a predict or a train reference")
    return openapi_document(infos[0], infos[1] if len(infos) > 1 else None)
