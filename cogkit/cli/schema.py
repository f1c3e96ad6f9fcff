"""``cogkit schema``: print the OpenAPI document of the project's predictor."""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the predictor's OpenAPI schema (JSON)")
    p.add_argument("-f", "--file", default="cog.yaml", help="path to cog.yaml (default: ./cog.yaml)")
    p.add_argument("--mode", choices=["predict", "train", "all"], default="all",
                   help="which entry point to describe (default: every one cog.yaml names)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cogkit.config import load_config
    from cogkit.schema import project_document

    cfg = load_config(args.file)
    predict_ref = os.environ.get("COG_PREDICT_TYPE_STUB") or cfg.predict
    train_ref = os.environ.get("COG_TRAIN_TYPE_STUB") or cfg.train
    if args.mode == "predict":
        train_ref = None
    elif args.mode == "train":
        predict_ref = None
    sys.path.insert(0, str(cfg.project_dir))
    doc = project_document(str(cfg.project_dir), predict_ref, train_ref)
    text = json.dumps(doc, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0
