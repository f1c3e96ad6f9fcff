"""Write a finished prediction's (or training's) output the way Cog's CLI does.

A single file goes to ``output.<ext>`` (or ``-o``), a list of files to
``output.0.<ext>``, ``output.1.<ext>``...; text is printed; anything else is
printed as indented JSON, with files nested in it written beside and named by
their field (``output.file.txt``; a field named like the stem is not repeated, so a
TrainingOutput's ``weights`` goes to ``weights.tar``). ``cogkit train`` names them
``weights`` instead of ``output`` (Cog: ``cog train -o`` defaults to ``weights``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogkit.files import extension_for, guess_mime, safe_filename
from cogkit.worker.protocol import FileOutput, find_files, map_files


@dataclass(frozen=True)
class Mode:
    """What differs between ``cogkit predict`` and ``cogkit train``."""

    name: str  # the worker/schema mode: "predict" or "train"
    noun: str  # in messages: "prediction failed with status ..."
    runner: str  # what cog.yaml names: "predictor" / "trainer"
    default_output: str | None  # -o when none is given (None: output.<ext>, text printed)


MODES = {
    "predict": Mode("predict", "prediction", "predictor", None),
    "train": Mode("train", "training", "trainer", "weights"),
}


def _ext_of(path: str) -> str:
    ext = Path(path).suffix
    return ext if ext else extension_for(guess_mime(path))


def _place(src: FileOutput, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.owned:
        shutil.move(src.path, dest)
        src.discard()  # the temp folder it came in
    else:
        shutil.copyfile(src.path, dest)
    return dest


def _target(base: str | None, ext: str, index: int | None = None, key: str | None = None) -> Path:
    """Where output number ``index`` (or field ``key``) with extension ``ext`` goes."""
    if base is None:
        stem, folder, base_ext = "output", Path("."), ""
    else:
        p = Path(base)
        if p.is_dir():
            stem, folder, base_ext = "output", p, ""
        else:
            stem, folder, base_ext = p.stem if p.suffix else p.name, p.parent, p.suffix
    suffix = ""
    if key is not None and key != stem:  # a TrainingOutput's "weights" field -> weights.tar, not weights.weights.tar
        suffix += f".{key}"
    if index is not None:
        suffix += f".{index}"
    # keys come from the predictor's output: a "/" in one must not lead out of the folder
    return folder / safe_filename(f"{stem}{suffix}{base_ext or ext}")


def write_files(value: Any, base: str | None) -> tuple[Any, list[Path]]:
    """Move every file in ``value`` to its place; returns (value with paths as strings, written paths).
    A file is named after the innermost list index and the dict keys that lead to it."""
    written: list[Path] = []

    def place(f: FileOutput, where: tuple[Any, ...]) -> str:
        index = next((k for k in reversed(where) if isinstance(k, int)), None)
        key = ".".join(str(k) for k in where if not isinstance(k, int)) or None
        dest = _place(f, _target(base, _ext_of(f.path), index, key))
        written.append(dest)
        return str(dest)

    return map_files(value, place, FileOutput), written


def render(
    value: Any, base: str | None, already_streamed: bool, concatenate: bool = False, text_to_file: bool | None = None
) -> tuple[str | None, list[Path]]:
    """(text to print on stdout, files written) for a final output. ``concatenate``:
    the output is a ConcatenateIterator's items, shown joined into one text.
    ``text_to_file``: write text and JSON to ``base`` too (default: when ``base`` is
    given; ``cogkit train`` names files after its default ``weights`` but prints text
    unless ``-o`` was given)."""
    if value is None:
        return None, []
    if concatenate and isinstance(value, list) and all(isinstance(x, str) for x in value):
        value = "".join(value)
    if find_files(value):
        shown, written = write_files(value, base)
        if isinstance(value, (FileOutput, list)) and all(
            isinstance(x, FileOutput) for x in (value if isinstance(value, list) else [value])
        ):
            return None, written
        return json.dumps(shown, indent=2), written
    if already_streamed:
        return None, []
    text = value if isinstance(value, str) else json.dumps(value, indent=2)
    if text_to_file is None:
        text_to_file = base is not None
    if text_to_file:
        dest = _target(base, ".txt" if isinstance(value, str) else ".json")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text if text.endswith("\n") else text + "\n")
        return None, [dest]
    return text, []


def remove_owned(value: Any) -> None:
    """Delete temp copies the worker made for outputs that were never placed."""
    for f in find_files(value):
        f.discard()
