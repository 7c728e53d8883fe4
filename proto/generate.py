"""Regenerate the Python code for proto/kuamo/v1/*.proto and proto/kuamo/v2/*.proto (the one way it is produced).

    python -m kuamo.proto.generate          # write kuamo_pb2.py, kuamo_pb2.pyi, kuamo_pb2_grpc.py
    python -m kuamo.proto.generate --check  # exit 1 when the committed code is stale

protoc names imports after the .proto path ("from kuamo.v1 import ..."), which inside the kuamo package
must read "from kuamo.proto.kuamo.v1 import ..."; that rewrite is the only post-processing. The google/protobuf
imports of v2 (Any, Struct, Timestamp) come from grpc_tools' bundled well-known types.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
VERSIONS = ("v1", "v2")
OUTPUTS = ("kuamo_pb2.py", "kuamo_pb2.pyi", "kuamo_pb2_grpc.py")


def _rewrite(text: str) -> str:
    for v in VERSIONS:
        text = text.replace(f"from kuamo.{v} import", f"from kuamo.proto.kuamo.{v} import")
    return text


def generate(out_dir: Path) -> dict[str, str]:
    """Run protoc into out_dir and return {"v1/kuamo_pb2.py": text, ...} after the import rewrite."""
    from grpc_tools import protoc  # dev extra only; serving never regenerates

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for v in VERSIONS
                    for p in (PROTO_ROOT / "kuamo" / v).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}",
                      f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *protos])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    return {f"{v}/{name}": _rewrite((out_dir / "kuamo" / v / name).read_text()) for v in VERSIONS for name in OUTPUTS}


def stale_files() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    return [name for name, text in fresh.items()
            if not (PROTO_ROOT / "kuamo" / name).exists() or (PROTO_ROOT / "kuamo" / name).read_text() != text]


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
            (PROTO_ROOT / "kuamo" / name).write_text(text)
    print(f"wrote {', '.join(OUTPUTS)} to {', '.join(str(PROTO_ROOT / 'kuamo' / v) for v in VERSIONS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
