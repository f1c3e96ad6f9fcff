"""``cogkit train``: one training from the command line (Cog's ``cog train``).

Runs the ``train:`` entry of cog.yaml (a function, or a class with setup()/train())
with everything ``cogkit predict`` does: the same input parsing and errors, setup
output and progress, Ctrl-C and exit codes (it is cli/predict.py's run with the mode
fixed). Differences: inputs are checked against TrainingInput, messages say
"training", and files are written to ``weights.<ext>`` unless ``-o`` says where.
"""

from __future__ import annotations

import argparse

from cogkit.cli.predict import add_arguments, run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run one training (the train: entry in cog.yaml)",
        description="Run one training on the trainer named in cog.yaml (train:), as `cog train` does.",
    )
    add_arguments(p, "train")
    p.set_defaults(handler=run, mode="train")
