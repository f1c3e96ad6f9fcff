"""Reading a Cog OpenAPI document (the one ``schema.py`` writes, or a Cog server's):
small helpers with no imports from the SDK, so any module may use them without a cycle."""

from __future__ import annotations

from typing import Any


def resolve_property(prop: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """One flat property schema: ``allOf: [{$ref}]`` (choices) or a ``$ref`` merged in,
    the property's own keys winning."""
    if "allOf" in prop:
        merged = {k: v for k, v in prop.items() if k != "allOf"}
        for part in prop["allOf"]:
            ref = part.get("$ref", "")
            target = schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else part
            for k, v in target.items():
                merged.setdefault(k, v)
        return merged
    if "$ref" in prop:
        return resolve_property({"allOf": [{"$ref": prop["$ref"]}], **{k: v for k, v in prop.items() if k != "$ref"}}, schemas)
    return prop


def input_schema(doc: dict[str, Any], mode: str = "predict") -> dict[str, Any]:
    """The Input (or TrainingInput) component of a document."""
    return doc["components"]["schemas"]["TrainingInput" if mode == "train" else "Input"]
