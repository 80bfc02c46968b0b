"""Markers: find them in a document, generate what they should hold, compare, rewrite.

A block sits between ``<!-- report:NAME ARG... -->`` and ``<!-- /report -->``, each on a line of
its own; an inline value between the same two comments inside one line.  ``process`` regenerates
every marker of a document and records what differs (cell by cell in a table), what failed, and
which blocks are pending their result files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from layerpar.report.registry import BLOCKS, VALUES
from layerpar.report.results import MissingResults, ReportError, Results

MARKER = re.compile(r"<!-- report:(?P<spec>[^\n>]*?) -->(?P<body>.*?)<!-- /report -->", re.S)


@dataclass(frozen=True)
class Marker:
    """One ``<!-- report:... -->`` … ``<!-- /report -->`` span of a document."""

    spec: str
    body: str
    start: int  # offset of the body in the document
    line: int  # line of the opening marker, 1-based

    @property
    def block(self) -> bool:
        return self.body.startswith("\n")

    @property
    def name(self) -> str:
        return self.spec.split()[0] if self.spec.split() else ""

    @property
    def args(self) -> list[str]:
        return self.spec.split()[1:]


def find_markers(text: str) -> list[Marker]:
    """Every marker of a document, in order (markers do not nest: a body ends at the first close)."""
    markers = []
    for match in MARKER.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        markers.append(Marker(match["spec"].strip(), match["body"], match.start("body"), line))
    return markers


def generate(marker: Marker, results: Results) -> str:
    """The body the marker should hold: ``\\n<table>\\n`` for a block, the bare value inline."""
    registry: dict[str, Callable[[Results, Sequence[str]], Any]] = BLOCKS if marker.block else VALUES
    if marker.name not in registry:
        kind = "block" if marker.block else "inline value"
        raise ReportError(f"no {kind} generator {marker.name!r}; known: {', '.join(sorted(registry))}")
    if marker.block:
        if not marker.body.endswith("\n"):
            raise ReportError("a block's closing <!-- /report --> must start a line")
        return "\n" + BLOCKS[marker.name](results, marker.args).render() + "\n"
    if "\n" in marker.body:
        raise ReportError("an inline value must close on its own line (a block starts with a line break)")
    return VALUES[marker.name](results, marker.args)


def _inline_at_line_start(text: str, marker: Marker) -> bool:
    """Whether an inline value's opening comment is the first thing on its line (indented or not)."""
    opening = text.rfind("<!--", 0, marker.start)
    line_start = text.rfind("\n", 0, opening) + 1
    return not marker.block and not text[line_start:opening].strip()


def diff_block(committed: str, generated: str) -> list[tuple[int, str]]:
    """(line offset in the block, what differs): cell by cell in table rows, else line by line."""
    old, new = committed.strip("\n").split("\n"), generated.strip("\n").split("\n")
    header = next((_cells(line) for line in new if line.startswith("|")), [])
    out: list[tuple[int, str]] = []
    for i in range(max(len(old), len(new))):
        a, b = (old[i] if i < len(old) else ""), (new[i] if i < len(new) else "")
        if a == b:
            continue
        if a.startswith("|") and b.startswith("|"):
            out += [(i, d) for d in _diff_row(_cells(a), _cells(b), header)]
        else:
            out.append((i, f"committed {a!r}, from results {b!r}"))
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _diff_row(old: list[str], new: list[str], header: list[str]) -> list[str]:
    label = " | ".join(new[:3])
    if len(old) != len(new):
        return [f"row {label!r}: committed {len(old)} cells, from results {len(new)}"]
    return [
        f"row {label!r}, column {header[j] if j < len(header) else j!r}: committed {a!r}, from results {b!r}"
        for j, (a, b) in enumerate(zip(old, new))
        if a != b
    ]


@dataclass
class Outcome:
    """What processing one document found: its regenerated text, the differences and failures."""

    text: str
    differences: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def process(text: str, results: Results, name: str) -> Outcome:
    """Regenerate every marker of ``text``; ``name`` only labels the messages."""
    outcome, pieces, cursor = Outcome(text), [], 0
    for marker in find_markers(text):
        body = _regenerate(text, marker, results, name, outcome)
        pieces += [text[cursor : marker.start], body]
        cursor = marker.start + len(marker.body)
    outcome.text = "".join([*pieces, text[cursor:]])
    return outcome


def _regenerate(text: str, marker: Marker, results: Results, name: str, outcome: Outcome) -> str:
    """The new body of one marker; the committed one (and a recorded reason) where none can be made."""
    where = f"{name}:{marker.line}: [report:{marker.spec}]"
    try:
        if _inline_at_line_start(text, marker):
            raise ReportError("an inline value must not start a line (Markdown would read an HTML block)")
        body = generate(marker, results)
    except MissingResults as missing:
        if "pending" in marker.body.lower():
            outcome.pending.append(f"{where} pending: {missing}")
        else:
            outcome.errors.append(
                f"{where} {missing} (mark the block 'pending' if the run is still to be made)"
            )
        return marker.body
    except (ReportError, KeyError, TypeError, ValueError) as error:
        outcome.errors.append(f"{where} {type(error).__name__}: {error}")
        return marker.body
    if body == marker.body:
        return body
    if marker.block:
        outcome.differences += [
            f"{name}:{marker.line + 1 + offset}: [report:{marker.spec}] {what}"
            for offset, what in diff_block(marker.body, body)
        ]
    else:
        outcome.differences.append(f"{where} committed {marker.body!r}, from results {body!r}")
    return body
