"""Reading a Cog OpenAPI document (the one ``schema.py`` writes, or a Cog server's).

``Interface`` is the one typed view of a predictor's inputs and output for a mode
(predict or train): every module that needs to know which inputs are files or secrets,
or what kind of output comes back, asks it instead of indexing the raw dict. This
module imports nothing from the SDK, so any module may use it without a cycle.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
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


def _is_secret(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("x-cog-secret") or schema.get("format") == "password":
        return True
    if _is_secret(schema.get("items")):
        return True
    return any(_is_secret(s) for s in itertools.chain(schema.get("anyOf", ()), schema.get("allOf", ())))


@dataclass(frozen=True)
class Interface:
    """A predictor's inputs and output in one mode, read once from its OpenAPI document.

    Build it with ``Interface.of(doc, mode)`` once per predictor (not per request)."""

    mode: str
    schemas: dict[str, Any] = field(repr=False)  # components/schemas, for resolving $refs
    inputs: dict[str, Any] = field(repr=False)  # the Input / TrainingInput component
    output: dict[str, Any] = field(repr=False)  # the Output / TrainingOutput component
    file_inputs: dict[str, bool]  # file-typed input -> whether it is a list of files
    secret_inputs: frozenset[str]  # inputs never echoed (Secret, List[Secret])

    @classmethod
    def of(cls, doc: dict[str, Any], mode: str = "predict") -> Interface:
        schemas = (doc.get("components") or {}).get("schemas") or {}
        inputs = schemas.get("TrainingInput" if mode == "train" else "Input") or {}
        output = schemas.get("TrainingOutput" if mode == "train" else "Output") or {}
        files: dict[str, bool] = {}
        for name, prop in (inputs.get("properties") or {}).items():
            if prop.get("format") == "uri":
                files[name] = False
            elif prop.get("type") == "array" and (prop.get("items") or {}).get("format") == "uri":
                files[name] = True
        secrets = frozenset(n for n, p in (inputs.get("properties") or {}).items() if _is_secret(p))
        return cls(mode, schemas, inputs, output if isinstance(output, dict) else {}, files, secrets)

    # ---- inputs

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        """Each input's schema as declared (``$ref``s not resolved; see ``prop``)."""
        return self.inputs.get("properties") or {}

    @property
    def required(self) -> frozenset[str]:
        return frozenset(self.inputs.get("required") or ())

    def prop(self, name: str) -> dict[str, Any]:
        """One input's flat schema, choices (``allOf``/``$ref``) merged in."""
        return resolve_property(self.properties[name], self.schemas)

    # ---- output

    @property
    def output_is_list(self) -> bool:
        """A list or an iterator: each item is its own value (and file)."""
        return self.output.get("type") == "array"

    @property
    def output_is_iterator(self) -> bool:
        return self.output.get("x-cog-array-type") == "iterator"

    @property
    def output_concatenates(self) -> bool:
        """A ConcatenateIterator: its items are one text, shown joined."""
        return self.output.get("x-cog-array-display") == "concatenate"

    @property
    def output_streams_text(self) -> bool:
        """An iterator of strings, which the CLI prints as the items arrive."""
        return self.output_is_iterator and (self.output.get("items") or {}).get("type") == "string"
