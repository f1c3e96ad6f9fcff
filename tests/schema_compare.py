"""Semantic comparison of two OpenAPI documents (key order ignored), for tests.

Same leniencies as the conformance kit's compare script: numbers compare
numerically, ``required`` lists compare as sets, ``info.version`` is ignored.
"""

from __future__ import annotations

import json
from typing import Any

ORDER_FREE = {"required"}
IGNORED = {("info", "version")}


def differences(golden: Any, candidate: Any, path: tuple[Any, ...] = ()) -> list[str]:
    if path in IGNORED:
        return []
    where = "/".join(map(str, path)) or "<root>"
    if isinstance(golden, dict) and isinstance(candidate, dict):
        out: list[str] = []
        for key in sorted(set(golden) | set(candidate), key=str):
            if key not in candidate:
                out.append(f"{where}/{key}: missing in candidate")
            elif key not in golden:
                out.append(f"{where}/{key}: extra in candidate ({json.dumps(candidate[key])})")
            else:
                out.extend(differences(golden[key], candidate[key], path + (key,)))
        return out
    if isinstance(golden, list) and isinstance(candidate, list):
        if path and path[-1] in ORDER_FREE:
            canon = lambda xs: sorted(json.dumps(x, sort_keys=True) for x in xs)  # noqa: E731
            return [] if canon(golden) == canon(candidate) else [f"{where}: {golden} != {candidate}"]
        if len(golden) != len(candidate):
            return [f"{where}: {golden} != {candidate}"]
        return [d for i, (a, b) in enumerate(zip(golden, candidate)) for d in differences(a, b, path + (i,))]
    num = (int, float)
    if isinstance(golden, num) and isinstance(candidate, num) and not isinstance(golden, bool) and not isinstance(candidate, bool):
        return [] if golden == candidate else [f"{where}: {golden!r} != {candidate!r}"]
    if type(golden) is not type(candidate) or golden != candidate:
        return [f"{where}: {json.dumps(golden)} != {json.dumps(candidate)}"]
    return []
