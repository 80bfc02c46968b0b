"""``python -m layerpar.report``: the committed tables and values equal what results/ gives, and a
changed cell, a changed value or a missing result file is caught (and named)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from layerpar import report

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Checked:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def check(capsys):
    """``python -m layerpar.report --check`` in this process (the tests below run it often)."""

    def run(*files: Path, root: Path = ROOT) -> Checked:
        capsys.readouterr()
        code = report.main(["--check", "--root", str(root), *map(str, files)])
        out, err = capsys.readouterr()
        return Checked(code, out, err)

    return run


def test_committed_docs_match_their_results():
    """The command as CI and a user run it, in a fresh interpreter."""
    command = [sys.executable, "-m", "layerpar.report", "--check"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches results/" in done.stdout


def test_report_imports_only_the_standard_library_and_layerpar_errors():
    """So that the check needs no torch (layerpar's __init__ may import more; layerpar/report/ does
    not): every module of the package, besides its own modules, imports only these."""
    files = sorted(Path(report.__file__).parent.glob("*.py"))
    assert len(files) > 1, files
    names: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    own = {n for n in names if n == "layerpar.report" or n.startswith("layerpar.report.")}
    outside = {
        n for n in names - own if n.split(".")[0] not in sys.stdlib_module_names and n != "layerpar.errors"
    }
    assert not outside, outside


def test_every_document_has_generated_tables():
    for name in report.DOCUMENTS:
        assert report.find_markers((ROOT / name).read_text(encoding="utf-8")), name


def _marker(name: str, source: str = "README.md") -> report.Marker:
    text = (ROOT / source).read_text(encoding="utf-8")
    return next(m for m in report.find_markers(text) if m.spec.startswith(name))


def _tampered_copy(tmp_path: Path, marker: report.Marker, body: str, source: str = "README.md") -> Path:
    """A copy of ``source`` whose ``marker`` holds ``body`` instead of what results/ gives."""
    text = (ROOT / source).read_text(encoding="utf-8")
    copy = tmp_path / Path(source).name
    copy.write_text(text[: marker.start] + body + text[marker.start + len(marker.body) :], encoding="utf-8")
    return copy


def _first_row_with_cell_changed(marker: report.Marker, column: str, value: str) -> tuple[str, list[str], str]:
    lines = marker.body.split("\n")
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    row = next(i for i, line in enumerate(lines) if line.startswith("|") and i > 2)
    cells = [c.strip() for c in lines[row].strip("|").split("|")]
    old = cells[header.index(column)]
    cells[header.index(column)] = value
    lines[row] = "| " + " | ".join(cells) + " |"
    return "\n".join(lines), cells, old


def test_a_changed_table_cell_fails_and_is_named(tmp_path, check):
    marker = _marker("parity-pipelined")
    body, cells, old = _first_row_with_cell_changed(marker, "pipelined acc (%)", "00.00 ± 0.00")
    done = check(_tampered_copy(tmp_path, marker, body))
    assert done.returncode == 1
    assert "[report:parity-pipelined]" in done.stdout
    assert f"row {' | '.join(cells[:3])!r}, column 'pipelined acc (%)'" in done.stdout
    assert f"committed '00.00 ± 0.00', from results {old!r}" in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1 + sum("pending" in line for line in done.stdout.splitlines())


def test_a_changed_inline_value_fails_and_is_named(tmp_path, check):
    marker = _marker("bench bench/cpu-fmnist-K2-pipelined whole-ratio")
    done = check(_tampered_copy(tmp_path, marker, "9.99×"))
    assert done.returncode == 1
    assert f"whole-ratio layerpar] committed '9.99×', from results {marker.body!r}" in done.stdout


def test_rewrite_restores_a_tampered_file(tmp_path):
    marker = _marker("parity-pipelined")
    copy = _tampered_copy(tmp_path, marker, _first_row_with_cell_changed(marker, "gap (pt)", "+9.99")[0])
    assert copy.read_text(encoding="utf-8") != (ROOT / "README.md").read_text(encoding="utf-8")
    assert report.main(["--root", str(ROOT), str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == (ROOT / "README.md").read_text(encoding="utf-8")


def _demo_root(tmp_path: Path, body: str) -> tuple[Path, Path]:
    """A repository with no results/demo/ and one document holding the demo block."""
    (tmp_path / "results").mkdir(parents=True)
    doc = tmp_path / "doc.md"
    doc.write_text(f"# demo\n\n<!-- report:demo -->\n{body}\n<!-- /report -->\n", encoding="utf-8")
    return tmp_path, doc


def test_a_missing_result_file_is_skipped_only_where_the_block_says_pending(tmp_path, check):
    root, doc = _demo_root(tmp_path / "pending", "Pending: the owner runs `make demo`.")
    done = check(doc, root=root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pending: results/demo/summary.json is not committed" in done.stdout

    root, doc = _demo_root(tmp_path / "claimed", "| run | acc |\n|---|---|\n| demo | 0.8769 |")
    done = check(doc, root=root)
    assert done.returncode == 1
    assert "results/demo/summary.json is not committed" in done.stderr


def test_a_pending_block_fills_in_once_its_file_is_committed(tmp_path, check):
    root, doc = _demo_root(tmp_path, "Pending: the owner runs `make demo`.")
    run = ROOT / "results/bench/cpu-fmnist-K2-pipelined/runs/layerpar-K2/summary.json"
    (root / "results/demo").mkdir()
    shutil.copy(run, root / "results/demo/summary.json")
    assert report.main(["--root", str(root), str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert "Pending" not in text
    assert f"| {json.loads(run.read_text())['final_test_acc']:.4f} |" in text
    assert check(doc, root=root).returncode == 0


def test_an_inline_value_at_the_start_of_a_line_is_refused(tmp_path, check):
    doc = tmp_path / "doc.md"
    marker = "<!-- report:bench bench/cpu-fmnist-K2-pipelined speedup layerpar -->1.75×<!-- /report -->"
    doc.write_text(f"Its step is\n{marker} serial's.\n", encoding="utf-8")
    done = check(doc)
    assert done.returncode == 1
    assert "must not start a line" in done.stderr


@pytest.mark.parametrize(
    ("stages", "micro"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8)],
)
def test_default_micro_batches_is_the_smallest_power_of_two_at_least_2_k_minus_1(stages, micro):
    assert report.default_micro_batches(stages) == micro


def _ablation_run(folder: Path, name: str, oracle: str | None, stages: int, seed: int, acc: float) -> None:
    epoch = {"epoch": 1.0, "test_acc": acc, **{f"update_cosine/{k}": 0.5 for k in range(stages)}}
    epoch |= {f"aux_state_error/{k}": 0.2 for k in range(stages - 1)}
    record = {"seed": seed, "stages": stages, "final_test_acc": acc, "epochs_log": [epoch],
              "config": {"layerpar": {"oracle": oracle}}, "command": "python scripts/parity_sweep.py"}
    (folder / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")


def test_the_ablation_table_gives_each_oracle_its_gap_to_the_serial_twin_of_its_seed(tmp_path):
    from layerpar.report.diagnosis import ablation_table
    from layerpar.report.results import ReportError, Results

    for seed, serial in ((0, 0.80), (1, 0.90)):
        _ablation_run(tmp_path, f"serial{seed}-s{seed}", None, 1, seed, serial)
        _ablation_run(tmp_path, f"run-al-K2-s{seed}", None, 2, seed, serial - 0.5)
        _ablation_run(tmp_path, f"run-both-K2-s{seed}", "both", 2, seed, serial)
    table = ablation_table(Results(tmp_path), ["serial0-*.json,serial1-*.json", "run-al-*.json", "run-both-*.json"])
    assert [row[:5] for row in table.rows] == [
        ("AuxNet states and multipliers (al)", "2", "0, 1", "35.00 ± 7.07", "−50.0"),
        ("(c) true states and multipliers", "2", "0, 1", "85.00 ± 7.07", "0.0"),
    ]
    assert table.rows[0][5:] == ("+0.50 / +0.50", "0.20")
    _ablation_run(tmp_path, "run-states-K2-s2", "states", 2, 2, 0.5)
    with pytest.raises(ReportError, match="no serial twin for seed"):
        ablation_table(Results(tmp_path), ["serial*.json", "run-*.json"])


def _predictor_run(folder: Path, name: str, method: str, stages: int, acc: float, **layerpar) -> None:
    means = [{f"predictor_cosine/{k}": 0.1 * (k + 1) for k in range(stages - 1)}] if method == "corrected" else []
    record = {"stages": stages, "seed": 0, "final_test_acc": acc, "epochs_log": [{"epoch": 1.0, "test_acc": acc}],
              "step_metric_means": means, "command": "python scripts/parity_sweep.py",
              "config": {"layerpar": {"method": method, "accumulate": 1, **layerpar},
                         "parallel": {"stages": stages}}}  # fmt: skip
    (folder / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")


def test_the_predictor_table_sets_each_run_beside_serial_with_its_adjoint_cosines(tmp_path):
    from layerpar.report.predictors import predictor_table
    from layerpar.report.results import Results

    _predictor_run(tmp_path, "serial", "serial", 1, 0.80)
    _predictor_run(tmp_path, "run-pipelined", "pipelined", 3, 0.75)
    _predictor_run(tmp_path, "run-corrected", "corrected", 3, 0.78, predictor="linear", predictor_scale=None)
    table = predictor_table(Results(tmp_path), ["serial.json", "run-*.json"])
    assert [row[:6] for row in table.rows] == [
        ("pipelined", "3", "1", "0", "0.7500", "−5.00"),
        ("predict + correct, linear (c = calibrated)", "3", "1", "0", "0.7800", "−2.00"),
    ]
    assert table.rows[0][6] == "–" and table.rows[1][6] == "0.10 / 0.20" and table.rows[1][7] == "– / –"


def test_the_mean_gap_is_the_difference_of_the_means_in_signed_points(tmp_path):
    from layerpar.report.registry import VALUES
    from layerpar.report.results import ReportError, Results

    for name, acc in (("a-0", 0.90), ("a-1", 0.92), ("b-0", 0.915)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"final_test_acc": acc}), encoding="utf-8")
    assert VALUES["mean-gap"](Results(tmp_path), ["a-*.json", "b-*.json"]) == "−0.50"
    assert VALUES["mean-gap"](Results(tmp_path), ["b-*.json", "a-0.json"]) == "+1.50"
    with pytest.raises(ReportError, match="no file matches"):
        VALUES["mean-gap"](Results(tmp_path), ["a-*.json", "c-*.json"])


def test_a_delayed_head_term_is_named_in_the_predictor_table(tmp_path):
    from layerpar.report.predictors import predictor_table
    from layerpar.report.results import Results

    _predictor_run(tmp_path, "serial", "serial", 1, 0.80)
    _predictor_run(tmp_path, "run-local", "local", 2, 0.80, head_term="delayed")
    table = predictor_table(Results(tmp_path), ["serial.json", "run-*.json"])
    assert table.rows[0][0] == "local term, kept, gradient (α = 1, with the delayed adjoint)"


def test_the_rank_compute_table_sets_each_ranks_measured_compute_beside_the_model(tmp_path):
    """A pipeline arm's measured compute per rank (forwards and every kind of backward) over the
    model's for the same rank at the run's clock; the runtime's own parts beside them."""
    from layerpar.report.rank_compute import rank_compute_table
    from layerpar.report.results import ReportError, Results

    rank = {"forward": 40.0, "backward: input": 30.0, "backward: weight": 30.0, "wait: p2p": 50.0,
            "post p2p": 4.0, "loss": 1.0, "other (Python, bookkeeping)": 5.0, "step (mean)": 160.0}
    results = [
        {"arm": "serial", "devices": 1, "step_time_s_median": 0.3},
        {"arm": "interleavedzb", "devices": 2, "microbatches": 4, "step_time_s_median": 0.16,
         "breakdown_ms_per_step": [rank, {**rank, "forward": 60.0}]},
        {"arm": "ddp", "devices": 2, "step_time_s_median": 0.15},
    ]
    validation = [
        {"arm": "serial", "devices": 1, "microbatches": None, "predicted_s": 0.3},
        {"arm": "interleavedzb", "devices": 2, "microbatches": 4, "predicted_s": 0.15,
         "predicted_rank_compute_run_clock_s": [0.08, 0.1]},
        {"arm": "ddp", "devices": 2, "microbatches": None, "predicted_s": 0.14},
    ]
    (tmp_path / "b" / "predict").mkdir(parents=True)
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"command": "layerpar bench x", "results": results}))
    (tmp_path / "b" / "predict" / "predictions.json").write_text(json.dumps({"validation": validation}))
    table = rank_compute_table(Results(tmp_path), ["b"])
    assert table.rows == [("interleavedzb, M = 4", "100 / 120", "80 / 100", "1.25 / 1.20", "10 / 10")]
    assert table.commands == ("layerpar bench x",)
    shutil.copytree(tmp_path / "b", tmp_path / "c")  # the run without per-rank predictions
    (tmp_path / "c" / "predict" / "predictions.json").write_text(json.dumps({"validation": validation[:1]}))
    with pytest.raises(ReportError, match="no arm with both"):
        rank_compute_table(Results(tmp_path), ["c"])


