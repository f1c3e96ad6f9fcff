"""``cogkit schema``: print the OpenAPI document of the project's predictor."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the predictor's OpenAPI schema (JSON)")
    p.add_argument("-f", "--file", default="cog.yaml", help="path to cog.yaml (default: ./cog.yaml)")
    p.add_argument("--mode", choices=["predict", "train", "all"], default="all",
                   help="which entry point to describe (default: every one cog.yaml names)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cogkit.config import predictor_ref, load_config
    from cogkit.exceptions import ConfigError
    from cogkit.schema import project_document

    cfg = load_config(args.file)

    def ref(mode: str) -> str | None:
        if args.mode not in (mode, "all"):
            return None
        try:
            return predictor_ref(mode, config=cfg)
        except ConfigError:
            if args.mode == "all":
                return None
            raise

    predict_ref, train_ref = ref("predict"), ref("train")
    if predict_ref is None and train_ref is None:
        predictor_ref("predict", config=cfg)  # raises: says which key is missing
    doc = project_document(str(cfg.project_dir), predict_ref, train_ref)
    text = json.dumps(doc, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0
