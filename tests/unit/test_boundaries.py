"""Serving code must not pull in the export toolchain: import every engine/server module and look."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CHECK = r"""
import importlib, pkgutil, sys
import kuamo.engine, kuamo.server
for pkg in (kuamo.engine, kuamo.server):
    for mod in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(mod.name)
heavy = sorted(m for m in ("torch", "transformers", "timm", "optimum", "onnx") if m in sys.modules)
print(",".join(heavy))
"""


def test_engine_and_server_do_not_import_torch_or_onnx_tooling() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"serving imports pulled in: {out.stdout.strip()}"


def test_packages_map_to_kuamo_namespace() -> None:
    import kuamo.engine
    import kuamo.export
    import kuamo.server

    for mod in (kuamo.engine, kuamo.export, kuamo.server):
        assert mod.__name__.startswith("kuamo.")


# -- import directions between the folders, read from the source (lazy imports inside functions count) -----
FOLDERS = {"kuamo.engine": "engine", "kuamo.server": "server", "kuamo.export": "export",
           "kuamo.benchmarks": "benchmarks", "kuamo.evaluation": "evaluation", "kuamo.proto": "proto"}
REPO = Path(__file__).resolve().parents[2]


def _folder_of(module: str) -> str:
    for prefix, folder in FOLDERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return folder
    return "app" if module.startswith("kuamo") else ""


def folder_imports() -> dict[str, set[str]]:
    """folder -> the other kuamo folders its modules import."""
    edges: dict[str, set[str]] = {f: set() for f in (*FOLDERS.values(), "app")}
    for folder in edges:
        for path in (REPO / folder).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                for name in names:
                    target = _folder_of(name)
                    if target and target != folder:
                        edges[folder].add(target)
    return edges


def test_nothing_below_the_benchmarks_imports_them() -> None:
    edges = folder_imports()
    for folder in ("engine", "server", "export", "evaluation", "proto"):
        assert "benchmarks" not in edges[folder], f"{folder}/ imports from benchmarks/"
    assert not edges["engine"] & {"server", "export", "proto", "app"}, edges["engine"]
    assert not edges["evaluation"] & {"export", "server", "app"}, edges["evaluation"]


def test_no_import_circle_between_folders() -> None:
    edges = folder_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in edges[start])

    circles = sorted(f for f in edges if reaches(f, f, {f}))
    assert not circles, f"folders in an import circle: {circles} ({ {f: sorted(edges[f]) for f in circles} })"


def test_the_boundary_check_sees_a_lazy_import(tmp_path: Path) -> None:
    tree = ast.parse("def f():\n    from kuamo.benchmarks.quality import run\n")
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [_folder_of(m) for m in found] == ["benchmarks"]


def test_every_cli_option_and_subcommand_has_help() -> None:
    import argparse

    from kuamo.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for sub, sub_parser in action.choices.items():
                    if not helps.get(sub):
                        missing.append(f"kuamo {sub}")
                    walk(sub_parser, f"kuamo {sub}")
            elif not action.help and action.dest != "help":
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "kuamo")
    assert not missing, f"no help text: {missing}"
