"""Every results number in README.md and docs/ generated from the JSON files under results/.

    python -m layerpar.report            # rewrite every generated table and value in place
    python -m layerpar.report --check    # exit 1, naming each cell that differs from its JSON

Modules, each importing only those listed before it (no cycles; the standard library and
``layerpar.errors`` only, so the check needs no torch):

- ``results``: ``Results`` (the JSON files), ``Table``, the number formatting and argument checks.
- ``parity``, ``screens``, ``bench``, ``costmodel``, ``runs``: the generators, one family of
  tables and values each (accuracy parity; screens and ablations; `layerpar bench`; the scaling
  model and one-device runs; single runs and the demo).
- ``registry``: ``BLOCKS`` and ``VALUES``, the generators by the name a marker gives.
- ``markers``: finding, generating, comparing and rewriting the ``<!-- report:... -->`` markers.
- ``cli``: the command line (``__main__`` runs it); its docstring describes the markers.
"""

from __future__ import annotations

from layerpar.report.cli import DOCUMENTS, main, run
from layerpar.report.markers import Marker, Outcome, diff_block, find_markers, generate, process
from layerpar.report.parity import parity_table
from layerpar.report.registry import BLOCKS, VALUES
from layerpar.report.results import (
    COMMAND,
    MissingResults,
    Record,
    ReportError,
    Results,
    Table,
    default_micro_batches,
    micro_batches,
)

__all__ = [
    "BLOCKS",
    "COMMAND",
    "DOCUMENTS",
    "VALUES",
    "Marker",
    "MissingResults",
    "Outcome",
    "Record",
    "ReportError",
    "Results",
    "Table",
    "default_micro_batches",
    "diff_block",
    "find_markers",
    "generate",
    "main",
    "micro_batches",
    "parity_table",
    "process",
    "run",
]
