"""``cogkit predict`` (alias ``cogkit run``): one prediction from the command line.

Runs the project's predictor in a worker process (no HTTP, no Docker), checks the
inputs against its schema while setup() is still running, shows setup and
progress, streams text outputs live and writes files as Cog does.

``cogkit train`` (cli/train.py) is the same run with ``args.mode == "train"``: the
``train:`` entry, TrainingInput/TrainingOutput, "training" in messages and files
named ``weights`` (cli/outputs.py ``MODES``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import uuid
from typing import Any

from cogkit.exceptions import CogkitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        aliases=["run"],
        help="run one prediction on the project's model",
        description="Run one prediction on the predictor named in cog.yaml (run:/predict:).",
    )
    add_arguments(p, "predict")
    p.add_argument("--train", action="store_true", help="deprecated: use `cogkit train`")
    p.set_defaults(handler=run, mode="predict")


def add_arguments(p: argparse.ArgumentParser, mode: str) -> None:
    """The flags ``cogkit predict`` and ``cogkit train`` share."""
    what = "trainer" if mode == "train" else "predictor"
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE",
                   help="an input; NAME=@path reads a file; repeat for lists")
    p.add_argument("--json", metavar="JSON", help="all inputs as a JSON object, @file.json, or - for stdin")
    if mode == "train":
        p.add_argument("-o", "--output", metavar="PATH",
                       help='where to write the output (file or folder; default "weights": a file goes to weights.<ext>)')
    else:
        p.add_argument("-o", "--output", metavar="PATH", help="where to write the output (file or folder)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                   help=f"environment variable for the {what}")
    p.add_argument("--weights", help="weights passed to setup(weights=...) (default: $COG_WEIGHTS)")
    p.add_argument("--setup-timeout", type=float, default=300.0,
                   help="seconds to wait for setup() (0 = no limit; default 300)")
    p.add_argument("-f", "--file", default="cog.yaml", help="path to cog.yaml (default: ./cog.yaml)")
    if mode == "predict":  # (an image's server runs in predict mode: see cli/predict_image.py)
        p.add_argument("--image", help="run this built image (podman/docker) instead of the local environment")


def run(args: argparse.Namespace) -> int:
    """``cogkit predict`` and ``cogkit train`` (``args.mode``)."""
    if getattr(args, "train", False):
        print('warning: "cogkit predict --train" is deprecated; use "cogkit train"', file=sys.stderr)
        args.mode = "train"
    if args.json is not None and args.input:
        raise CogkitError("use either -i or --json, not both")
    if getattr(args, "image", None):
        from cogkit.cli.predict_image import run_image

        return run_image(args)
    try:
        return asyncio.run(_run_local(args))
    except asyncio.CancelledError:  # SIGTERM, after _run_local cleaned up
        return 128 + signal.SIGTERM


def _collect_inputs(args: argparse.Namespace, schema: dict[str, Any], mode: str) -> dict[str, Any]:
    from cogkit.cli.inputs import check_file_markers, parse_flags, parse_json

    values = parse_json(args.json, schema, mode) if args.json is not None else parse_flags(args.input, schema, mode)
    check_file_markers(values)
    return values


def _localise_files(values: dict[str, Any], workdir: str) -> dict[str, Any]:
    """``@path`` inputs become copies in the work folder (the predictor may change them)."""
    from cogkit.cli.inputs import LocalFile
    from cogkit.worker.protocol import FileInput, map_files

    def copy(f: LocalFile, _: Any) -> FileInput:
        dest = os.path.join(tempfile.mkdtemp(dir=workdir, prefix="in-"), os.path.basename(f.path))
        shutil.copyfile(f.path, dest)
        return FileInput(path=dest, source=f.path, kind="data")

    return map_files(values, copy, LocalFile)


async def _wait_setup(worker: Any, display: Any) -> Any:
    """Wait for setup(), echoing its output as it grows."""
    shown = 0
    task = asyncio.ensure_future(worker.wait_ready())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.1)
        logs = worker.setup.logs or ""
        if len(logs) > shown:
            display.log(logs[shown:])
            shown = len(logs)
        if done:
            return task.result()


async def _run_local(args: argparse.Namespace) -> int:
    from cogkit.cli.display import Display
    from cogkit.cli.inputs import env_flags, print_problems
    from cogkit.cli.outputs import MODES
    from cogkit.config import load_config, predictor_ref
    from cogkit.validation import InputValidator
    from cogkit.worker.client import Worker

    mode = args.mode
    words = MODES[mode]
    cfg = load_config(args.file)
    ref = predictor_ref(mode, cfg.project_dir, cfg)
    env = {**cfg.environment, **env_flags(args.env)}
    weights = args.weights if args.weights is not None else os.environ.get("COG_WEIGHTS")
    display = Display()
    display.phase(f"Loading {words.runner}")
    worker = Worker(
        ref,
        project_dir=str(cfg.project_dir),
        mode=mode,
        weights=weights,
        max_concurrency=1,
        setup_timeout=args.setup_timeout or None,
        env=env,
        restart_on_crash=False,
    )
    workdir = tempfile.mkdtemp(prefix="cogkit-predict-")
    # SIGTERM (timeout, process managers) unwinds like Ctrl-C does: through the
    # finally below, so the worker stops and no temp file is left behind.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        await worker.start()
        # On failure the logs (with the traceback) were shown by _wait_setup; the
        # error line only sums them up.
        if worker.loaded is None:
            setup = await _wait_setup(worker, display)
            display.close()
            raise CogkitError(f"could not load the {words.runner} {ref!r}: {setup.error}")
        schema = worker.loaded.schema
        values = _collect_inputs(args, schema, mode)
        from cogkit.cli.inputs import for_validation

        result = InputValidator(schema, mode).validate(for_validation(values))
        if result.errors:
            display.close()
            print_problems(result.problems)
            return 1
        display.phase("Running setup")
        setup = await _wait_setup(worker, display)
        if setup.status != "succeeded":
            display.close()
            raise CogkitError(f"model setup failed: {setup.error}")
        from cogkit.openapi import Interface
        from cogkit.worker.inputs import InputFileError, prepare_inputs

        try:
            fields = Interface.of(schema, mode).file_inputs
            prepared = await prepare_inputs(_localise_files(values, workdir), fields, workdir)
        except InputFileError as exc:
            display.close()
            print_problems([f'invalid input "{exc.field}": {exc}'])
            return 1
        display.phase(f"Running {words.noun}")
        return await _predict(worker, prepared, schema, args, display)
    finally:
        display.close()
        await worker.shutdown(grace=5.0)
        shutil.rmtree(workdir, ignore_errors=True)


async def _predict(worker: Any, inputs: dict[str, Any], schema: dict[str, Any], args: argparse.Namespace, display: Any) -> int:
    from cogkit.cli.outputs import MODES, remove_owned, render, write_files
    from cogkit.openapi import Interface
    from cogkit.worker.record import PredictionRecord

    words = MODES[args.mode]
    iface = Interface.of(schema, args.mode)
    # Files go to -o, else to output.<ext> (train: weights.<ext>); text and JSON are
    # printed unless -o was given.
    base = args.output if args.output is not None else words.default_output
    concatenate = iface.output_concatenates
    # Text items stream to stdout as they arrive, unless they go to a file (-o) or
    # into the --json record.
    stream_text = iface.output_streams_text and args.output is None and args.json is None
    pred_id = f"cli-{uuid.uuid4().hex[:12]}"
    record = PredictionRecord(pred_id, iterator=iface.output_is_iterator)
    streamed = False

    def on_change(change: str, data: Any) -> None:
        nonlocal streamed
        if change == "log":
            display.log(data[0])
        elif change == "output" and stream_text and isinstance(data[1], str):
            display.pause()
            sys.stdout.write(data[1] if concatenate else data[1] + "\n")
            sys.stdout.flush()
            streamed = True

    record.subscribe(on_change)
    handle = await worker.predict(pred_id, inputs, {})
    record.start()
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:  # second Ctrl-C: stop the model now rather than wait for it
            worker.kill()
            return
        interrupted = True
        print(f"\nCanceling the {words.noun} (Ctrl-C again to quit)...", file=sys.stderr)
        asyncio.ensure_future(worker.cancel(pred_id))

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        async for ev in handle:
            record.apply(ev)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if not record.terminal:  # left early (stdout closed, Ctrl-C twice): stop the work too
            remove_owned(record.output_items)
            await worker.cancel(pred_id)
    display.close()
    if not record.terminal:
        record.finish("failed", error=f"the {words.noun} ended without a result")
    if streamed and concatenate:
        sys.stdout.write("\n")
    status, output, error = record.status, record.output, record.error
    if args.json is not None:
        if status == "succeeded":
            shown, _ = write_files(output, base)
        else:
            shown = None
            remove_owned(output)
        print(json.dumps({"status": status, "output": shown, "error": error, "logs": record.logs,
                          "metrics": record.metrics()}, indent=2))
        return 0 if status == "succeeded" else 1
    if status != "succeeded":
        remove_owned(output)
        print(f'error: {words.noun} failed with status "{status}"' + (f": {error}" if error else ""), file=sys.stderr)
        return 130 if interrupted and status == "canceled" else 1
    text, written = render(
        output, base, already_streamed=streamed, concatenate=concatenate, text_to_file=args.output is not None
    )
    if output is None or (record.iterator and not output):
        print("warning: no output generated", file=sys.stderr)
    if text is not None:
        print(text)
    for path in written:
        print(f"Written output to: {path}", file=sys.stderr)
    return 0
