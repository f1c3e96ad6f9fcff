"""What ``cogkit predict`` shows on stderr while setup and the prediction run.

On a terminal: a spinner naming the phase, a progress bar for ``[progress]``
lines (see cogkit.progress), and the predictor's logs scrolling above them.
Elsewhere (pipes, CI): plain log lines, nothing animated.
"""

from __future__ import annotations

import sys
from typing import Any

from cogkit.progress import parse_progress, progress_detail


class Display:
    def __init__(self, live: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if live is None else live
        self._progress: Any = None
        self._phase_task: Any = None
        self._bars: dict[str, Any] = {}
        self._partial = ""
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()

    def phase(self, text: str) -> None:
        if not self.live:
            return
        if self._phase_task is None:
            self._phase_task = self._progress.add_task(text, total=None, detail="")
        else:
            self._progress.update(self._phase_task, description=text)

    def log(self, text: str) -> None:
        """Predictor output (may hold partial lines); progress lines drive the bars."""
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        prog = parse_progress(line)
        if prog is not None and self.live:
            label, done, total = prog
            task = self._bars.get(label)
            if task is None:
                task = self._bars[label] = self._progress.add_task(label, total=total, detail="")
            self._progress.update(task, completed=done, total=total, detail=progress_detail(line))
            return
        if self.live:
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def pause(self) -> None:
        """Stop animating (e.g. before text streams to stdout on the same terminal)."""
        if self.live and self._progress is not None:
            self._progress.stop()
            self.live = False

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.live = False
