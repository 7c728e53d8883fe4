"""`kuamo index CATALOG --ray [ADDRESS]`: the catalog embedded on a Ray cluster, committed by this process.

Read (a Ray read task per file, with kuamo's own readers) -> parse, check, hash, embed (a pool of Ray actors,
each loading the towers once with ProductEncoder.load) -> this process (the driver), which commits the rows
into its engine, embedded or any backend, with Engine.write_rows in chunks.

The same rows, products, rejections and vectors as the single-process `kuamo index` (engine/ingest.py):
- the file is read with feed_files.read_rows, not Ray's pyarrow readers, which type columns by guessing (an id
  "007" becomes 7), fail the whole read on one malformed JSON line or short CSV row, and number no rows;
- the image blend is decided here before the run, as single-process does, and the actors are given its beta;
  an actor whose model files make another fingerprint than the driver's refuses to start;
- re-runs are resumable: the stored content hashes travel to the actors, which skip unchanged rows before
  embedding them.
A bad row is a rejection with its reason, never fatal; an actor that dies is restarted and its batch retried.

Ray is imported only inside functions: the plain install has no Ray, and engine/ imports nothing heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kuamo.engine.catalog_io import (
    ColumnMapping,
    FirstRows,
    RowError,
    repeat_reason,
    to_product,
    with_variants,
)
from kuamo.engine.catalog_map import CatalogConfig
from kuamo.engine.config import EncoderConfig
from kuamo.engine.cpu_budget import usable_cores
from kuamo.engine.errors import ArtifactError, InvalidInput, KuamoError, NotReady
from kuamo.engine.feed_files import read_rows
from kuamo.engine.ids import row_key
from kuamo.engine.ingest import IngestReport, fetch_feed_photos, finish_run, run_settings, say, start_run
from kuamo.engine.store import StoredRow, check_owner
from kuamo.engine.types import Rejection
from kuamo.engine.variations import gather_variations

if TYPE_CHECKING:
    from kuamo.engine.engine import Engine, EngineConfig
    from kuamo.engine.product_encoder import Pending, ProductEncoder

log = logging.getLogger(__name__)

LOCAL = "local"
# Test-only fault injection: the first actor that manages to delete this file exits on its batch (a crash).
FAULT_ONCE_ENV = "KUAMO_RAY_FAULT_ONCE"
DEFAULT_OBJECT_STORE_MB = 256  # a private local cluster; Ray's default claims ~30% of the machine's RAM
DEFAULT_BATCH_ROWS = 64  # rows per actor batch (and per block): small enough to spread one file over workers
READ_BLOCK_ROWS = 1024  # rows per table the read task yields (Ray re-blocks them; see _dataset)
CONNECT_TIMEOUT_S = 30.0
START_TIMEOUT_S = 180.0
RETRIES = 3  # restarts of a dead actor, and retries of the batch it held (bounded: a poison batch fails the job)


class RayUnavailable(NotReady):
    """The Ray cluster cannot be started or reached; the message names the address (field "ray")."""


class RayJobFailed(KuamoError):
    """The Ray job failed (beyond its retries); what was committed before stays, and a re-run resumes it."""


# -- the report ---------------------------------------------------------------------------------------------
@dataclass
class RayIngestReport(IngestReport):
    """IngestReport plus the Ray side: the cluster, the fixed cost of the job and per-stage throughput."""

    address: str = LOCAL
    nodes: int = 0
    workers: int = 0
    cpus_per_worker: float = 0.0
    actor_loads: int = 0  # actor processes that loaded the models and returned rows (a restarted one counts again)
    cluster_start_s: float = 0.0  # ray.init: starting the private cluster, or connecting
    actor_load_s: float = 0.0  # the slowest actor's model load (they load side by side)
    read_s: float = 0.0  # in the read task(s)
    parse_s: float = 0.0  # worker-seconds: rows -> products, photos read, checks, hashes
    embed_s: float = 0.0  # worker-seconds: the towers and the fusion
    write_s: float = 0.0  # the driver's commits
    embedded: int = 0  # rows that went through the towers (accepted + rejected there)
    duplicates: int = 0  # rows rejected because an earlier row of the file has the same id

    @property
    def fixed_s(self) -> float:
        """What the job costs before its first row: cluster start + actor model loads."""
        return self.cluster_start_s + self.actor_load_s

    @property
    def steady_rows_per_s(self) -> float:
        """Rows read per second once the cluster and the actors are up (the number that scales with workers)."""
        busy = self.seconds - self.fixed_s
        return self.rows_read / busy if busy > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        def rate(n: int, s: float) -> float:
            return round(n / s, 1) if s > 0 else 0.0

        d = super().to_dict()
        d["ray"] = {
            "address": self.address, "nodes": self.nodes, "workers": self.workers,
            "cpus_per_worker": round(self.cpus_per_worker, 3), "actor_loads": self.actor_loads,
            "fixed_s": round(self.fixed_s, 2), "cluster_start_s": round(self.cluster_start_s, 2),
            "actor_load_s": round(self.actor_load_s, 2), "steady_rows_per_s": round(self.steady_rows_per_s, 1),
            "duplicates": self.duplicates,
            "stages": {  # parse and embed per worker-second: times `workers` for the whole pool
                "read": {"rows": self.rows_read, "seconds": round(self.read_s, 3),
                         "rows_per_s": rate(self.rows_read, self.read_s)},
                "parse": {"rows": self.rows_read, "worker_seconds": round(self.parse_s, 3),
                          "rows_per_worker_s": rate(self.rows_read, self.parse_s)},
                "embed": {"rows": self.embedded, "worker_seconds": round(self.embed_s, 3),
                          "rows_per_worker_s": rate(self.embedded, self.embed_s)},
                "write": {"rows": self.accepted, "seconds": round(self.write_s, 3),
                          "rows_per_s": rate(self.accepted, self.write_s)},
            },
        }
        return d


# -- the cluster --------------------------------------------------------------------------------------------
@dataclass
class RaySession:
    address: str  # "local" for a private cluster, else what the caller gave
    started_s: float  # seconds ray.init took (0 when this process was already connected)
    owned: bool  # this session called ray.init, so it shuts Ray down at the end


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidInput(f"a Ray address is HOST:PORT or ray://HOST:PORT (or nothing for a private local "
                           f"cluster), got {address!r}", field="ray")
    return host.strip("[]"), int(port)


def _quiet_ray() -> None:
    """Ray's INFO lines and progress bars would bury kuamo's progress on stderr (stdout is the report's)."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _init_local(num_cpus: float, object_store_mb: int, attempts: int = 2) -> str:
    """Start a private local cluster (its own temp dir, no dashboard); retried once, as a start can time out on a
    loaded machine. Returns the temp dir (removed at the end)."""
    import ray

    last: BaseException | None = None
    for attempt in range(attempts):
        # short and private: Ray's unix socket paths must stay under ~107 characters, and /tmp/ray is shared
        temp_dir = tempfile.mkdtemp(prefix="kuamo-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
        try:
            ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_mb * 1024 * 1024,
                     _temp_dir=temp_dir, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            return temp_dir
        except Exception as exc:  # a start that timed out or failed: clean up and try once more
            last = exc
            with contextlib.suppress(Exception):
                ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
            log.warning("starting a local Ray cluster failed (%s); %s", exc,
                        "retrying" if attempt == 0 else "giving up")
    raise RayUnavailable(f"could not start a local Ray cluster ({num_cpus:g} CPUs, {object_store_mb} MB object "
                         f"store) in {attempts} attempts: {last}", field="ray") from last


def _connect(address: str, timeout_s: float) -> None:
    """ray.init(address) with a bound: a TCP check first (a dead address fails in seconds, not after Ray's
    minutes of retries), then ray.init in a thread we stop waiting for."""
    import ray

    if address != "auto":
        _reachable(address, min(timeout_s, 10.0))
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    t = threading.Thread(target=init, name="kuamo-ray-connect", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise RayUnavailable(f"the Ray cluster at {address} did not finish connecting within {timeout_s:g} s (is it "
                             "a Ray head's GCS port? a head bound to 127.0.0.1 is unreachable: Ray connects to the "
                             "machine's own IP)", field="ray")
    if failure:
        raise RayUnavailable(f"could not connect to the Ray cluster at {address}: {failure[0]}",
                             field="ray") from failure[0]


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: float | None = None,
                object_store_mb: int = DEFAULT_OBJECT_STORE_MB, connect_timeout_s: float = CONNECT_TIMEOUT_S
                ) -> Iterator[RaySession]:
    """Ray for one job. None or "local": a private local cluster (num_cpus: this process's usable cores), shut down
    at the end; "HOST:PORT", "ray://HOST:PORT" or "auto": that cluster, disconnected at the end. A process that
    is already connected keeps its connection, when the address is its own or none."""
    try:
        import ray
    except ImportError as exc:
        raise InvalidInput(f"--ray needs Ray: pip install 'kuamo[scale]' ({exc})", field="ray") from exc

    _quiet_ray()
    local = address in (None, "", LOCAL)
    if not local and address != "auto":
        _host_port(str(address))  # a malformed address fails before anything starts
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if not local and address not in ("auto", current):
            _reachable(str(address), 5.0)  # a dead address is reported as such, even here
            raise InvalidInput(f"this process is already connected to the Ray cluster at {current}, not {address}",
                               field="ray")
        yield RaySession(address=current, started_s=0.0, owned=False)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a private cluster
    t0 = time.perf_counter()
    temp_dir = None
    if local:
        temp_dir = _init_local(float(num_cpus if num_cpus is not None else usable_cores()), object_store_mb)
    else:
        _connect(str(address), connect_timeout_s)
    try:
        yield RaySession(address=LOCAL if local else str(address), started_s=time.perf_counter() - t0, owned=True)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _reachable(address: str, timeout_s: float) -> None:
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayUnavailable(f"no Ray cluster answers at {address}: {exc.strerror or exc}", field="ray") from None


# -- the read stage: kuamo's readers inside a Ray read task ------------------------------------------------
def read_blocks(path: str, mapping: ColumnMapping, limit: int | None, block_rows: int) -> Iterator[Any]:
    """Arrow tables of (file row number, pickled raw row, read seconds), `block_rows` rows each. A row that is no
    product of its own becomes a marker (_marked): a repeated id's row a "__duplicate__" one, so the first row
    wins whichever actor embeds which (catalog_io.FirstRows, as in a single-process run)."""
    import pyarrow as pa

    seen = FirstRows()
    rows: list[int] = []
    raws: list[bytes] = []
    t0 = time.perf_counter()
    for n, row in with_variants(read_rows(Path(path), limit), mapping):
        rows.append(n)
        raws.append(pickle.dumps(_marked(row, n, mapping, seen), protocol=pickle.HIGHEST_PROTOCOL))
        if len(rows) >= block_rows:
            yield _block(pa, rows, raws, time.perf_counter() - t0)
            rows, raws = [], []
            t0 = time.perf_counter()  # the time downstream took to take the block is not reading
    if rows:
        yield _block(pa, rows, raws, time.perf_counter() - t0)


def _block(pa: Any, rows: list[int], raws: list[bytes], seconds: float) -> Any:
    return pa.table({"row": pa.array(rows, pa.int64()), "raw": pa.array(raws, pa.binary()),
                     "read_s": pa.array([seconds] + [0.0] * (len(rows) - 1), pa.float64())})


def _marked(row: dict[str, Any], n: int, m: ColumnMapping, seen: FirstRows) -> dict[str, Any]:
    """The row, or a marker for what FirstRows.classify made of it: "__continuation__", "__duplicate__" (the
    Repeat: an earlier row has its id) or "__unlisted__" (a draft's id)."""
    kind = seen.classify(row, n, m)
    if kind.kind == "continuation":
        return {"__continuation__": True}
    if kind.kind == "repeat":
        return {"__duplicate__": kind.repeat}
    if kind.kind == "unlisted":
        return {"__unlisted__": kind.pid}
    return row


def _datasource(path: Path, mapping: ColumnMapping, limit: int | None, block_rows: int) -> Any:
    """A ray.data Datasource over one catalog file (defined here: Ray is imported lazily)."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    schema = pa.schema([("row", pa.int64()), ("raw", pa.binary()), ("read_s", pa.float64())])

    class CatalogRows(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return path.stat().st_size

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            # one task per file: a file's row numbers (and duplicate ids) are counted in one pass
            meta = BlockMetadata(num_rows=None, size_bytes=path.stat().st_size, input_files=[str(path)],
                                 exec_stats=None)
            return [ReadTask(lambda: read_blocks(str(path), mapping, limit, block_rows), meta, schema=schema,
                             per_task_row_limit=per_task_row_limit)]

        def get_name(self) -> str:
            return "KuamoCatalog"

    return CatalogRows()


# -- the parse + embed stage: one actor of the pool -----------------------------------------------------------
@dataclass(frozen=True)
class EmbedSpec:
    """What each actor is built from (pickled once per actor)."""

    model_dir: str
    encoder: EncoderConfig
    numeric_attributes: tuple[str, ...]
    beta: float | None  # the image blend the driver decided for this run
    fingerprint: str  # the driver's: an actor that loads other models refuses to start
    mapping: ColumnMapping
    root: str  # the catalog directory photos are read from (absolute: actors run elsewhere)
    stored: list = field(default_factory=list)  # [ObjectRef of StoredHashes] (in a list: Ray leaves it unresolved)


class StoredHashes:
    """The content hashes a re-run may skip on, as two arrays: sorted row keys and their sha256 digests (n, 32)
    uint8. Not numpy "S32": it drops trailing zero bytes on the way out, so 1 digest in 256 (one ending in 00)
    never matched and its product was re-embedded on every re-run."""

    def __init__(self, hashes: dict[int, str]) -> None:
        keys = np.fromiter(hashes, dtype=np.int64, count=len(hashes))
        order = np.argsort(keys)
        self.keys = keys[order]
        digests = np.frombuffer(b"".join(bytes.fromhex(hashes[int(k)]) for k in keys), dtype=np.uint8)
        self.digests = digests.reshape(len(keys), 32)[order]

    def __len__(self) -> int:
        return len(self.keys)

    def matches(self, key: int, content_hash: str) -> bool:
        i = int(np.searchsorted(self.keys, key))
        return (i < len(self.keys) and int(self.keys[i]) == key
                and self.digests[i].tobytes() == bytes.fromhex(content_hash))


class CatalogEmbedder:
    """A Ray actor of the pool: loads the towers once, then turns blocks of raw rows into committed-ready rows,
    rejections and skips. Output: one row per input row (kind "ok" / "unchanged" / "rejected", a pickled
    payload; "continuation" for a row continuing the product above) plus the batch's timings on its first row."""

    def __init__(self, spec: EmbedSpec) -> None:
        import ray

        from kuamo.engine.product_encoder import ProductEncoder

        t0 = time.perf_counter()
        self.spec = spec
        self.encoder: ProductEncoder = ProductEncoder.load(Path(spec.model_dir), spec.encoder,
                                                           numeric_attributes=spec.numeric_attributes,
                                                           image_blend=spec.beta)
        if self.encoder.fingerprint != spec.fingerprint:
            raise ArtifactError(f"a Ray worker on {socket.gethostname()} loaded other models from {spec.model_dir} "
                                f"than the driver's (fingerprint {self.encoder.fingerprint} != {spec.fingerprint}); "
                                "every node needs the same model files at the same path", field="model_dir")
        self.stored: StoredHashes | None = ray.get(spec.stored[0]) if spec.stored else None
        self.load_s = time.perf_counter() - t0
        self.name = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"  # node:process
        self.first = True

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _fault_once()
        t0 = time.perf_counter()
        out: dict[int, tuple[str, bytes]] = {}
        todo = []
        for n, raw in zip(batch["row"].tolist(), batch["raw"], strict=True):
            kind, payload = self._check(n, pickle.loads(raw))
            if kind == "todo":
                todo.append(payload)
            else:
                out[n] = (kind, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        t1 = time.perf_counter()
        rows, bad = self._encode(todo)
        row_of = {row_key(t.product.id): t.row for t in todo}  # ids are unique here: read_blocks saw to it
        for r in rows:
            out[row_of[row_key(r.product.id)]] = ("ok", pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL))
        for b in bad:
            out[b.row] = ("rejected", pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL))
        t2 = time.perf_counter()
        order = sorted(out)
        first = np.zeros(len(order))
        if len(order):
            first[0] = 1.0
        result = {"row": np.asarray(order, dtype=np.int64),
                  "kind": np.asarray([out[n][0] for n in order], dtype=object),
                  "payload": np.asarray([out[n][1] for n in order], dtype=object),
                  "parse_s": first * (t1 - t0), "embed_s": first * (t2 - t1),
                  "embedded": first * len(todo),
                  "load_s": first * (self.load_s if self.first else 0.0),
                  "actor": np.asarray([self.name if self.first and i == 0 else "" for i in range(len(order))],
                                      dtype=object),
                  "read_s": np.zeros(len(order))}
        if "read_s" in batch:  # the read task's time rides along with its rows
            result["read_s"][: 1 if len(order) else 0] = float(np.sum(batch["read_s"]))
        self.first = False
        return result

    def _encode(self, todo: list[Pending]) -> tuple[list[StoredRow], list[Rejection]]:
        if not todo:
            return [], []
        try:
            return self.encoder.encode_rows(todo)
        except Exception:  # a row the towers choke on must not fail its batch (and the job): find it
            rows: list[StoredRow] = []
            bad: list[Rejection] = []
            for t in todo:
                try:
                    r, b = self.encoder.encode_rows([t])
                except Exception as exc:
                    r, b = [], [Rejection(row=t.row, id=t.product.id, field="product",
                                          reason=f"could not be embedded: {type(exc).__name__}: {exc}")]
                rows += r
                bad += b
            return rows, bad

    def _check(self, n: int, row: dict[str, Any]) -> tuple[str, Any]:
        """("todo", Pending) | ("unchanged", id) | ("rejected", Rejection) | ("continuation", None) | ("unlisted",
        id) for one raw row, as single-process checks it (engine/ingest.py + Engine.upsert)."""
        spec = self.spec
        if "__continuation__" in row:  # part of a product another row holds (catalog_io.RowKind)
            return "continuation", None
        if "__duplicate__" in row:
            pid, first_id, first_row, _ = row["__duplicate__"]
            return "rejected", Rejection(row=n, id=pid, field="id", reason=repeat_reason(pid, first_id, first_row))
        if "__unlisted__" in row:  # a draft: its stored product is deleted after the run (ingest.delete_unlisted)
            return "unlisted", row["__unlisted__"]
        product = None
        try:
            product, image_path = to_product(row, spec.mapping, Path(spec.root))
            image = image_path.read_bytes() if image_path is not None else None
            t = self.encoder.check_row(n, product, image)
        except RowError as exc:
            return "rejected", Rejection(row=n, id=exc.id, field=exc.field, reason=exc.reason)
        except OSError as exc:
            return "rejected", Rejection(row=n, id=None, field="image", reason=f"unreadable image: {exc}")
        except InvalidInput as exc:
            return "rejected", Rejection(row=n, id=getattr(product, "id", None), field=exc.field or "product",
                                         reason=exc.message)
        if self.stored is not None and self.stored.matches(row_key(t.product.id), t.content_hash):
            return "unchanged", t.product.id
        return "todo", t


def _fault_once() -> None:
    """Test-only: with KUAMO_RAY_FAULT_ONCE=FILE, the first actor to delete FILE dies here, like a crash."""
    marker = os.environ.get(FAULT_ONCE_ENV)
    if marker:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return
        os._exit(70)


# -- the driver -------------------------------------------------------------------------------------------------
def stored_hashes(engine: Engine, chunk: int = 20_000) -> StoredHashes:
    """The hashes that prove a product unchanged (only re-embedded ones while the catalog is stale)."""
    keys = engine.backend.keys()
    found: dict[int, str] = {}
    for start in range(0, len(keys), chunk):
        part = [int(k) for k in keys[start:start + chunk]]
        found.update(engine.provenance.fresh_hashes(engine.backend.hashes(part)))
    return StoredHashes(found)


def _plan(workers: int | None, cpus_per_worker: float | None) -> tuple[int, float, int]:
    """(workers, CPUs each, ONNX Runtime threads each) on the cluster this process is connected to. By default
    the cluster's CPUs are shared out so that every actor fits on some node (an actor that fits nowhere would
    wait for ever), with 1 CPU each when no count is given."""
    import ray

    node_cpus = [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    total = sum(node_cpus)
    if workers is None:
        workers = max(1, _capacity(node_cpus, cpus_per_worker or 1.0))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInput(f"Ray workers must be an integer >= 1, got {workers!r}", field="ray_workers")
    per = cpus_per_worker
    if per is None:  # the largest share with room for every actor: total / workers, or a node's CPUs / k
        shares = [total / workers] + [c / k for c in node_cpus for k in range(1, workers + 1)]
        per = max((x for x in shares if 0 < x <= total / workers and _capacity(node_cpus, x) >= workers),
                  default=0.0)
        if per == 0.0:
            raise InvalidInput(f"the Ray cluster has no CPUs for {workers} workers ({total:g} CPUs)",
                               field="ray_workers")
    if not per > 0:
        raise InvalidInput(f"CPUs per Ray worker must be > 0, got {per}", field="ray_workers")
    if node_cpus and _capacity(node_cpus, per) < workers:
        raise InvalidInput(f"{workers} Ray workers of {per:g} CPUs each do not fit on the cluster's nodes "
                           f"({', '.join(f'{c:g}' for c in node_cpus)} CPUs)", field="ray_workers")
    return workers, per, max(1, math.floor(per + 1e-9))


def _capacity(node_cpus: Sequence[float], per: float) -> int:
    """How many actors of `per` CPUs the nodes hold."""
    return sum(math.floor(c / per + 1e-9) for c in node_cpus)


def _actor_encoder_config(cfg: EncoderConfig, threads: int) -> EncoderConfig:
    # as many ORT threads as the actor's CPUs, not spinning: several actors share a machine's cores
    session = dataclasses.replace(cfg.session, intra_op_threads=threads, inter_op_threads=1, allow_spinning=False)
    model_dir = Path(cfg.model_dir).absolute()
    return dataclasses.replace(cfg, session=session, model_dir=model_dir)


async def aray_index_catalog(path: Path | str, engine: Engine, *, workers: int | None = None,
                             cpus_per_worker: float | None = None, gpus_per_worker: float | None = None,
                             mapping: str = "auto", limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                             progress: bool = True, image_root: Path | str | None = None, snapshot: bool = True,
                             catalog: CatalogConfig | None = None, session: RaySession | None = None,
                             start_timeout_s: float = START_TIMEOUT_S) -> RayIngestReport:
    """Ingest into an open engine on the Ray cluster this process is connected to (ray_session). Rejection.row
    is the 1-based data row (CSV) or line (JSONL), as single-process. Progress goes to stderr. Sets this
    process's Ray DataContext: no progress bars, 16 MB blocks, a bounded wait for the actors to start."""
    import ray

    if not ray.is_initialized():
        raise NotReady("connect to Ray first (engine.ray_ingest.ray_session)", field="ray")
    t_start = time.perf_counter()
    path = Path(path).absolute()  # actors run in other directories
    m, root, cfg = _check_args(path, limit, batch_rows, catalog, mapping, image_root)
    workers, per, threads = _plan(workers, cpus_per_worker)
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    report = RayIngestReport(path=str(path), mapping=m.name, address=session.address if session else "connected",
                             nodes=nodes, workers=workers, cpus_per_worker=per,
                             cluster_start_s=session.started_s if session else 0.0)
    if progress:
        say(f"ray: {report.address}, {nodes} node(s), {ray.cluster_resources().get('CPU', 0):g} CPUs; {workers} "
            f"worker(s) x {per:g} CPU ({threads} ONNX thread(s) each)")
    m = await fetch_feed_photos(engine, report, path, m, cfg, root, limit, progress)
    m = await asyncio.to_thread(gather_variations, path, m, limit)  # WooCommerce's variable products
    await start_run(engine, report, path, m, root, limit, progress)
    stored = await asyncio.to_thread(stored_hashes, engine)
    stored_ref = ray.put(stored)  # kept referenced here until the end: a restarted actor reads it again
    spec = EmbedSpec(model_dir=str(Path(engine.config.model_dir).absolute()),
                     encoder=_actor_encoder_config(engine.config.encoder, threads),
                     numeric_attributes=tuple(engine.config.numeric_attributes),
                     beta=engine.encoder.beta if engine.encoder.can_blend else None,
                     fingerprint=engine.fingerprint, mapping=m, root=str(root), stored=[stored_ref] if len(stored)
                     else [])
    total = await asyncio.to_thread(_count_rows, path, limit)
    ds = _dataset(path, m, limit, batch_rows, spec, workers, per, gpus_per_worker, start_timeout_s,
                  blocks=max(workers, math.ceil(total / batch_rows)))

    from tqdm import tqdm

    bar = tqdm(total=total, unit="rows", desc=f"index {path.name} (ray)", disable=not progress, file=sys.stderr)
    pending: list[tuple[int, StoredRow]] = []
    actors: set[str] = set()
    chunk = max(1, engine.config.upsert_chunk)

    async def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        good = await asyncio.to_thread(_drop_collisions, engine, pending, report)
        if good:
            await engine.write_rows(good)
            report.accepted += len(good)
        report.write_s += time.perf_counter() - t0
        pending.clear()

    it = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2))
    try:
        while True:
            try:
                batch = await asyncio.to_thread(next, it, None)
            except KuamoError:
                raise
            except Exception as exc:  # a failure Ray did not retry away: name it, keep what was committed
                raise RayJobFailed(f"the Ray job failed after {report.accepted} rows were committed (a re-run "
                                   f"resumes): {_reason(exc)}", field="ray") from exc
            if batch is None:
                break
            _take(batch, pending, report, actors)
            bar.update(len(batch["row"]))
            if len(pending) >= chunk:
                await flush()
        await flush()
    finally:
        bar.close()
        del stored_ref
    report.rejected.sort(key=lambda r: r.row)
    report.actor_loads = len(actors)
    await finish_run(engine, report, path, m, cfg, snapshot=snapshot, progress=progress)
    report.seconds = time.perf_counter() - t_start + report.cluster_start_s
    if progress:
        say(f"ray: {report.rows_read} rows in {report.seconds:.1f} s ({report.rows_per_s:.1f} rows/s; "
            f"{report.steady_rows_per_s:.1f} rows/s after the fixed {report.fixed_s:.1f} s of cluster start and "
            f"model loads)")
    return report


