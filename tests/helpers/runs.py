"""Reading a finished run folder in tests: its assembled model and its per-step losses."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def run_model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)["model"]


def assert_same_models(a: Path, b: Path, tol: float = 0.0) -> None:
    """Every parameter of the two runs' model.pt equal (to ``tol``; 0: bit for bit)."""
    ours, theirs = run_model(a), run_model(b)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=tol, atol=tol, msg=key)


def step_losses(run: Path) -> list[float | None]:
    """The loss of every step record in metrics.jsonl (None where a step logs none: a fill)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r.get("loss") for r in records if r["kind"] == "step"]