def test_an_error_range_at_the_run_clock_keeps_one_decimal_for_the_15_percent_line():
    from layerpar.report.costmodel import error_range

    assert error_range([-9.7, 14.6]) == "−10 to +15 %"
    assert error_range([-9.7, 14.6], 1) == "−9.7 to +14.6 %"
    assert error_range([4.04, 37.2]) == "4–37 %" and error_range([-15.5], 1) == "−15.5 %"


def _bench_run(root: Path, name: str, commit: str, pinned: bool, steps_s: dict[str, float]) -> None:
    folder = root / "bench" / name
    folder.mkdir(parents=True)
    results = [{"arm": arm, "devices": 1 if arm == "serial" else 2, "step_time_s_median": step,
                "git_commit": commit, "pinned": pinned} for arm, step in steps_s.items()]
    summary = {"command": f"layerpar bench --name {name}", "results": results}
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")


def test_the_bench_runs_table_gives_every_run_of_a_command_and_their_mean(tmp_path):
    """One row per run (commit, pinned or not, serial's step, ceiling and ratios), then the mean ±
    std of each ratio: a headline is read beside every run of its command."""
    from layerpar.report.bench_runs import bench_runs_table
    from layerpar.report.results import ReportError, Results

    _bench_run(tmp_path, "a", "1111111aaaa", False,
               {"serial": 0.2, "contention": 0.2, "layerpar": 0.1, "ddp": 0.125, "gpipe": 0.16})
    _bench_run(tmp_path, "b", "2222222bbbb", True,
               {"serial": 0.2, "contention": 0.25, "layerpar": 0.125, "ddp": 0.1, "gpipe": 0.2})
    table = bench_runs_table(Results(tmp_path), ["bench/a", "bench/b"])
    assert table.rows == [
        ("`bench/a`", "1111111", "unpinned", "200.0", "2.00×", "2.00×", "1.60×", "1.25×", "1.60×"),
        ("`bench/b`", "2222222", "pinned", "200.0", "1.60×", "1.60×", "2.00×", "0.80×", "1.60×"),
        ("mean ± std", "", "", "", "1.80 ± 0.28×", "1.80 ± 0.28×", "1.80 ± 0.28×", "1.02 ± 0.32×",
         "1.60 ± 0.00×"),
    ]
    assert table.commands == ("layerpar bench --name a", "layerpar bench --name b")
    with pytest.raises(ReportError, match="two bench folders or more"):
        bench_runs_table(Results(tmp_path), ["bench/a"])