def _check_args(path: Path, limit: int | None, batch_rows: int, catalog: CatalogConfig | None, mapping: str,
                image_root: Path | str | None) -> tuple[ColumnMapping, Path, CatalogConfig]:
    if batch_rows < 1:
        raise InvalidInput(f"batch_rows must be >= 1, got {batch_rows}", field="batch_rows")
    # an unknown format fails here, not in a read task; actors run in other directories: an absolute root
    cfg, m, root = run_settings(path, limit, catalog, mapping, image_root)
    return m, root.absolute(), cfg


def _count_rows(path: Path, limit: int | None) -> int:
    """Rows to index (a counting pass, as blend_sample makes): it sizes the blocks and the progress bar."""
    return sum(1 for _ in read_rows(path, limit))


def _dataset(path: Path, m: ColumnMapping, limit: int | None, batch_rows: int, spec: EmbedSpec, workers: int,
             per: float, gpus: float | None, start_timeout_s: float, blocks: int) -> Any:
    import warnings

    import ray.data

    _quiet_ray()  # again: importing ray.data configures its loggers at INFO
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # kuamo's own bar on stderr
    ctx.print_on_execution_start = False
    ctx.wait_for_min_actors_s = int(start_timeout_s)  # actors that cannot be placed fail the job, not hang it
    # Ray joins a read task's output into blocks of up to target_max_block_size and then splits each into
    # override_num_blocks / (read tasks x size splits) pieces: about one batch each, so that one file spreads
    # over the workers (one block is one actor task). Smaller blocks also suit a small object store.
    ctx.target_max_block_size = 16 * 1024 * 1024
    # The read task reserves no CPU: it only reads text, and a reserved fraction could find no node with room
    # left beside the actors (a 2 x 1-CPU cluster with two 1-CPU actors would wait for ever).
    ds = ray.data.read_datasource(_datasource(path, m, limit, max(batch_rows, READ_BLOCK_ROWS)), num_cpus=0,
                                  override_num_blocks=blocks)
    # one batch in flight per actor: the rest wait for whichever actor is free (with Ray's default of 4, the
    # actor next to the data took a small catalog alone); a batch takes seconds, its transfer milliseconds
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts / max_task_retries only as the deprecated **ray_remote_args
        warnings.simplefilter("ignore")
        return ds.map_batches(CatalogEmbedder, fn_constructor_args=(spec,), batch_size=batch_rows,
                              batch_format="numpy",
                              compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                              num_cpus=per, num_gpus=gpus or None, max_restarts=RETRIES, max_task_retries=RETRIES)


