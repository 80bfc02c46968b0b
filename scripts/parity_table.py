"""Accuracy-parity table of any set of parity runs (a thin wrapper over ``layerpar.report``).

    python scripts/parity_table.py [--results results/parity] [--prefix full-]

Groups the runs by dataset, model, arm, K and device (serial's accuracy differs between CPU and
GPU numerics by more than between seeds) and prints serial and layer-parallel accuracy as
mean ± std over the seeds both ran, the gap in points and the seeds.  The tables in README.md and
docs/ are generated (and checked) by ``python -m layerpar.report``; this prints every group of
the matching files, for a look at runs that are not in the docs yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from layerpar.report import Results, parity_table


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--results", default="results/parity", help="folder of the per-run JSON files")
    parser.add_argument("--prefix", default="full-", help="file-name prefix of the runs to group")
    args = parser.parse_args()
    folder = Path(args.results)
    pattern = f"{folder.name}/{args.prefix}*.json"
    print(parity_table(Results(folder.parent), [pattern], [], "layer-parallel", ["arm"]).render())


if __name__ == "__main__":
    main()
