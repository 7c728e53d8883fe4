"""Run a command as if on an AVX2-only x86 CPU (no AVX-512, no VNNI) on a machine that has them.

    python -m kuamo.benchmarks.avx2_only [--check] -- kuamo export --out /tmp/avx2   # any command

Why: INT8 behaves differently without VNNI (ONNX Runtime's u8s8 kernels sum pairs of 8-bit products in int16
and can saturate) and AVX2 FP32/INT8 kernels are slower, but the development machines here have AVX-512
VNNI and no hypervisor that can hide it (/dev/kvm exists, but it cannot boot a stock kernel). What it does:
- ONNX Runtime: a private copy of its Python extension with every `cpuid` / `xgetbv` instruction replaced by
  `ud2`; an LD_PRELOADed SIGILL handler (avx2_only_trap.c) runs the real instruction and clears the AVX-512,
  VNNI and AMX bits (and XCR0's AVX-512 state), so MLAS and ORT's cpuinfo pick their AVX2 kernels;
- numpy (NPY_DISABLE_CPU_FEATURES) and faiss (FAISS_SIMD_LEVEL=AVX2) use their own switches;
- /proc/cpuinfo (what kuamo.engine.cpu_features reads) is bind-mounted, in a private mount namespace, with
  those flags removed.
Limits: Linux x86-64 with gcc, objdump and unshare (root, or unprivileged user namespaces); the kernels are
AVX2's but the core is this one (a new core runs AVX2 code faster than an old AVX2-only CPU would), so speed
*ratios* carry over better than absolute times; other native libraries (tokenizers, grpc) are not masked,
and none of them branches on AVX-512 for kuamo's work.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# numpy's dispatch groups above AVX2 (X86_V3); each group holds the AVX-512 targets of that generation
NUMPY_DISABLED = "X86_V4 AVX512_ICL AVX512_SPR"
HIDDEN_FLAGS = re.compile(r"\s(avx512\w*|avx_vnni\w*|amx\w*|avx_ifma|avx_ne_convert)(?=\s|$)")


@dataclass(frozen=True)
class Avx2Only:
    """A prepared environment: the trap library, the patched onnxruntime and the masked /proc/cpuinfo."""

    root: Path
    trap: Path
    site: Path
    sites: Path
    cpuinfo: Path
    patched: int  # cpuid + xgetbv instructions replaced

    def env(self) -> dict[str, str]:
        """This process's environment plus the mode's settings."""
        env = dict(os.environ)
        env.update(LD_PRELOAD=str(self.trap), KUAMO_AVX2_ONLY_SITES=str(self.sites),
                   NPY_DISABLE_CPU_FEATURES=NUMPY_DISABLED, FAISS_SIMD_LEVEL="AVX2",
                   PYTHONPATH=os.pathsep.join([str(self.site), *filter(None, [env.get("PYTHONPATH")])]))
        return env

    def command(self, cmd: list[str]) -> list[str]:
        """`cmd` in a private mount namespace whose /proc/cpuinfo has no AVX-512/VNNI flags."""
        unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
        return [*unshare, "sh", "-c", f'mount --bind {self.cpuinfo} /proc/cpuinfo && exec "$@"', "avx2-only", *cmd]

    def run(self, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
        """subprocess.run of `cmd` inside the mode (`kw` as for subprocess.run)."""
        return subprocess.run(self.command(cmd), env=self.env(), **kw)


def _extension() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("onnxruntime is not installed")
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    found = sorted(capi.glob("onnxruntime_pybind11_state*.so"))
    if not found:
        raise RuntimeError(f"no onnxruntime_pybind11_state*.so in {capi}")
    return found[0]


def _patch(src: Path, dst: Path) -> list[str]:
    """Copy `src` to `dst` with its cpuid (2 bytes) and xgetbv (3 bytes) replaced by ud2 (+ nop); returns the
    trap's site lines (library name, virtual address, kind)."""
    sections = []
    headers = subprocess.run(["objdump", "-h", str(src)], capture_output=True, text=True, check=True).stdout
    for line in headers.splitlines():
        p = line.split()
        if len(p) >= 7 and p[0].isdigit():
            sections.append((int(p[3], 16), int(p[2], 16), int(p[5], 16)))  # vma, size, file offset
    code = subprocess.run(["objdump", "-d", str(src)], capture_output=True, text=True, check=True).stdout
    data = bytearray(src.read_bytes())
    sites = []
    for m in re.finditer(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*(cpuid|xgetbv)\b", code, re.M):
        addr, raw, kind = int(m.group(1), 16), bytes.fromhex(m.group(2).replace(" ", "")), m.group(3)
        vma, _, offset = next(s for s in sections if s[0] <= addr < s[0] + s[1])
        at = addr - vma + offset
        if data[at: at + len(raw)] != raw:
            raise RuntimeError(f"{src.name}: bytes at {addr:#x} are not the disassembled {kind}")
        data[at: at + len(raw)] = b"\x0f\x0b" if kind == "cpuid" else b"\x0f\x0b\x90"
        sites.append(f"{src.name.split('.')[0]} {addr:x} {kind}")
    dst.write_bytes(data)
    dst.chmod(0o755)
    return sites


def unavailable() -> str | None:
    """Why the mode cannot be built on this machine, or None."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"the AVX2-only mode needs Linux on x86-64, not {platform.system()} on {platform.machine()}"
    missing = [tool for tool in ("gcc", "objdump", "unshare") if shutil.which(tool) is None]
    return f"the AVX2-only mode needs {', '.join(f'`{t}`' for t in missing)} on PATH" if missing else None


def prepare(cache: Path | None = None) -> Avx2Only:
    """Build (once per onnxruntime build; cached) and return the AVX2-only environment."""
    if why := unavailable():
        raise RuntimeError(why)
    ext = _extension()
    digest = hashlib.sha256(ext.read_bytes()[: 1 << 20] + str(ext.stat().st_size).encode()).hexdigest()[:12]
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kuamo" / "avx2_only"
    root = cache / digest
    trap, sites, cpuinfo = root / "libavx2_only_trap.so", root / "sites.txt", root / "cpuinfo"
    if not sites.exists():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "site" / "onnxruntime" / "capi").mkdir(parents=True)
        package = ext.parent.parent
        for entry in package.iterdir():  # everything but capi/ is linked, capi/ all linked but the extension
            if entry.name != "capi":
                (tmp / "site" / "onnxruntime" / entry.name).symlink_to(entry)
        for entry in ext.parent.iterdir():
            if entry != ext:
                (tmp / "site" / "onnxruntime" / "capi" / entry.name).symlink_to(entry)
        lines = _patch(ext, tmp / "site" / "onnxruntime" / "capi" / ext.name)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp / trap.name), str(HERE / "avx2_only_trap.c"),
                        "-ldl"], check=True)
        (tmp / sites.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    cpuinfo.write_text(HIDDEN_FLAGS.sub("", Path("/proc/cpuinfo").read_text(encoding="utf-8")), encoding="utf-8")
    patched = len(sites.read_text(encoding="utf-8").split())  // 3
    return Avx2Only(root, trap, root / "site", sites, cpuinfo, patched)


CHECK = ("import json, numpy, onnxruntime, faiss\n"
         "from numpy._core._multiarray_umath import __cpu_features__ as npf\n"
         "from kuamo.engine.cpu_features import cpu_flags\n"
         "print(json.dumps({'cpu_flags': cpu_flags(), 'onnxruntime': onnxruntime.__file__,\n"
         "    'numpy_dispatch_avx512': [k for k in ('X86_V4', 'AVX512_ICL', 'AVX512_SPR') if npf.get(k)],\n"
         "    'faiss_simd': faiss.SIMDConfig.get_level_name()}))\n")


def check(env: Avx2Only) -> dict:
    """What a Python process sees inside the mode (cpu flags, which onnxruntime, numpy's and faiss's level)."""
    import json

    out = env.run([sys.executable, "-c", CHECK], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="print what a process sees inside the mode first")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command to run inside the mode")
    args = ap.parse_args(argv)
    env = prepare()
    if args.check or not args.cmd:
        print(check(env), file=sys.stderr)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        return 0
    return env.run(cmd).returncode


if __name__ == "__main__":
    raise SystemExit(main())
