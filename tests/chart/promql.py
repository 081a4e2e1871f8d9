"""Just enough PromQL reading to list the metric names an expression selects.

promtool checks the syntax; this only has to find the names: identifiers that are not a
function or aggregation call, a keyword, a label name or a duration.
"""

from __future__ import annotations

import re

KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2", "start", "end",
}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGE = re.compile(r"\[[^\]]*\]")
IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names selected by `expr` (Grafana's `$variables` are allowed in matchers and ranges)."""
    text = STRING.sub('""', expr)
    text = MATCHERS.sub("", text)
    text = RANGE.sub("", text)
    text = GROUPING.sub("", text)
    names = set()
    for match in IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def families(exposition: str) -> dict[str, str]:
    """Metric family name → type, from the `# TYPE` lines of a Prometheus text exposition."""
    found = {}
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "#" and parts[1] == "TYPE":
            found[parts[2]] = parts[3]
    return found


def family_of(name: str, known: dict[str, str]) -> str | None:
    """The family a series name belongs to (`x_bucket` of histogram `x`), or None."""
    if name in known:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and known.get(base) in ("histogram", "summary"):
            return base
    return None
