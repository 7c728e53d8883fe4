"""Serving code must not pull in the export toolchain: import every engine/server module and look."""

from __future__ import annotations

import subprocess
import sys

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