def _take(batch: dict[str, np.ndarray], pending: list[tuple[int, StoredRow]], report: RayIngestReport,
          actors: set[str]) -> None:
    report.rows_read += len(batch["row"])
    report.read_s += float(np.sum(batch["read_s"]))
    report.parse_s += float(np.sum(batch["parse_s"]))
    report.embed_s += float(np.sum(batch["embed_s"]))
    report.embedded += int(np.sum(batch["embedded"]))
    report.actor_load_s = max(report.actor_load_s, float(np.max(batch["load_s"], initial=0.0)))
    actors.update(a for a in batch["actor"].tolist() if a)
    for n, kind, payload in zip(batch["row"].tolist(), batch["kind"].tolist(), batch["payload"], strict=True):
        obj = pickle.loads(payload)
        if kind == "ok":
            pending.append((n, obj))
        elif kind == "unchanged":
            report.unchanged += 1
        elif kind == "continuation":
            report.continuation_rows += 1
        elif kind == "unlisted":
            report.unlisted_ids.append(obj)
        else:
            report.rejected.append(obj)
            if obj.field == "id" and "appears again" in obj.reason:
                report.duplicates += 1


def _drop_collisions(engine: Engine, pending: Sequence[tuple[int, StoredRow]], report: RayIngestReport
                     ) -> list[StoredRow]:
    """Rows whose row key another stored id holds are rejected before the write, as Engine.upsert does."""
    owners = engine.backend.owners([row_key(r.product.id) for _, r in pending])
    keep = []
    for n, r in pending:
        try:
            check_owner(r.product.id, owners.get(row_key(r.product.id), r.product.id))
        except InvalidInput as exc:
            report.rejected.append(Rejection(row=n, id=r.product.id, field="id", reason=exc.message))
            continue
        keep.append(r)
    return keep


