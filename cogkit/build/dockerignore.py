"""``.dockerignore`` rules, matched the way Docker matches them.

Each line is a pattern relative to the context root (a leading ``/`` is dropped,
``.``/``..`` are cleaned); ``#`` starts a comment line; ``!`` re-includes. Patterns use
Go's ``filepath.Match`` syntax (``*`` and ``?`` stop at ``/``, ``[a-z]`` classes, ``\\``
escapes) plus ``**`` for any number of directories. A pattern that matches a folder
also matches everything below it, and the last matching pattern decides.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Rule:
    pattern: str
    regex: re.Pattern[str]
    include: bool  # a "!" rule


def _clean(pattern: str) -> str:
    pattern = posixpath.normpath(pattern)
    if len(pattern) > 1 and pattern.startswith("/"):
        pattern = pattern.lstrip("/")
    return pattern


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                # trailing "**": anything from here on; "**/": any number of folders (or none)
                out.append(".*" if i >= n else "(.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(ch))
            else:
                # Only "^" negates, as in Go (Docker hands the class to Go's regexp):
                # "[!a]" is the class of "!" and "a".
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append(f"[{body}]")
                i = j
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out))


class DockerIgnore:
    """The rules of one ``.dockerignore`` file (or none)."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self.rules: list[_Rule] = []
        for line in lines or []:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!") and len(line) > 1
            if include:
                line = line[1:].strip()
            pattern = _clean(line)
            self.rules.append(_Rule(pattern, _compile(pattern), include))

    @classmethod
    def load(cls, context_dir: Path) -> DockerIgnore:
        path = context_dir / ".dockerignore"
        if not path.is_file():
            return cls()
        return cls(path.read_text().splitlines())

    @property
    def has_includes(self) -> bool:
        """Whether any ``!`` rule exists (then excluded folders must still be walked)."""
        return any(r.include for r in self.rules)

    def excluded(self, relpath: str) -> bool:
        """Whether a path (``/``-separated, relative to the context root) is left out."""
        relpath = relpath.strip("/")
        candidates = [relpath]
        parts = relpath.split("/")
        candidates += ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        result = False
        for rule in self.rules:
            if any(rule.regex.match(c) for c in candidates):
                result = not rule.include
        return result
