"""Reliability benchmark, against `kuamo serve` processes over the real models and a COPY of the indexed
fashion catalog (in a temporary directory; data/kuamo is never written):

(a) fuzz: >= 10,000 random or mutated requests over every RPC (valid requests with bits flipped,
    truncated or extended, messages built from hostile field values, random bytes, real photos mutated,
    odd and hostile images); counts crashes (server process died), hangs (a call past its 10 s
    deadline), INTERNAL / UNKNOWN answers (all must be 0) and the status-code histogram;
(b) overload: capacity with as many closed-loop clients as the admission limit, then 4x that rate as
    open-loop Poisson arrivals for 60 s: admitted p99 vs normal p99, RESOURCE_EXHAUSTED count and
    latency, server RSS each second vs its steady level, seconds until throughput is back to normal;
(c) crash safety: 20 cycles of streaming Upserts of real fashion products with photos, kill -9 at a
    random point, restart, then: catalog == index, every acknowledged product present and found by
    its own title, nothing half-written served (every stored product has its vector), lost writes.

    kuamo bench reliability [--quick]

Writes benchmarks/results/reliability.json and reliability.md (…_quick with --quick).
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import RESULTS_DIR, latency_stats, machine_info, markdown_table, write_json, write_markdown
from kuamo.benchmarks.loadgen import closed_loop, open_loop
from kuamo.benchmarks.serving import serving, start_server, stop_server
from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

SERVICE = "/kuamo.v1.SearchService/"
DEADLINE_S = 10.0
ADMISSION = 4  # max_inflight of the overload server: 2 per core keeps queueing short (8 gave 2.4x normal p99)
RPCS: dict[str, tuple[str, Any]] = {  # name -> (call shape, response message)
    "Search": ("unary_unary", pb.SearchResponse), "SearchStream": ("stream_stream", pb.SearchResponse),
    "Embed": ("unary_unary", pb.EmbedResponse), "Recommend": ("unary_unary", pb.SearchResponse),
    "Upsert": ("stream_unary", pb.UpsertResponse), "Delete": ("unary_unary", pb.DeleteResponse),
    "GetProduct": ("unary_unary", pb.Product), "Stats": ("unary_unary", pb.StatsResponse),
    "RecordEvents": ("stream_unary", pb.RecordEventsResponse), "ForgetUser": ("unary_unary", pb.ForgetUserResponse),
}
BAD_CODES = ("INTERNAL", "UNKNOWN")


# -- the server process: kuamo.benchmarks.serving -------------------------------------------------------------


def copy_data(src: Path, dst: Path) -> Path:
    """A consistent copy of an engine data directory (SQLite online backup, then the index snapshot)."""
    dst.mkdir(parents=True)
    with sqlite3.connect(f"file:{src / 'catalog.sqlite'}?mode=ro", uri=True) as a, \
            sqlite3.connect(dst / "catalog.sqlite") as b:
        a.backup(b)
    if (src / "index").is_dir():
        shutil.copytree(src / "index", dst / "index")
    if (src / "user.key").is_file():
        shutil.copy2(src / "user.key", dst / "user.key")
    return dst


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The server's Prometheus samples: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def server_side_latency(before: dict, after: dict, method: str, code: str) -> dict[str, Any]:
    """Latency inside the server (interceptor entry to answer) of the calls between two scrapes, from the
    histogram buckets: percentiles are bucket upper bounds."""
    buckets = []
    for (name, labels), v in after.items():
        d = dict(labels)
        if name == "kuamo_request_seconds_bucket" and d.get("method") == method and d.get("code") == code:
            buckets.append((float(d["le"]), v - before.get((name, labels), 0.0)))
    buckets.sort()
    n = buckets[-1][1] if buckets else 0.0
    if not n:
        return {"n": 0}

    def pct(q: float) -> float:
        return next(le for le, c in buckets if c >= q * n) * 1000

    return {"n": int(n), "p50_ms_at_most": pct(0.5), "p99_ms_at_most": pct(0.99)}


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """VmRSS of a process once a second, tagged with the phase running at the time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss")
        self.pid, self.phase = pid, "start"
        self.samples: list[tuple[float, str, float]] = []
        self._halt = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            v = rss_mib(self.pid)
            if v is not None:
                self.samples.append((time.perf_counter() - self.t0, self.phase, v))
            self._halt.wait(1.0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def of(self, phase: str) -> list[float]:
        return [v for _, p, v in self.samples if p == phase]


def _health_and_good_answer(target: str, title: str) -> tuple[str, bool]:
    with grpc.insecure_channel(target) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        r = pb_grpc.SearchServiceStub(ch).Search(pb.SearchRequest(query=pb.Query(text=title, k=10)), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status), any(h.product.title == title for h in r.hits)


# -- (a) fuzz --------------------------------------------------------------------------------------------------
def _encode(img: Any, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def odd_images() -> list[bytes]:
    """Valid-but-unusual and hostile photos made with Pillow."""
    from PIL import Image

    red = (220, 30, 30)
    png = bytearray(_encode(Image.new("RGB", (24, 16), red)))
    png[16:24] = struct.pack(">II", 100_000, 100_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    frames = [Image.new("RGB", (32, 32), c) for c in (red, (0, 0, 200))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    return [bytes(png), _encode(Image.new("1", (8000, 8000))), _encode(Image.new("CMYK", (64, 64), (0, 200, 200, 0)),
                                                                          "JPEG"),
            _encode(Image.new("I;16", (40, 40), 30_000)), _encode(Image.new("RGB", (40, 40), red).convert("P")),
            gif.getvalue(), _encode(Image.new("LA", (30, 30), (90, 120))), _encode(Image.new("RGBA", (30, 30),
                                                                                             (*red, 0))),
            _encode(Image.new("RGB", (1, 60_000), red)), _encode(Image.new("RGB", (50, 50), red), "WEBP"),
            _encode(Image.new("RGB", (50, 50), red), "TIFF"), _encode(Image.new("RGB", (50, 50), red), "BMP")]


class Fuzzer:
    """Random or mutated requests for every RPC, as raw frames (a mutated message may not even parse)."""

    def __init__(self, rng: random.Random, titles: list[str], photos: list[bytes], ids: list[int]) -> None:
        self.rng, self.titles, self.photos, self.ids = rng, titles, photos, ids
        self.odd = odd_images()
        self.next_id = 900_000_000

    # hostile scalar values
    def f(self) -> float:
        r = self.rng
        return r.choice([math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e308, -1e308, 5e-324, 1e9, r.uniform(-5, 5),
                         r.uniform(0, 5), r.uniform(0, 3000)])

    def i32(self) -> int:
        r = self.rng
        return r.choice([0, -1, 1, 10, 1000, 1001, 2**31 - 1, -(2**31), r.randint(-5, 60)])

    def i64(self) -> int:
        r = self.rng
        return r.choice([0, -1, 2**63 - 1, -(2**63), r.choice(self.ids), r.choice(self.ids), r.randint(0, 10**7)])

    def s(self) -> str:
        r = self.rng
        pick = r.random()
        if pick < 0.3:
            return r.choice(self.titles)
        if pick < 0.5:
            return "".join(chr(r.choice([r.randint(32, 126), r.randint(0x80, 0xD7FF), r.randint(0xE000, 0x10FFFF)]))
                           for _ in range(r.randint(1, 40)))
        return r.choice(["", " ", "\t\n", "\x00", "a" * r.randint(1, 30_000), "colour", "baseColour", "gender",
                         "Apparel", "Apparel/Topwear", "%_", "' OR 1=1 --", "../../etc/passwd", "text", "image",
                         "rating", "price", "popularity", "Nike", "红色连衣裙", "x" * 300, "u" * 257])

    def image(self) -> bytes:
        r = self.rng
        pick = r.random()
        if pick < 0.35:
            return r.choice(self.photos)
        if pick < 0.65:
            return self.mutate(r.choice(self.photos))[0]
        if pick < 0.85:
            return r.choice(self.odd)
        return r.randbytes(r.randint(0, 2048))

    def attr(self) -> pb.AttrValue:
        r = self.rng
        return r.choice([pb.AttrValue(), pb.AttrValue(string_value=self.s()), pb.AttrValue(int_value=self.i64()),
                         pb.AttrValue(double_value=self.f()), pb.AttrValue(bool_value=r.random() < 0.5)])

    def filters(self) -> pb.Filters:
        r = self.rng
        f = pb.Filters()
        if r.random() < 0.3:
            f.category_prefix = self.s()
        if r.random() < 0.2:
            f.brands.extend(self.s() for _ in range(r.randint(1, 3)))
        for name in ("price_min", "price_max", "min_rating"):
            if r.random() < 0.25:
                setattr(f, name, self.f())
        if r.random() < 0.25:
            for _ in range(r.randint(1, 3)):
                f.attributes[self.s()[:80]].CopyFrom(self.attr())
        if r.random() < 0.2:
            f.ids.extend(self.i64() for _ in range(r.randint(1, 6)))
        return f

    def modifiers(self) -> pb.Modifiers:
        r = self.rng
        m = pb.Modifiers()
        if r.random() < 0.5:
            m.rating_factor = self.f()
        if r.random() < 0.3:
            m.popularity_weight, m.popularity_field = self.f(), self.s()[:80]
        if r.random() < 0.3:
            m.brand_boosts[self.s()[:50]] = self.f()
        return m

    def query(self, valid: bool) -> pb.Query:
        r = self.rng
        if valid:
            q = pb.Query(k=r.choice([1, 5, 10, 50]))
            if r.random() < 0.7:
                q.text = r.choice(self.titles)
            else:
                q.image = r.choice(self.photos)
            if r.random() < 0.3:
                q.filters.category_prefix = "Apparel"
            if r.random() < 0.2:
                q.modifiers.rating_factor = 0.5
            q.explain = r.random() < 0.3
            return q
        q = pb.Query()
        if r.random() < 0.6:
            q.text = self.s()
        if r.random() < 0.3:
            q.image = self.image()
        for name in ("rating", "price", "user_weight"):
            if r.random() < 0.15:
                setattr(q, name, self.f())
        for mp in (q.targets, q.weights):
            if r.random() < 0.25:
                for _ in range(r.randint(1, 3)):
                    mp[self.s()[:40]] = self.f()
        if r.random() < 0.5:
            q.filters.CopyFrom(self.filters())
        if r.random() < 0.4:
            q.modifiers.CopyFrom(self.modifiers())
        for name in ("k", "nprobe", "rerank_factor"):
            if r.random() < 0.4:
                setattr(q, name, self.i32())
        q.explain, q.omit_products = r.random() < 0.3, r.random() < 0.2
        if r.random() < 0.2:
            q.user_id = self.s()
        return q

    def product(self, valid: bool) -> pb.Product:
        r = self.rng
        self.next_id += 1
        if valid:
            return pb.Product(id=self.next_id, title=r.choice(self.titles), category="Apparel/Topwear/Tshirts",
                              brand="fuzz", price=r.uniform(1, 3000), rating=r.uniform(0, 5),
                              attributes={"baseColour": pb.AttrValue(string_value="Red")})
        p = pb.Product(id=r.choice([self.next_id, self.i64()]), title=self.s(), description=self.s()[:5000],
                       category=self.s())
        if r.random() < 0.5:
            p.brand = self.s()[:100]
        for name in ("price", "rating"):
            if r.random() < 0.5:
                setattr(p, name, self.f())
        if r.random() < 0.4:
            for _ in range(r.randint(1, 3)):
                p.attributes[self.s()[:80]].CopyFrom(self.attr())
        return p

    def messages(self, rpc: str, valid: bool) -> list[Any]:
        r = self.rng
        if rpc == "Search":
            return [pb.SearchRequest(request_id=str(r.randint(0, 10**6)), query=self.query(valid))]
        if rpc == "SearchStream":
            return [pb.SearchRequest(request_id=str(i), query=self.query(valid)) for i in range(r.randint(1, 4))]
        if rpc == "Embed":
            if valid or r.random() < 0.5:
                n = r.randint(1, 6) if valid else r.choice([0, 1, 3, 257])
                return [pb.EmbedRequest(texts=[r.choice(self.titles) if valid else self.s() for _ in range(n)],
                                        kind=r.choice(["query", "document"]) if valid else self.s()[:20])]
            return [pb.EmbedRequest(images=[self.image() for _ in range(r.randint(1, 3))],
                                    texts=[self.s()] if r.random() < 0.1 else [])]
        if rpc == "Recommend":
            if valid:
                return [pb.RecommendRequest(positives=[pb.Example(id=r.choice(self.ids))], k=10)]
            return [pb.RecommendRequest(
                user_id=self.s() if r.random() < 0.5 else "", k=self.i32() if r.random() < 0.5 else 10,
                positives=[pb.Example(id=self.i64(), weight=self.f()) for _ in range(r.randint(0, 3))],
                negatives=[pb.Example(id=self.i64(), weight=self.f()) for _ in range(r.randint(0, 2))],
                filters=self.filters(), modifiers=self.modifiers(), explain=r.random() < 0.5,
                include_purchased=r.random() < 0.5)]
        if rpc == "Upsert":
            msgs: list[Any] = []
            for _ in range(r.randint(1, 4)):
                img = r.choice(self.photos) if valid else (self.image() if r.random() < 0.7 else b"")
                cut = r.choice([len(img), len(img) // 2, 1024]) if img else 0
                msgs.append(pb.UpsertRequest(product=self.product(valid), image=img[:cut]))
                for off in range(cut, len(img), 4096):
                    msgs.append(pb.UpsertRequest(image_chunk=img[off: off + 4096]))
            if not valid and r.random() < 0.15:
                msgs.insert(r.randint(0, len(msgs)), pb.UpsertRequest(image_chunk=r.randbytes(16)))
            if not valid and r.random() < 0.1:
                msgs.insert(r.randint(0, len(msgs)), pb.UpsertRequest())
            return msgs
        if rpc == "Delete":  # only what the fuzzer itself added, or ids that do not exist
            ids = [r.randint(900_000_001, max(self.next_id, 900_000_001)) for _ in range(r.randint(1, 3))]
            return [pb.DeleteRequest(ids=ids if valid else [*ids, *(r.choice([-1, -(2**63), 2**63 - 1])
                                                              for _ in range(r.randint(0, 2)))])]
        if rpc == "GetProduct":
            return [pb.GetProductRequest(id=r.choice(self.ids) if valid else self.i64())]
        if rpc == "Stats":
            return [pb.StatsRequest()]
        if rpc == "RecordEvents":
            if valid:
                return [pb.Event(user_id=f"fuzz-{r.randint(0, 50)}", product_id=r.choice(self.ids),
                                 kind=r.choice(["view", "click", "add_to_cart", "purchase"]))
                        for _ in range(r.randint(1, 5))]
            return [pb.Event(user_id=self.s(), product_id=self.i64(), kind=r.choice(["view", "purchase", self.s()]),
                             timestamp=r.choice([0.0, self.f(), time.time()])) for _ in range(r.randint(0, 5))]
        assert rpc == "ForgetUser"
        return [pb.ForgetUserRequest(user_id=f"fuzz-{r.randint(0, 50)}" if valid else self.s())]

    def mutate(self, data: bytes) -> tuple[bytes, str]:
        r = self.rng
        d = bytearray(data)
        how = r.choice(["bitflip", "bitflip", "truncate", "extend", "splice", "overwrite", "duplicate"])
        if how == "bitflip" and d:
            for _ in range(r.randint(1, 8)):
                i = r.randrange(len(d))
                d[i] ^= 1 << r.randrange(8)
        elif how == "truncate" and d:
            d = d[: r.randrange(len(d))]
        elif how == "extend":
            d += r.randbytes(r.randint(1, 64))
        elif how == "splice":
            i = r.randint(0, len(d))
            d[i:i] = r.randbytes(r.randint(1, 32))
        elif how == "overwrite" and d:
            i = r.randrange(len(d))
            d[i: i + 5] = r.choice([b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80", b"\x00", b"\x7f\xff"])
        elif how == "duplicate" and d:
            i, j = sorted(r.randrange(len(d) + 1) for _ in range(2))
            d[j:j] = d[i:j][:256]
        return bytes(d), how

    def case(self) -> tuple[str, str, list[bytes]]:
        """(rpc, how it was made, the frames to send)."""
        r = self.rng
        rpc = r.choice(list(RPCS))
        kind = r.choices(["valid", "mutated", "random-fields", "random-bytes"], [1, 4, 4, 1])[0]
        if kind == "random-bytes":
            frames = [r.randbytes(r.randint(0, 300)) for _ in range(r.randint(1, 3) if RPCS[rpc][0] != "unary_unary"
                                                                    else 1)]
            return rpc, kind, frames
        frames = [m.SerializeToString() for m in self.messages(rpc, valid=kind != "random-fields")]
        if kind == "mutated" and frames:
            i = r.randrange(len(frames))
            frames[i], how = self.mutate(frames[i])
            kind = f"mutated-{how}"
        return rpc, kind, frames


@dataclass
class FuzzStats:
    tried: int = 0
    codes: Counter = field(default_factory=Counter)
    by_rpc: dict[str, Counter] = field(default_factory=dict)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    bad: list[dict] = field(default_factory=list)  # INTERNAL / UNKNOWN / hang examples
    undecodable_answers: int = 0
    crashes: int = 0
    crash_cases: list[dict] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    max_s: float = 0.0


async def _fuzz_one(ch: aio.Channel, sync_ch: grpc.Channel, rpc: str, frames: list[bytes]) -> tuple[str, bool, str]:
    """Send the frames; returns (code name, answer decoded, status details).

    Request streams go through the sync API (in a thread): grpcio's asyncio client replaces the server's status
    with "INTERNAL: Internal error from Core" when the server ends a call before the client has sent every
    message (grpc/grpc#36066, fix pending in grpc/grpc#43486), which a fuzzer's bad frames do all the time.
    The sync client reports the status the server sent."""
    shape, resp = RPCS[rpc]
    try:
        if shape == "unary_unary":
            method = ch.unary_unary(SERVICE + rpc, request_serializer=None, response_deserializer=None)
            answers = [await method(frames[0], timeout=DEADLINE_S)]
        else:
            sync = getattr(sync_ch, shape)(SERVICE + rpc, request_serializer=None, response_deserializer=None)
            if shape == "stream_unary":
                answers = [await asyncio.to_thread(sync, iter(frames), timeout=DEADLINE_S)]
            else:
                answers = await asyncio.to_thread(lambda: list(sync(iter(frames), timeout=DEADLINE_S)))
    except grpc.RpcError as exc:  # AioRpcError is one too
        return exc.code().name, True, exc.details() or ""
    try:
        for a in answers:
            resp.FromString(a)
    except Exception:
        return "OK", False, ""
    return "OK", True, ""


def run_fuzz(models: Path, data: Path, work: Path, n: int, *, seed: int, titles: list[str], photos: list[bytes],
             ids: list[int], concurrency: int = 8) -> dict[str, Any]:
    rng = random.Random(seed)
    fz = Fuzzer(rng, titles, photos, ids)
    cases = [fz.case() for _ in range(n)]
    st = FuzzStats()
    log = work / "fuzz-server.log"
    server = start_server(models, data, log)
    pid0 = server.pid
    t0 = time.perf_counter()
    chunk = 250
    try:
        for start in range(0, n, chunk):
            part = cases[start: start + chunk]

            async def go(target: str, part: list[tuple[str, str, list[bytes]]] = part, start: int = start) -> None:
                q: asyncio.Queue = asyncio.Queue()
                for i, c in enumerate(part):
                    q.put_nowait((start + i, c))
                opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
                sync_ch = grpc.insecure_channel(target, options=opts)
                async with aio.insecure_channel(target, options=opts) as ch:
                    async def worker() -> None:
                        while not q.empty():
                            i, (rpc, kind, frames) = q.get_nowait()
                            t = time.perf_counter()
                            code, decoded, details = await _fuzz_one(ch, sync_ch, rpc, frames)
                            dt = time.perf_counter() - t
                            st.tried += 1
                            st.latencies.append(dt)
                            st.max_s = max(st.max_s, dt)
                            st.codes[code] += 1
                            st.by_rpc.setdefault(rpc, Counter())[code] += 1
                            st.by_kind.setdefault(kind.split("-")[0] if kind.startswith("mutated") else kind,
                                                  Counter())[code] += 1
                            st.undecodable_answers += not decoded
                            if code in BAD_CODES or code == "DEADLINE_EXCEEDED":
                                st.bad.append({"case": i, "rpc": rpc, "kind": kind, "code": code,
                                               "seconds": round(dt, 3), "details": details[:200],
                                               "first_bytes": frames[0][:64].hex() if frames else ""})

                    await asyncio.gather(*(worker() for _ in range(concurrency)))
                sync_ch.close()

            asyncio.run(go(server.target))
            if not server.alive():  # a crash: note what was in flight, restart and go on
                st.crashes += 1
                st.crash_cases.append({"chunk_start": start, "exit": server.proc.returncode})
                stop_server(server)
                server = start_server(models, data, log)
        seconds = time.perf_counter() - t0
        status, good = _health_and_good_answer(server.target, titles[0])
        alive_same = server.alive() and server.pid == pid0
    finally:
        stop_server(server)
    text = log.read_text(errors="replace") if log.exists() else ""
    hangs = st.codes.get("DEADLINE_EXCEEDED", 0)
    return {"requests": st.tried, "seconds": round(seconds, 1), "rate_per_s": st.tried / seconds,
            "concurrency": concurrency, "deadline_s": DEADLINE_S, "crashes": st.crashes, "hangs": hangs,
            "internal": st.codes.get("INTERNAL", 0), "unknown": st.codes.get("UNKNOWN", 0),
            "failures": st.crashes + hangs + sum(st.codes.get(c, 0) for c in BAD_CODES) + st.undecodable_answers,
            "undecodable_answers": st.undecodable_answers, "codes": dict(st.codes.most_common()),
            "by_rpc": {k: dict(v.most_common()) for k, v in sorted(st.by_rpc.items())},
            "by_kind": {k: dict(v.most_common()) for k, v in sorted(st.by_kind.items())},
            "latency": latency_stats(st.latencies), "max_call_s": round(st.max_s, 3),
            "bad_examples": st.bad[:20], "crash_cases": st.crash_cases,
            "server_log_internal_errors": text.count("internal error (ref"), "server_log_tracebacks":
                text.count("Traceback"), "after": {"health": status, "good_query_answered": good,
                                                  "same_process_throughout": alive_same}}


# -- (b) overload ----------------------------------------------------------------------------------------------
@dataclass
class Call:
    sent: float
    done: float
    code: str


async def _open_loop_then_recover(target: str, reqs: list[pb.SearchRequest], *, rate: float, spike_s: float,
                                  recover_s: float, clients: int, seed: int,
                                  baseline_s: float) -> tuple[list[Call], list[Call], float, float]:
    """The probe (`clients` closed-loop clients) for `baseline_s`, then Poisson arrivals at `rate` for `spike_s`,
    then (without waiting for the stragglers) the same probe for `recover_s`. Returns the spike calls, the
    recovery calls, the time the spike ended and the probe's throughput before the spike: recovery is judged
    against the same clients on the same channels, not against a capacity other clients measured earlier
    (which differed from the probe by -25 % to +30 % between runs on this VM)."""
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [aio.insecure_channel(target, options=opts) for _ in range(8)]
    stubs = [pb_grpc.SearchServiceStub(c) for c in chans]
    rng = random.Random(seed)
    spike: list[Call] = []
    rec: list[Call] = []

    async def one(i: int, out: list[Call]) -> None:
        t = time.perf_counter()
        try:
            await stubs[i % len(stubs)].Search(reqs[i % len(reqs)], timeout=DEADLINE_S)
            code = "OK"
        except aio.AioRpcError as exc:
            code = exc.code().name
        out.append(Call(t, time.perf_counter(), code))

    async def probe(c: int, out: list[Call], since: float, seconds: float) -> None:
        j = c * 7919
        while time.perf_counter() - since < seconds:
            await one(j, out)
            j += 1

    base: list[Call] = []
    t_base = time.perf_counter()
    await asyncio.gather(*(probe(c, base, t_base, baseline_s) for c in range(clients)))
    base_qps = sum(c.code == "OK" for c in base) / (time.perf_counter() - t_base)

    t0 = time.perf_counter()
    tasks = []
    nxt = t0
    i = 0
    while True:
        nxt += rng.expovariate(rate)
        if nxt - t0 > spike_s:
            break
        delay = nxt - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, spike)))
        i += 1
    t_end = time.perf_counter()
    await asyncio.gather(*(probe(c, rec, t_end, recover_s) for c in range(clients)), *tasks)
    for c in chans:
        await c.close()
    return spike, rec, t_end, base_qps


def _recovery_seconds(rec: list[Call], t_end: float, normal_qps: float, window: float = 1.0,
                      step: float = 0.25) -> tuple[float | None, list[dict]]:
    """First time after the spike from which throughput stays >= 90 % of normal for two windows running."""
    ok = np.asarray(sorted(c.done - t_end for c in rec if c.code == "OK"))
    if ok.size == 0:
        return None, []
    horizon = float(ok[-1])
    series = []
    t = 0.0
    while t + window <= horizon:
        n = int(((ok >= t) & (ok < t + window)).sum())
        series.append({"t": round(t, 2), "qps": n / window})
        t += step
    per = int(window / step)
    for k, s in enumerate(series):
        nxt = series[k + per] if k + per < len(series) else None
        if s["qps"] >= 0.9 * normal_qps and nxt is not None and nxt["qps"] >= 0.9 * normal_qps:
            return s["t"], series
    return None, series


def run_overload(models: Path, data: Path, work: Path, reqs: list[pb.SearchRequest], *, quick: bool,
                 admission: int = ADMISSION) -> dict[str, Any]:
    """Capacity = `admission` closed-loop clients (as many as the server admits at once: more would only be
    refused and retry in a tight loop), then the normal phase, the spike and the recovery probe."""
    cap_s, norm_s, base_s, spike_s, rec_s = (3.0, 3.0, 3.0, 5.0, 5.0) if quick else (20.0, 15.0, 10.0, 60.0, 30.0)
    with serving(models, data, work / "overload-server.log", max_inflight=admission, metrics=True) as s:
        rss = RssSampler(s.pid)
        rss.start()
        try:
            rss.phase = "warm"
            asyncio.run(closed_loop(s.target, reqs, concurrency=admission, duration_s=2.0, warmup_s=0.5))
            rss.phase = "capacity"
            cap = asyncio.run(closed_loop(s.target, reqs, concurrency=admission, duration_s=cap_s)).summary()
            capacity = cap["throughput_qps"]
            rss.phase = "normal"
            normal = asyncio.run(open_loop(s.target, reqs, rate_qps=0.5 * capacity, duration_s=norm_s,
                                           channels=8)).summary()
            rss.phase = "spike"
            t_spike = time.perf_counter()
            assert s.metrics_port is not None
            before = scrape(s.metrics_port)
            spike, rec, t_end, probe_qps = asyncio.run(_open_loop_then_recover(
                s.target, reqs, rate=4 * capacity, spike_s=spike_s, recover_s=rec_s, clients=admission, seed=1,
                baseline_s=base_s))
            after = scrape(s.metrics_port)  # spike and recovery probe together
            rss_phase_switch = t_end - rss.t0
            rss.phase = "after"
            time.sleep(3.0)
        finally:
            rss.stop()
        alive = s.alive()
    # samples taken after the spike ended belong to the recovery, whatever the label said
    rss_spike = [v for t, p, v in rss.samples if p == "spike" and t <= rss_phase_switch]
    rss_recovery = [v for t, p, v in rss.samples if p in ("spike", "after") and t > rss_phase_switch]
    admitted = [c.done - c.sent for c in spike if c.code == "OK"]
    refused = [c.done - c.sent for c in spike if c.code == "RESOURCE_EXHAUSTED"]
    codes = Counter(c.code for c in spike)
    recovery_s, series = _recovery_seconds(rec, t_end, probe_qps)
    steady = float(np.median(rss.of("capacity") + rss.of("normal"))) if rss.samples else None
    offered = len(spike) / spike_s
    return {
        "admission_limit": admission, "capacity_closed_loop": cap, "capacity_qps": capacity,
        "normal_open_loop_half_capacity": normal,
        "spike": {"target_rate_qps": 4 * capacity, "offered_rate_qps": offered, "seconds": spike_s,
                  "requests": len(spike), "codes": dict(codes), "admitted": len(admitted),
                  "admitted_qps": len(admitted) / spike_s, "admitted_latency": latency_stats(admitted),
                  "refused": len(refused), "refused_latency": latency_stats(refused),
                  "server_side_spike_and_probe": {
                      code: server_side_latency(before, after, "/kuamo.v1.SearchService/Search", code)
                      for code in ("OK", "RESOURCE_EXHAUSTED")},
                  "other_errors": {k: v for k, v in codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED")}},
        "p99_ms": {"normal": normal["latency"].get("p99_ms"), "at_capacity": cap["latency"].get("p99_ms"),
                   "admitted_during_spike": latency_stats(admitted).get("p99_ms")},
        "rss_mib": {"steady_median": steady, "spike_max": max(rss_spike, default=None),
                    "recovery_last": rss_recovery[-1] if rss_recovery else None,
                    "samples": [(round(t, 1), p, round(v, 1)) for t, p, v in rss.samples]},
        "recovery": {"seconds_to_normal": recovery_s, "normal_qps": probe_qps, "capacity_qps": capacity,
                     "probe": f"{admission} closed-loop clients, measured for {base_s:.0f} s before the spike",
                     "throughput_series": series[:: max(1, len(series) // 60)]},
        "spike_started_s": round(t_spike - rss.t0, 1), "server_alive_after": alive,
    }


# -- (c) crash safety ------------------------------------------------------------------------------------------
@dataclass
class Writer:
    """Sequential Upsert calls (1..24 products with photos each, photos split over several messages);
    an id is acknowledged once its call has answered."""

    target: str
    items: list[Any]
    rng: random.Random
    cycle: int
    acked: dict[int, str] = field(default_factory=dict)  # id -> title
    attempted: dict[int, str] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    error: str = ""
    calls: int = 0

    def run(self) -> None:
        base = 200_000_000 + self.cycle * 100_000
        j = 0
        with grpc.insecure_channel(self.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            stub = pb_grpc.SearchServiceStub(ch)
            while True:
                batch = []
                for _ in range(self.rng.randint(1, 24)):
                    it = self.items[self.rng.randrange(len(self.items))]
                    pid = base + j
                    j += 1
                    title = f"{it.title} (crash test {self.cycle}-{j})"
                    batch.append((pid, title, it))
                    self.attempted[pid] = title
                chunk = self.rng.choice([2048, 8192, 65536])

                def msgs(batch: list = batch, chunk: int = chunk) -> Iterator[pb.UpsertRequest]:
                    for pid, title, it in batch:
                        img = it.image_path.read_bytes()
                        attrs = {k: pb.AttrValue(string_value=str(it.attrs[k])) for k in ("gender", "baseColour")
                                 if it.attrs.get(k)}
                        yield pb.UpsertRequest(product=pb.Product(
                            id=pid, title=title, category="/".join(it.attrs.get(k, "") for k in (
                                "masterCategory", "subCategory", "articleType")), attributes=attrs,
                            image_ref=f"images/{it.id}.jpg"), image=img[:chunk])
                        for off in range(chunk, len(img), chunk):
                            yield pb.UpsertRequest(image_chunk=img[off: off + chunk])

                try:
                    r = stub.Upsert(msgs(), timeout=60)
                except grpc.RpcError as exc:
                    self.error = exc.code().name
                    return
                self.calls += 1
                titles = dict((pid, t) for pid, t, _ in batch)
                for pid in r.accepted:
                    self.acked[pid] = titles[pid]
                self.rejected += [f"{x.id}:{x.field}:{x.reason}" for x in r.rejected]


async def _verify(target: str, acked: dict[int, str], unacked: list[int]) -> dict[str, Any]:
    async with aio.insecure_channel(target) as ch:
        stub = pb_grpc.SearchServiceStub(ch)
        stats = await stub.Stats(pb.StatsRequest(), timeout=DEADLINE_S)
        sem = asyncio.Semaphore(8)
        lost: list[int] = []
        not_found_by_title: list[int] = []
        no_vector: list[int] = []
        unacked_present = 0

        async def present(pid: int) -> bool:
            try:
                await stub.GetProduct(pb.GetProductRequest(id=pid), timeout=DEADLINE_S)
                return True
            except aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return False

        async def has_vector(pid: int) -> bool:
            r = await stub.Search(pb.SearchRequest(query=pb.Query(text="product", k=1, omit_products=True,
                                                                  filters=pb.Filters(ids=[pid]))), timeout=DEADLINE_S)
            return [h.id for h in r.hits] == [pid]

        async def check_acked(pid: int, title: str) -> None:
            async with sem:
                if not await present(pid):
                    lost.append(pid)
                    return
                if not await has_vector(pid):
                    no_vector.append(pid)
                r = await stub.Search(pb.SearchRequest(query=pb.Query(text=title, k=10, omit_products=True)),
                                      timeout=DEADLINE_S)
                if pid not in [h.id for h in r.hits]:
                    not_found_by_title.append(pid)

        async def check_unacked(pid: int) -> None:
            nonlocal unacked_present
            async with sem:
                if await present(pid):
                    unacked_present += 1
                    if not await has_vector(pid):
                        no_vector.append(pid)

        await asyncio.gather(*(check_acked(p, t) for p, t in acked.items()), *(check_unacked(p) for p in unacked))
        import json

        recovery = json.loads(stats.details_json).get("index", {}).get("recovery", {})
    return {"products": stats.products, "indexed": stats.indexed, "consistent": stats.products == stats.indexed,
            "lost": sorted(lost), "not_found_by_title": sorted(not_found_by_title), "no_vector": sorted(no_vector),
            "unacked_present": unacked_present, "recovery": recovery}


def run_crash(models: Path, data: Path, work: Path, items: list[Any], *, cycles: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    log = work / "crash-server.log"
    rows = []
    all_acked: dict[int, str] = {}
    server = start_server(models, data, log)
    try:
        for c in range(cycles):
            w = Writer(server.target, items, random.Random(rng.random()), c)
            th = threading.Thread(target=w.run, daemon=True)
            th.start()
            t_first = time.monotonic()
            while not w.acked and th.is_alive() and time.monotonic() - t_first < 60:
                time.sleep(0.005)
            wait = rng.uniform(0.2, 3.0)
            time.sleep(wait)
            acked_before = dict(w.acked)  # what was acknowledged before the kill
            os.kill(server.pid, signal.SIGKILL)
            server.proc.wait(timeout=30)
            killed_at_calls = w.calls
            th.join(timeout=90)
            acked = dict(w.acked)  # includes anything acknowledged between the snapshot above and the kill
            all_acked.update(acked)
            t_restart = time.perf_counter()
            stop_server(server)
            server = start_server(models, data, log)
            restart_s = time.perf_counter() - t_restart
            unacked = [p for p in w.attempted if p not in acked]
            v = asyncio.run(_verify(server.target, acked, unacked))
            rows.append({"cycle": c, "kill_after_s": round(wait, 2), "calls_acknowledged": killed_at_calls,
                         "acknowledged": len(acked), "acknowledged_at_kill_signal": len(acked_before),
                         "attempted": len(w.attempted), "unacked_present": v["unacked_present"],
                         "writer_error": w.error, "rejected": w.rejected[:3], "restart_s": round(restart_s, 2),
                         "recovery": v["recovery"], "products": v["products"], "indexed": v["indexed"],
                         "consistent": v["consistent"], "lost": v["lost"], "not_found_by_title":
                             v["not_found_by_title"], "no_vector": v["no_vector"]})
        # after the last restart: everything acknowledged in every cycle is still there
        final = asyncio.run(_verify(server.target, all_acked, []))
    finally:
        stop_server(server)
    return {"cycles": rows, "acknowledged_total": len(all_acked),
            "lost_writes": sum(len(r["lost"]) for r in rows) + len(final["lost"]),
            "inconsistent_restarts": sum(not r["consistent"] for r in rows),
            "half_written_served": sum(len(r["no_vector"]) for r in rows) + len(final["no_vector"]),
            "not_found_by_own_title": sum(len(r["not_found_by_title"]) for r in rows),
            "final_check": {k: final[k] for k in ("products", "indexed", "consistent", "lost", "no_vector")},
            "restart_s": latency_stats([r["restart_s"] for r in rows])}


# -- the suite -------------------------------------------------------------------------------------------------
def _real_ids(data: Path, n: int, seed: int) -> list[int]:
    with sqlite3.connect(f"file:{data / 'catalog.sqlite'}?mode=ro", uri=True) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM products")]
    return random.Random(seed).sample(ids, min(n, len(ids)))


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR, data: Path | None = None,
        catalog: Path | None = None, seed: int = 0, parts: tuple[str, ...] = ("fuzz", "overload", "crash"),
        fuzz_requests: int | None = None, admission: int = ADMISSION) -> dict[str, Any]:
    from kuamo.benchmarks.server import _requests
    from kuamo.export.samples import load_fashion

    catalog, data = bench_catalog(quick, models, catalog, data)
    info = machine_info()
    items = load_fashion(catalog)
    rng = random.Random(seed)
    sample = rng.sample(items, 400)
    n_fuzz = fuzz_requests or (1_000 if quick else 10_000)
    out: dict[str, Any] = {"machine": info, "quick": quick, "catalog": str(catalog), "seed": seed,
                           "data": f"copies of {data} in a temporary directory (the original is not written)"}
    with tempfile.TemporaryDirectory(prefix="kuamo-reliability-") as tmp:
        work = Path(tmp)
        if "fuzz" in parts:
            print("reliability: fuzz", file=sys.stderr, flush=True)
            out["fuzz"] = run_fuzz(models, copy_data(data, work / "fuzz"), work, n_fuzz, seed=seed,
                                   titles=[it.title for it in sample],
                                   photos=[it.image_path.read_bytes() for it in sample[:60]],
                                   ids=_real_ids(data, 2000, seed))
        if "overload" in parts:
            print("reliability: overload", file=sys.stderr, flush=True)
            text_reqs, _, _ = _requests(catalog, 120 if quick else 400, 1, seed=seed)
            out["overload"] = run_overload(models, copy_data(data, work / "overload"), work, text_reqs, quick=quick,
                                           admission=admission)
        if "crash" in parts:
            print("reliability: crash safety", file=sys.stderr, flush=True)
            out["crash"] = run_crash(models, copy_data(data, work / "crash"), work, sample,
                                     cycles=2 if quick else 20, seed=seed)
    name = "reliability" + ("_quick" if quick else "")
    previous = RESULTS_DIR / f"{name}.json"
    if set(parts) != {"fuzz", "overload", "crash"} and previous.is_file():  # a partial re-run keeps the other parts
        import json

        old = json.loads(previous.read_text(encoding="utf-8"))
        out = {**{k: v for k, v in old.items() if k in ("fuzz", "overload", "crash")}, **out}
    write_json(name, out)
    write_markdown(name, "Reliability: fuzzing, overload, crash safety", _markdown(out), info)
    return out


def _fmt(v: Any, nd: int = 1) -> str:
    return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _markdown(o: dict[str, Any]) -> str:
    parts = [f"Server: `kuamo serve` (real models) on 127.0.0.1 over {o['data']}; the clients run in the benchmark "
             "process on the same cores. Seed " + str(o["seed"]) + (" (quick run)." if o["quick"] else ".") + "\n"]
    if "fuzz" in o:
        f = o["fuzz"]
        parts.append("\n## (a) Fuzzing\n\n" + markdown_table([{
            "requests": f["requests"], "seconds": f["seconds"], "crashes": f["crashes"], "hangs (> 10 s)": f["hangs"],
            "INTERNAL": f["internal"], "UNKNOWN": f["unknown"], "undecodable answers": f["undecodable_answers"],
            "failures": f["failures"], "slowest call s": f["max_call_s"]}])
            + "\nStatus codes: " + ", ".join(f"{k} {v}" for k, v in f["codes"].items())
            + ".\n\nBy how the request was made:\n\n" + markdown_table([
                {"made by": k, **{c: v.get(c, 0) for c in f["codes"]}} for k, v in f["by_kind"].items()])
            + "\nBy RPC:\n\n" + markdown_table([{"rpc": k, **{c: v.get(c, 0) for c in f["codes"]}}
                                                for k, v in f["by_rpc"].items()])
            + f"\nAfter the run: health {f['after']['health']}, a good query answered correctly: "
              f"{f['after']['good_query_answered']}, same server process throughout: "
              f"{f['after']['same_process_throughout']}; internal errors in the server log: "
              f"{f['server_log_internal_errors']}.\n")
    if "overload" in o:
        v = o["overload"]
        s, p, r, normal = v["spike"], v["p99_ms"], v["rss_mib"], v["normal_open_loop_half_capacity"]
        parts.append(
            f"\n## (b) Overload (admission limit {v['admission_limit']})\n\n" + markdown_table([
                {"phase": f"capacity, {v['admission_limit']} closed-loop clients", "qps": v["capacity_qps"],
                 "p99 ms": p["at_capacity"], "refused": v["capacity_closed_loop"]["refused"]},
                {"phase": "normal, open loop at 0.5x capacity", "qps": normal["throughput_qps"],
                 "p99 ms": p["normal"], "refused": normal["refused"]},
                {"phase": f"spike, open loop at 4x capacity for {s['seconds']:.0f} s "
                          f"(offered {s['offered_rate_qps']:.0f} /s)", "qps": s["admitted_qps"],
                 "p99 ms": p["admitted_during_spike"], "refused": s["refused"]}])
            + f"\nDuring the spike: {s['requests']} requests, {s['admitted']} admitted (p50 "
              f"{_fmt(s['admitted_latency'].get('p50_ms'))} ms, p99 {_fmt(p['admitted_during_spike'])} ms vs "
              f"{_fmt(p['normal'])} ms at normal load), {s['refused']} RESOURCE_EXHAUSTED answered in p50 "
              f"{_fmt(s['refused_latency'].get('p50_ms'), 2)} ms / p99 {_fmt(s['refused_latency'].get('p99_ms'), 2)}"
              f" ms as the client saw it (inside the server: p99 <= "
              f"{_fmt(s['server_side_spike_and_probe']['RESOURCE_EXHAUSTED'].get('p99_ms_at_most'))} ms; the rest is"
              f" time queued outside the interceptor, client and server sharing the cores); other errors: "
              f"{s['other_errors'] or 'none'}."
              f"\n\nServer RSS: steady {_fmt(r['steady_median'])}"
              f" MiB, spike max {_fmt(r['spike_max'])} MiB, after recovery {_fmt(r['recovery_last'])} MiB. "
              f"Throughput back to >= 90 % of the probe's own rate before the spike "
              f"({_fmt(v['recovery']['normal_qps'])} qps) {_fmt(v['recovery']['seconds_to_normal'], 2)} s after the "
              f"spike ended (probe: {v['recovery']['probe']}).\n")
    if "crash" in o:
        c = o["crash"]
        parts.append(
            f"\n## (c) Crash safety ({len(c['cycles'])} kill -9 cycles)\n\n" + markdown_table([{
                "acknowledged writes": c["acknowledged_total"], "lost writes": c["lost_writes"],
                "catalog != index after restart": c["inconsistent_restarts"],
                "half-written served": c["half_written_served"],
                "not in top 10 for own title": c["not_found_by_own_title"],
                "restart p50 s": c["restart_s"].get("p50_ms", 0) / 1000}])
            + "\n" + markdown_table([{k: r[k] for k in ("cycle", "kill_after_s", "acknowledged", "attempted",
                                                        "unacked_present", "products", "indexed", "restart_s")}
                                     | {"lost": len(r["lost"]), "recovery": r["recovery"].get("mode", "")}
                                     for r in c["cycles"]]))
    parts.append(f"\nReproduce: `flock /tmp/kuamo-bench.lock kuamo bench reliability` (results in {RESULTS_DIR}/"
                 "reliability.json). The 20-minute soak test is separate: `python -m kuamo.benchmarks.soak`.\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", choices=("fuzz", "overload", "crash"))
    ap.add_argument("--fuzz-requests", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--admission", type=int, default=ADMISSION, help="the overload server's max_inflight")
    a = ap.parse_args(argv)
    run(quick=a.quick, parts=tuple(a.only or ("fuzz", "overload", "crash")), fuzz_requests=a.fuzz_requests,
        seed=a.seed, admission=a.admission)
    return 0


if __name__ == "__main__":
    sys.exit(main())

