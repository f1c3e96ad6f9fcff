"""``cogkit predict --image IMAGE`` (and ``cogkit train --image``): one prediction or
training against a built image.

The image runs its own server (podman or docker, host network); inputs are checked
against the schema it serves, sent over HTTP, and the data-URL outputs that come
back are written to disk with the same names as a local run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

from cogkit.exceptions import CogkitError


def _files_from_data_urls(value: Any, out_schema: dict[str, Any], tmpdir: str) -> Any:
    """Data URLs in file-typed output positions become FileOutput markers (temp files)."""
    from cogkit.files import decode_data_url, extension_for
    from cogkit.worker.protocol import FileOutput

    def walk(v: Any, schema: dict[str, Any]) -> Any:
        if isinstance(v, str) and schema.get("format") == "uri" and v.startswith("data:"):
            mime, data = decode_data_url(v)
            path = os.path.join(tempfile.mkdtemp(dir=tmpdir), "output" + extension_for(mime))  # owned: alone in a folder
            with open(path, "wb") as f:
                f.write(data)
            return FileOutput(path, owned=True)
        if isinstance(v, list):
            return [walk(x, schema.get("items") or {}) for x in v]
        if isinstance(v, dict):
            props = schema.get("properties") or {}
            return {k: walk(x, props.get(k) or {}) for k, x in v.items()}
        return v

    return walk(value, out_schema)


def run_image(args: argparse.Namespace) -> int:
    import httpx

    from cogkit.build.runner import run_image as start_image
    from cogkit.cli.inputs import (
        env_flags,
        file_markers_to_data_urls,
        for_validation,
        parse_flags,
        parse_json,
        print_problems,
        print_validation_errors,
    )
    from cogkit.cli.outputs import MODES, render
    from cogkit.openapi import Interface
    from cogkit.validation import InputValidator

    mode = args.mode
    words = MODES[mode]
    env = env_flags(args.env)
    weights = args.weights if args.weights is not None else os.environ.get("COG_WEIGHTS")
    if weights:
        env["COG_WEIGHTS"] = weights
    print(f"Starting {args.image}...", file=sys.stderr)
    with start_image(args.image, env=env, setup_timeout=args.setup_timeout or 24 * 3600.0, log_stream=sys.stderr) as url:
        schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
        values = parse_json(args.json, schema, mode) if args.json is not None else parse_flags(args.input, schema, mode)
        result = InputValidator(schema, mode).validate(for_validation(values))
        if result.errors:
            print_problems(result.problems)
            return 1
        route = "/trainings" if mode == "train" else "/predictions"
        resp = httpx.post(f"{url}{route}", json={"input": file_markers_to_data_urls(values)}, timeout=None)
        if resp.status_code == 422:
            print_validation_errors(resp.json().get("detail", []))
            return 1
        if resp.status_code != 200:
            raise CogkitError(f"the image's server answered {resp.status_code}: {resp.text[:500]}")
        body = resp.json()
    status, output = body.get("status"), body.get("output")
    if args.json is not None:
        print(json.dumps(body, indent=2))
        return 0 if status == "succeeded" else 1
    if status != "succeeded":
        print(f'error: {words.noun} failed with status "{status}": {body.get("error")}', file=sys.stderr)
        return 1
    iface = Interface.of(schema, mode)
    with tempfile.TemporaryDirectory(prefix="cogkit-image-out-") as tmpdir:
        text, written = render(
            _files_from_data_urls(output, iface.output, tmpdir),
            args.output if args.output is not None else words.default_output,
            already_streamed=False,
            concatenate=iface.output_concatenates,
            text_to_file=args.output is not None,
        )
    if text is not None:
        print(text)
    for path in written:
        print(f"Written output to: {path}", file=sys.stderr)
    return 0
