"""The arm registry is the one list of bench arms: the CLI, the config, the cost model and
``--train`` all read it; the bench modules import each other without cycles."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from layerpar.bench import registry
from layerpar.bench.config import LINK_NAMES, BenchConfig
from layerpar.bench.costmodel import LINKS, Link
from layerpar.bench.predict import predict, predict_table
from layerpar.cli import build_parser, main
from layerpar.errors import ConfigError
from tests.unit.bench.fakes import hand_profile

BENCH = Path(registry.__file__).parent
LINK = Link(latency_s=0.05, bandwidth_Bps=80.0, name="hand")


def _bench_action(dest: str) -> argparse.Action:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices["bench"]._actions if a.dest == dest)


def test_arms_help_lists_exactly_the_registry():
    help_text = _bench_action("arms").help
    assert help_text is not None
    listed = help_text.removeprefix("comma list from ").split(" ", 1)[0].split(",")
    assert listed == list(registry.names()) == list(registry.ARMS)
    for spec in registry.ARMS.values():
        assert f"{spec.name}: {spec.description}" in help_text


def test_other_flags_name_the_arms_their_spec_fields_select():
    assert "(gpipe,1f1b,interleaved1f1b,interleavedzb,zbv,dualpipev,deepspeed)" in (_bench_action("microbatches").help or "")
    assert "serial,layerpar,layerpar-corrected,layerpar-local,layerpar-local-delayed arms" in (_bench_action("train").help or "")
    assert f"({','.join(registry.predictable())})" in (_bench_action("predict").help or "")
    assert registry.predictable() == (
        "serial", "layerpar", "ddp", "gpipe", "1f1b", "interleaved1f1b", "interleavedzb", "zbv", "dualpipev",
        "contention",
    )


def test_unknown_arm_is_refused_with_every_valid_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--arms", "serial,nope,zero3", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "'nope', 'zero3'" in err
    assert "valid: " + ", ".join(registry.ARMS) in err
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="valid: serial, layerpar"):
        registry.get("fsdp")
    with pytest.raises(ConfigError, match="empty"):
        registry.parse_arms(" , ")


def test_every_arm_runs_somewhere_and_predict_hooks_match_their_arm():
    for name, spec in registry.ARMS.items():
        assert spec.name == name and callable(spec.run) and spec.description
        stages = 1 if spec.devices == "one" else 2
        assert spec.device_counts([2, 4]) == ([1] if spec.devices == "one" else [2, 4])
        if spec.predict is not None:
            p = predict(name, hand_profile(), stages, link=LINK, microbatches=4)  # DualPipeV needs M ≥ 2K
            assert p is not None and p.arm == name and p.devices == stages
    assert registry.ARMS["serial-threads"].processes(4) == 1 and registry.ARMS["ddp"].processes(4) == 4
    with pytest.raises(ConfigError, match="no cost model"):
        predict("deepspeed", hand_profile(), 2, link=LINK)
    assert {r["arm"] for r in predict_table(hand_profile(), [2], link=LINK)} == set(registry.predictable())


def test_bench_config_from_the_command_line_and_back():
    args = build_parser().parse_args(
        ["bench", "--config", "c.yaml", "--arms", "serial, gpipe", "--stages", "2,4", "--repeats", "1",
         "--set", "train.batch_size=16", "--train", "--predict", "--link", "nvlink"]
    )
    bench = BenchConfig.from_args(args)
    assert bench.arms == ("serial", "gpipe") and bench.stages == (2, 4) and bench.replicas == (1,)
    assert bench.overrides == ("train.batch_size=16",) and bench.out == Path("results")
    assert bench.command_line() == (
        "layerpar bench --config c.yaml --arms serial,gpipe --stages 2,4 --repeats 1 --steps 30 "
        "--warmup-steps 5 --microbatches 4 --set train.batch_size=16 --train --predict --max-stages 64 "
        "--link nvlink"
    )
    defaults = BenchConfig.from_args(build_parser().parse_args(["bench"]))
    assert defaults == BenchConfig()
    with pytest.raises(ConfigError, match="--stages"):
        BenchConfig(stages=(0,))
    with pytest.raises(ConfigError, match="unknown arm 'nope'"):
        BenchConfig(arms=("nope",))
    assert tuple(LINKS) == LINK_NAMES


def test_reading_the_registry_for_the_parser_imports_no_torch():
    """Only the arms' hooks import torch: ``layerpar bench --help`` adds none of it (beyond
    whatever ``import layerpar`` itself loads)."""
    code = (
        "import argparse, sys, layerpar; before = set(sys.modules)\n"
        "from layerpar.bench.cli import add_bench_parser\n"
        "add_bench_parser(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _bench_imports(path: Path) -> set[str]:
    """The layerpar.bench modules ``path`` imports anywhere (module level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "layerpar.bench":
                found |= {alias.name for alias in node.names}
            elif module.startswith("layerpar.bench."):
                found.add(module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("layerpar.bench.")}
    return found - {path.stem}


def test_bench_modules_import_each_other_without_cycles():
    graph = {path.stem: _bench_imports(path) for path in BENCH.glob("*.py")}
    assert graph["registry"] <= {"arm_hooks", "common", "costmodel", "costmodel_multistage", "profile", "arms", "deepspeed_arm", "minimal_arm", "multistage_arms"}
    for arm_module in ("arms", "deepspeed_arm", "minimal_arm", "common"):
        assert "registry" not in graph[arm_module], arm_module
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module not in done:
            for imported in graph.get(module, ()):
                visit(imported, (*path, module))
            done.add(module)

    for module in graph:
        visit(module, ())


def test_a_method_arm_runs_its_method_with_its_own_layerpar_settings():
    from layerpar.config import load_config

    config = load_config(None, ["layerpar.method=pipelined"])
    delayed = registry.get("layerpar-local-delayed").configured(config).layerpar
    assert (delayed.method, delayed.head_term) == ("local", "delayed")
    plain = registry.get("layerpar-local").configured(config).layerpar
    assert (plain.method, plain.head_term) == ("local", "forward")
    assert registry.get("layerpar").configured(config) is config
