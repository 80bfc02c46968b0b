"""Every results number in README.md and docs/ generated from the JSON files under results/.

    python -m layerpar.report            # rewrite every generated table and value in place
    python -m layerpar.report --check    # exit 1, naming each cell that differs from its JSON

Why: numbers copied by hand drift away from the runs they claim to come from (a one-seed figure
becomes a headline, a tolerance becomes "bit for bit", a file is never committed).  Here every
results number in the docs is the output of a generator that reads committed result files, and
the test suite runs ``--check`` on the committed Markdown.

Markers.  A generated block sits between ``<!-- report:NAME ARG... -->`` and ``<!-- /report -->``,
each on a line of its own; a generated value sits between the same two markers inside one line
(never at the start of a line, where Markdown would read the comment as an HTML block).  NAME
picks a generator from ``BLOCKS`` or ``VALUES``; ARGs are its arguments, paths relative to
results/.  Every block ends with a line that names its source files and the commands recorded in
them.

Pending.  A block whose result files are not committed fails the check, unless its committed text
says "pending": it is then left as it is until the files exist (a run the owner still has to make).

Only the standard library and ``layerpar.errors`` are imported: the check needs no torch and runs
in well under a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from layerpar.report.markers import process
from layerpar.report.results import COMMAND, Results

DOCUMENTS = ("README.md", "docs/parity.md", "docs/benchmarking.md", "docs/reliability.md")
"""The files a plain run rewrites and ``--check`` checks, relative to the repository root."""


def display_name(doc: Path, root: Path) -> str:
    """The document as the messages name it: relative to the repository root where it lies inside."""
    path, base = doc.resolve(), root.resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(doc)


def run(documents: Sequence[Path], results: Results, root: Path, check: bool) -> int:
    """Check or rewrite ``documents``; 1 if a check found a difference or anything failed."""
    status = 0
    for doc in documents:
        name = display_name(doc, root)
        outcome = process(doc.read_text(encoding="utf-8"), results, name)
        for line in outcome.pending:
            print(line)
        for line in outcome.errors:
            print(f"error: {line}", file=sys.stderr)
        status |= bool(outcome.errors)
        if check:
            for line in outcome.differences:
                print(line)
            status |= bool(outcome.differences)
        elif outcome.differences:
            doc.write_text(outcome.text, encoding="utf-8")
            print(f"{name}: rewrote {len(outcome.differences)} differing cells or lines")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (so that the tests can call it in-process)."""
    parser = argparse.ArgumentParser(
        prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "files", nargs="*", type=Path, help=f"Markdown files (default: {', '.join(DOCUMENTS)} under --root)"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 and print each differing cell"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[2],
        help="repository root holding results/ (default: this checkout)",
    )
    args = parser.parse_args(argv)
    documents = args.files or [args.root / d for d in DOCUMENTS]
    status = run(documents, Results(args.root / "results"), args.root, args.check)
    if args.check and status == 0:
        print(f"{COMMAND} --check: every generated table and value matches results/")
    return status