def _reason(exc: BaseException) -> str:
    """The worker's own error out of Ray's wrappers: the last line of the first message in the chain that has one
    (Ray puts the worker's traceback in it, ending with "kuamo.engine.errors.ArtifactError: ...")."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        if lines:
            return re.sub(r"^[\w.]+\.(\w+: )", r"\1", lines[-1])  # kuamo.engine.errors.X: ... -> X: ...
    return type(exc).__name__


def ray_index_catalog(path: Path | str, *, engine: Engine | None = None, config: EngineConfig | None = None,
                      address: str | None = None, object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
                      num_cpus: float | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                      **kwargs: Any) -> RayIngestReport:
    """Synchronous entry point for the CLI: checks the catalog, starts or connects Ray (ray_session), opens the
    engine from `config` when none is given, ingests, and closes what it opened."""
    if (engine is None) == (config is None):
        raise InvalidInput("give exactly one of engine or config", field="engine")
    catalog = kwargs.get("catalog")
    _check_args(Path(path).absolute(), kwargs.get("limit"), kwargs.get("batch_rows", DEFAULT_BATCH_ROWS), catalog,
                kwargs.get("mapping", "auto"), kwargs.get("image_root"))  # before a cluster starts for nothing

    with ray_session(address, num_cpus=num_cpus, object_store_mb=object_store_mb,
                     connect_timeout_s=connect_timeout_s) as session:
        async def run() -> RayIngestReport:
            from kuamo.engine.engine import Engine

            eng = engine if engine is not None else await Engine.open(config)  # type: ignore[arg-type]
            try:
                return await aray_index_catalog(path, eng, session=session, **kwargs)
            finally:
                if engine is None:
                    await eng.close()

        return asyncio.run(run())


def ray_ingest_rate(catalog: Path | str, data_dir: Path | str, model_dir: Path | str, workers: int, *,
                    address: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """For `kuamo bench scale`: ingest `catalog` into a new `data_dir` with `workers` Ray workers and return the
    rates: rows/s over the whole job, rows/s after the fixed cost, and the fixed cost (cluster start + model
    loads). Starts a private local cluster unless `address` is given (or this process is connected already)."""
    from kuamo.engine.engine import EngineConfig

    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise InvalidInput(f"{data_dir} is not empty: a rate is measured on a new catalog", field="data_dir")
    cfg = EngineConfig(model_dir=Path(model_dir), data_dir=data_dir,
                       encoder=EncoderConfig(model_dir=Path(model_dir)))
    report = ray_index_catalog(catalog, config=cfg, address=address, workers=workers, progress=False, **kwargs)
    d = report.to_dict()
    return {"workers": workers, "rows": report.rows_read, "accepted": report.accepted,
            "rejected": len(report.rejected), "seconds": round(report.seconds, 2),
            "rows_per_s": round(report.rows_per_s, 1), "steady_rows_per_s": round(report.steady_rows_per_s, 1),
            "fixed_s": round(report.fixed_s, 2), "cluster_start_s": round(report.cluster_start_s, 2),
            "actor_load_s": round(report.actor_load_s, 2), "nodes": report.nodes,
            "actors_that_embedded": report.actor_loads, "stages": d["ray"]["stages"]}
