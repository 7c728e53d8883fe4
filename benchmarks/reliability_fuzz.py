"""Reliability (a): fuzz a `kuamo serve` process with fuzz_cases' requests over every RPC and count crashes
(the process died), hangs (a call past its deadline), INTERNAL / UNKNOWN answers and undecodable answers."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kuamo.benchmarks.common import latency_stats
from kuamo.benchmarks.fuzz_cases import RPCS, SERVICE, Fuzzer
from kuamo.benchmarks.serving import DEADLINE_S, start_server, stop_server
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

BAD_CODES = ("INTERNAL", "UNKNOWN")


def _health_and_good_answer(target: str, title: str) -> tuple[str, bool]:
    with grpc.insecure_channel(target) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        r = pb_grpc.SearchServiceStub(ch).Search(pb.SearchRequest(query=pb.Query(text=title, k=10)), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status), any(h.product.title == title for h in r.hits)



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
