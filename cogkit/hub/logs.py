"""Model logs as Replicate's clients read them: cogkit's ``[progress] label: i/n`` lines
become tqdm-style ``NN%|###       | i/n [label]`` lines, the only progress both clients'
parsers recognise (reference §11.12). Only complete lines are rewritten, so the text
before the last newline never changes as more logs arrive."""

from __future__ import annotations

from cogkit.progress import parse_progress, progress_detail


def _tqdm(line: str) -> str:
    parsed = parse_progress(line)
    if parsed is None:
        return line
    label, done, total = parsed
    pct = 100 * done // total if total else 100
    detail = progress_detail(line)  # tqdm puts a postfix after the bracket's last comma
    return f"{pct:3d}%|{'#' * (pct // 10):<10}| {done}/{total} [{label}" + (f", {detail}]" if detail else "]")


def for_clients(logs: str) -> str:
    if "[progress]" not in logs:
        return logs
    complete, sep, partial = logs.rpartition("\n")
    if not sep:
        return logs
    return "\n".join(_tqdm(line) for line in complete.split("\n")) + "\n" + partial
