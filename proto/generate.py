"""Regenerate the Python code for proto/kuamo/v1/*.proto (the one way it is produced).

    python -m kuamo.proto.generate          # write kuamo_pb2.py, kuamo_pb2.pyi, kuamo_pb2_grpc.py
    python -m kuamo.proto.generate --check  # exit 1 when the committed code is stale

protoc names imports after the .proto path ("from kuamo.v1 import ..."), which inside the kuamo package
must read "from kuamo.proto.kuamo.v1 import ..."; that rewrite is the only post-processing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "kuamo" / "v1"
OUTPUTS = ("kuamo_pb2.py", "kuamo_pb2.pyi", "kuamo_pb2_grpc.py")


def _rewrite(text: str) -> str:
    return text.replace("from kuamo.v1 import", "from kuamo.proto.kuamo.v1 import")


def generate(out_dir: Path) -> dict[str, str]:
    """Run protoc into out_dir and return {file name: text} after the import rewrite."""
    from grpc_tools import protoc  # dev extra only; serving never regenerates

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}",
                      f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *protos])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    gen = out_dir / "kuamo" / "v1"
    return {name: _rewrite((gen / name).read_text()) for name in OUTPUTS}


def stale_files() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    return [name for name, text in fresh.items()
            if not (PACKAGE_DIR / name).exists() or (PACKAGE_DIR / name).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that the committed code is current")
    args = p.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale generated code: {', '.join(stale)}; run `python -m kuamo.proto.generate`", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in generate(Path(tmp)).items():
            (PACKAGE_DIR / name).write_text(text)
    print(f"wrote {', '.join(OUTPUTS)} to {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
