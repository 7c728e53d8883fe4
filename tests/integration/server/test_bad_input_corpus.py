"""Bad-input corpus: malformed requests over every RPC against a real server on loopback (fake encoders,
but the real text validation, the real image decoder and the real image preprocessing).

Each case asserts the exact status code, or for per-row problems the rejection entry, and that the
message names the field at fault; every error carries a google.rpc.Status (ErrorInfo, and a BadRequest
FieldViolation with the field's path on INVALID_ARGUMENT); after every case the server still reports SERVING
and answers a good query correctly. test_bad_input_over_http sends the same cases through the HTTP/JSON gateway
(all but those that need the gRPC wire: raw protobuf bytes, cancelled calls). Unusual but valid photos
(CMYK, 16-bit, palette, animated, LA/RGBA, long strips) must succeed. Invalid UTF-8 cannot be built with
the generated classes, so those requests go as raw bytes.
"""

from __future__ import annotations

import io
import math
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import fake_catalog
from fake_encoders import FakeImageEncoder, FakeTextEncoder, word_vec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from http_stub import HttpRpcError, HttpStub, error_info, field_violations
from PIL import Image
from server_thread import ServerThread

from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import TextEncoder
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.imaging import ImagePreprocess, decode_image, preprocess
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
from kuamo.server.config import ServerConfig

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
CANCELLED = grpc.StatusCode.CANCELLED
SERVICE = "/kuamo.v1.SearchService/"
MAX_TEXT = EncoderConfig().max_text_chars
RED, BLUE = (220, 30, 30), (30, 40, 220)
OVER_MESSAGE = 16 * 1024 * 1024 + 100  # just above the server's default max_message_mb


# -- the server: fakes with the real guards -------------------------------------------------------------------
class RealChecksText(FakeTextEncoder):
    """Fake vectors, the real encoder's text validation (empty, not UTF-8, longer than max_text_chars)."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = EncoderConfig()

    def validate(self, text: object) -> str:
        return TextEncoder.validate(self, text)  # type: ignore[arg-type]


class RealPreprocessImage(FakeImageEncoder):
    """Fake vectors (the nearest named colour), after the real decoder AND the real resize/pad."""

    def encode(self, items):  # type: ignore[no-untyped-def]
        for b in items:
            preprocess(decode_image(b), ImagePreprocess())
        return super().encode(items)


def corpus_server(tmp_path_factory: pytest.TempPathFactory, **cfg: Any) -> ServerThread:
    data = tmp_path_factory.mktemp("corpus")

    async def factory() -> Engine:
        engine = Engine(EngineConfig(data_dir=data), text_encoder=RealChecksText(),
                        image_encoder=RealPreprocessImage(), batched=True)
        await engine.start()
        await engine.upsert(*fake_catalog())
        return engine

    return ServerThread(ServerConfig(data_dir=data, **cfg), factory).load()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = corpus_server(tmp_path_factory)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A second server (the cases change the catalog) with HTTP on."""
    srv = corpus_server(tmp_path_factory, http_port=0)
    yield srv
    srv.stop()


class Conn:
    def __init__(self, ch: grpc.Channel, http_port: int | None = None) -> None:
        self.ch = ch
        # over HTTP: the same calls through the gateway (health stays gRPC: the same server answers both)
        self.stub: Any = pb_grpc.SearchServiceStub(ch) if http_port is None else HttpStub(http_port, pb)
        self.health = health_pb2_grpc.HealthStub(ch)

    def raw(self, method: str, shape: str = "unary_unary", response: Any = None) -> Callable:
        """A call that sends request bytes as given (the generated classes refuse invalid UTF-8)."""
        return getattr(self.ch, shape)(SERVICE + method, request_serializer=None,
                                       response_deserializer=None if response is None else response.FromString)


OPTS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


@pytest.fixture(scope="module")
def conn(server: ServerThread) -> Iterator[Conn]:
    with grpc.insecure_channel(server.target, options=OPTS) as ch:
        yield Conn(ch)


@pytest.fixture(scope="module")
def http_conn(http_server: ServerThread) -> Iterator[Conn]:
    with grpc.insecure_channel(http_server.target, options=OPTS) as ch:
        yield Conn(ch, http_server.server.http_port)


# -- images, made here with Pillow -------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def red_png() -> bytes:
    return encode(Image.new("RGB", (24, 16), RED))


def red_jpeg() -> bytes:
    return encode(Image.new("RGB", (64, 48), RED), "JPEG", quality=90)


def png_claiming(w: int, h: int) -> bytes:
    """A valid small PNG whose IHDR (with a correct CRC) claims w x h."""
    d = bytearray(red_png())
    d[16:24] = struct.pack(">II", w, h)
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    return bytes(d)


def jpeg_claiming(w: int, h: int) -> bytes:
    d = bytearray(red_jpeg())
    sof = d.index(b"\xff\xc0")
    d[sof + 5: sof + 9] = struct.pack(">HH", h, w)
    return bytes(d)


def gif_claiming(w: int, h: int) -> bytes:
    d = bytearray(encode(Image.new("RGB", (8, 8), RED), "GIF"))
    d[6:10] = struct.pack("<HH", w, h)
    return bytes(d)


def png_bomb() -> bytes:
    """A real 8000 x 8000 (64 Mpx) 1-bit PNG of under 10 KB: a decompression bomb."""
    return encode(Image.new("1", (8000, 8000)))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, BLUE)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def palette_with_transparency() -> bytes:
    img = Image.new("RGB", (20, 20), RED).convert("P")
    return encode(img, transparency=255)  # an unused index: the photo stays red


def exif_rotated_jpeg() -> bytes:
    img = Image.new("RGB", (40, 20), RED)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    return encode(img, "JPEG", exif=exif.tobytes())


def i16_png() -> bytes:
    return encode(Image.new("I;16", (20, 20), 40000))


# -- what a good answer looks like -----------------------------------------------------------------------------
def good_search(c: Conn) -> None:
    r = c.stub.Search(pb.SearchRequest(request_id="good", query=pb.Query(text="red shirt", k=1)), timeout=10)
    assert r.request_id == "good" and r.hits[0].id == 1000 and r.hits[0].product.title == "red shirt"


def top_colour(colour: str) -> Callable[[pb.SearchResponse, Conn], None]:
    def check(r: pb.SearchResponse, c: Conn) -> None:
        assert r.hits, "no hits"
        assert r.hits[0].product.attributes["colour"].string_value == colour

    return check


def red_first_vector(r: pb.EmbedResponse, c: Conn) -> None:
    assert r.dim == 16 and len(r.vectors) == 3
    red = word_vec("red")
    red = red / float(np.linalg.norm(red))
    assert float(np.abs(np.asarray(r.vectors[0].values) - red).max()) < 1e-5  # the CMYK photo is red


def hits_any(r: pb.SearchResponse, c: Conn) -> None:
    assert r.hits


def no_hits(r: pb.SearchResponse, c: Conn) -> None:
    assert not r.hits and r.allowed == 0


def rejected(*expected: tuple[int, str], accepted: tuple[int, ...] = ()) -> Callable:
    """Upsert / RecordEvents answer: exactly these (row, field-prefix) rejections, these ids accepted; a
    rejected product must not be stored at all (nothing half-written)."""

    def check(r: Any, c: Conn) -> None:
        got = [(x.row, x.field) for x in r.rejected]
        assert len(got) == len(expected), (got, expected)
        for (row, field), x in zip(expected, r.rejected, strict=True):
            assert x.row == row and x.field.startswith(field) and x.reason, x
        if isinstance(r, pb.UpsertResponse):
            assert list(r.accepted) == list(accepted)
            for x in r.rejected:
                if x.id >= 0 and x.id not in accepted and not 1000 <= x.id < 1050:
                    with pytest.raises(grpc.RpcError) as e:
                        c.stub.GetProduct(pb.GetProductRequest(id=x.id), timeout=5)
                    assert e.value.code() == NOT_FOUND
            for pid in accepted:  # stored AND searchable by its id
                assert c.stub.GetProduct(pb.GetProductRequest(id=pid), timeout=5).id == pid
                hit = c.stub.Search(pb.SearchRequest(query=pb.Query(text="anything", filters=pb.Filters(
                    ids=[pid]))), timeout=5).hits
                assert [h.id for h in hit] == [pid]
        else:
            assert r.recorded == len(accepted)

    return check


def absent(*ids: int) -> Callable[[Any, Conn], None]:
    def check(_: Any, c: Conn) -> None:
        for pid in ids:
            with pytest.raises(grpc.RpcError) as e:
                c.stub.GetProduct(pb.GetProductRequest(id=pid), timeout=5)
            assert e.value.code() == NOT_FOUND
        s = c.stub.Stats(pb.StatsRequest(), timeout=5)
        assert s.products == s.indexed

    return check


# -- request builders ------------------------------------------------------------------------------------------
def search(**query: Any) -> Callable[[Conn], Any]:
    filters = query.pop("filters", None)
    modifiers = query.pop("modifiers", None)
    q = pb.Query(**query)
    if filters is not None:
        q.filters.CopyFrom(filters)
    if modifiers is not None:
        q.modifiers.CopyFrom(modifiers)
    return lambda c: c.stub.Search(pb.SearchRequest(query=q), timeout=10)


def search_image(data: bytes, **query: Any) -> Callable[[Conn], Any]:
    return search(image=data, k=query.pop("k", 3), **query)


def embed(**kw: Any) -> Callable[[Conn], Any]:
    return lambda c: c.stub.Embed(pb.EmbedRequest(**kw), timeout=10)


def recommend(**kw: Any) -> Callable[[Conn], Any]:
    return lambda c: c.stub.Recommend(pb.RecommendRequest(**kw), timeout=10)


def product(pid: int, title: str = "plain grey scarf", **kw: Any) -> pb.Product:
    return pb.Product(id=pid, title=title, category="Accessories/scarf", **kw)


def upsert(*msgs: pb.UpsertRequest) -> Callable[[Conn], Any]:
    return lambda c: c.stub.Upsert(iter(msgs), timeout=20)


def events(*evs: pb.Event) -> Callable[[Conn], Any]:
    return lambda c: c.stub.RecordEvents(iter(evs), timeout=10)


def raw_bytes(method: str, data: bytes, response: Any = None) -> Callable[[Conn], Any]:
    return lambda c: c.raw(method, response=response)(data, timeout=10)


def invalid_utf8(msg: Any, text: str) -> bytes:
    """`msg` serialised, with the UTF-8 of `text` (a placeholder inside one of its strings) replaced by
    as many bytes that are not UTF-8 (a lone continuation byte, an overlong form, a stray 0xff)."""
    data = msg.SerializeToString()
    needle = text.encode()
    bad = (b"\x80\xc0\xaf\xff" * len(needle))[: len(needle)]
    assert data.count(needle) == 1
    return data.replace(needle, bad)


def cancelled_stream(method: str, msgs: list[Any], after_s: float = 0.3) -> Callable[[Conn], Any]:
    """A client-streaming call that sends `msgs`, then stalls and is cancelled: the stream stops
    mid-call, without its end."""

    def call(c: Conn) -> Any:
        gate = threading.Event()

        def gen() -> Iterator[Any]:
            yield from msgs
            gate.wait(10)

        fut = getattr(c.stub, method).future(gen(), timeout=20)
        time.sleep(after_s)  # the server has read what was sent
        fut.cancel()
        gate.set()
        assert fut.cancelled()
        raise fut  # the call object is the RpcError: code CANCELLED

    return call


def cancelled_search_stream(c: Conn) -> Any:
    gate = threading.Event()

    def gen() -> Iterator[pb.SearchRequest]:
        for i in range(3):
            yield pb.SearchRequest(request_id=f"s{i}", query=pb.Query(text="blue bag", k=2))
        gate.wait(10)

    call = c.stub.SearchStream(gen(), timeout=20)
    assert next(call).request_id == "s0"
    call.cancel()
    gate.set()
    raise call


def stream_items(c: Conn) -> list[pb.SearchResponse]:
    reqs = [pb.SearchRequest(request_id="a", query=pb.Query(text="red shirt", k=1)),
            pb.SearchRequest(request_id="b", query=pb.Query(text="red", weights={"text": math.nan})),
            pb.SearchRequest(request_id="c", query=pb.Query(text="red", k=0)),
            pb.SearchRequest(request_id="d", query=pb.Query(text=" \n\t ")),
            pb.SearchRequest(request_id="e", query=pb.Query(image=b"GIF89a\x00")),
            pb.SearchRequest(request_id="f", query=pb.Query(text="blue bag", k=1))]
    return list(c.stub.SearchStream(iter(reqs), timeout=10))


def check_stream_items(out: list[pb.SearchResponse], c: Conn) -> None:
    assert [r.request_id for r in out] == list("abcdef")
    assert out[0].hits[0].product.title == "red shirt" and out[5].hits[0].product.title == "blue bag"
    for r, field in zip(out[1:5], ("weights", "k", "text", "image"), strict=True):
        assert r.error.code == INVALID.value[0] and r.error.field == field and r.error.message.startswith(field)
        assert not r.hits


def raw_stream(method: str, frames: list[bytes], response: Any) -> Callable[[Conn], Any]:
    shape = "stream_stream" if method == "SearchStream" else "stream_unary"

    def call(c: Conn) -> Any:
        out = c.raw(method, shape, response)(iter(frames), timeout=10)
        return list(out) if shape == "stream_stream" else out

    return call


def good_upsert_bytes(pid: int) -> bytes:
    return pb.UpsertRequest(product=product(pid), image=red_png()).SerializeToString()


def huge_chunks(c: Conn) -> Any:
    chunk = b"\x00" * (8 * 1024 * 1024)
    msgs = [pb.UpsertRequest(product=product(70_900), image=red_png())] + [pb.UpsertRequest(image_chunk=chunk)] * 3
    return c.stub.Upsert(iter(msgs), timeout=30)


def many_ids(n: int) -> list[int]:
    return list(range(50_000_000, 50_000_000 + n))


# -- the corpus ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    rpc: str
    call: Callable[[Conn], Any]
    code: grpc.StatusCode = INVALID
    field: str = ""  # the error message starts with it (the field at fault)
    check: Callable[[Any, Conn], None] | None = None  # for answers (rejections, results)
    valid: bool = False  # an unusual but valid request (it must succeed); the rest are malformed


def err(name: str, rpc: str, call: Callable, field: str, code: grpc.StatusCode = INVALID) -> Case:
    return Case(name, rpc, call, code, field)


def ok(name: str, rpc: str, call: Callable, check: Callable) -> Case:
    return Case(name, rpc, call, OK, "", check)


def valid(name: str, rpc: str, call: Callable, check: Callable) -> Case:
    return Case(name, rpc, call, OK, "", check, valid=True)


BIG = OVER_MESSAGE
F = pb.Filters
M = pb.Modifiers
AV = pb.AttrValue
LONG = "x" * (MAX_TEXT + 1)
U = pb.UpsertRequest

CASES: list[Case] = [
    # ---- Search: images (corrupt, truncated, empty, huge, bombs)
    err("search-image-random-bytes", "Search", search_image(bytes(range(256)) * 8), "image"),
    err("search-image-truncated-png", "Search", search_image(red_png()[:40]), "image"),
    err("search-image-truncated-jpeg", "Search", search_image(red_jpeg()[: len(red_jpeg()) // 2]), "image"),
    err("search-image-png-signature-only", "Search", search_image(b"\x89PNG\r\n\x1a\n"), "image"),
    err("search-image-png-claims-100000x100000", "Search", search_image(png_claiming(100_000, 100_000)), "image"),
    err("search-image-jpeg-claims-65000x65000", "Search", search_image(jpeg_claiming(65_000, 65_000)), "image"),
    err("search-image-gif-claims-65535x65535", "Search", search_image(gif_claiming(65_535, 65_535)), "image"),
    err("search-image-png-bomb-64mpx", "Search", search_image(png_bomb()), "image"),
    err("search-image-zero-bytes-alone", "Search", search(image=b"", k=3), "query"),
    err("search-image-over-message-limit", "Search", search_image(b"\x89PNG" + b"\x00" * BIG), "", TOO_BIG),
    # ---- Search: unusual but valid photos must succeed (and be seen as the right colour)
    valid("search-image-cmyk-jpeg", "Search", search_image(encode(Image.new("CMYK", (32, 32), (0, 220, 220, 30)),
                                                               "JPEG")), top_colour("red")),
    valid("search-image-16bit-i16", "Search", search_image(i16_png()), hits_any),
    valid("search-image-palette", "Search", search_image(encode(Image.new("RGB", (20, 20), RED).convert("P"))),
       top_colour("red")),
    valid("search-image-palette-transparency", "Search", search_image(palette_with_transparency()), top_colour("red")),
    valid("search-image-animated-gif-first-frame", "Search", search_image(animated_gif()), top_colour("red")),
    valid("search-image-la", "Search", search_image(encode(Image.new("LA", (20, 20), (10, 255)))), top_colour("black")),
    valid("search-image-rgba-opaque", "Search", search_image(encode(Image.new("RGBA", (20, 20), (*RED, 255)))),
       top_colour("red")),
    valid("search-image-rgba-transparent-is-white", "Search",
       search_image(encode(Image.new("RGBA", (20, 20), (*RED, 0)))), top_colour("white")),
    valid("search-image-1bit", "Search", search_image(encode(Image.new("1", (20, 20), 1))), top_colour("white")),
    valid("search-image-exif-rotated-jpeg", "Search", search_image(exif_rotated_jpeg()), top_colour("red")),
    valid("search-image-1x100000-strip", "Search", search_image(encode(Image.new("RGB", (1, 100_000), BLUE))),
       top_colour("blue")),
    valid("search-image-webp", "Search", search_image(encode(Image.new("RGB", (20, 20), BLUE), "WEBP")),
       top_colour("blue")),
    # ---- Search: text
    err("search-text-empty", "Search", search(text="", k=3), "query"),
    err("search-text-whitespace", "Search", search(text=" \t\n\u3000 "), "text"),
    err("search-text-overlong", "Search", search(text=LONG), "text"),
    err("search-text-over-message-limit", "Search", search(text="a" * BIG), "", TOO_BIG),
    err("search-text-invalid-utf8-raw", "Search",
        raw_bytes("Search", invalid_utf8(pb.SearchRequest(query=pb.Query(text="PLACEHOLDER")), "PLACEHOLDER")),
        "request"),
    err("search-request-id-invalid-utf8-raw", "Search",
        raw_bytes("Search", invalid_utf8(pb.SearchRequest(request_id="RID", query=pb.Query(text="red")), "RID")),
        "request"),
    err("search-garbage-bytes-raw", "Search", raw_bytes("Search", b"\xff\xff\xff\xff\x0f\x01"), "request"),
    err("search-truncated-message-raw", "Search",
        raw_bytes("Search", pb.SearchRequest(query=pb.Query(text="red shirt", k=3)).SerializeToString()[:-3]),
        "request"),
    err("search-length-prefix-overflow-raw", "Search", raw_bytes("Search", b"\x12\xff\xff\xff\xff\x7f"), "request"),
    ok("search-unknown-fields-ignored-raw", "Search",
       raw_bytes("Search", pb.SearchRequest(query=pb.Query(text="red shirt", k=1)).SerializeToString()
                 + b"\xf8\x06\x01\x82\x07\x03abc", pb.SearchResponse), top_colour("red")),
    # ---- Search: weights, targets, k and the other numbers
    err("search-weight-nan", "Search", search(text="red", weights={"text": math.nan}), "weights"),
    err("search-weight-inf", "Search", search(text="red", weights={"image": math.inf}), "weights"),
    err("search-weight-negative", "Search", search(text="red", weights={"text": -0.5}), "weights"),
    err("search-weights-all-zero", "Search", search(text="red", weights={"text": 0.0, "image": 0.0}), "weights"),
    err("search-weight-unknown-block", "Search", search(text="red", weights={"audio": 1.0}), "weights"),
    # ---- Search: the hybrid ranking's weights (score parts, 0..1) and texts that give BM25 nothing or too much
    err("search-weight-lexical-negative", "Search", search(text="red", weights={"lexical": -0.1}), "weights.lexical"),
    err("search-weight-lexical-above-range", "Search", search(text="red", weights={"lexical": 5.0}),
        "weights.lexical"),
    err("search-weight-lexical-nan", "Search", search(text="red", weights={"lexical": math.nan}), "weights.lexical"),
    err("search-weight-understanding-inf", "Search", search(text="red", weights={"understanding": math.inf}),
        "weights.understanding"),
    valid("search-weight-lexical-zero", "Search", search(text="red shirt", k=3, weights={"lexical": 0.0}),
          top_colour("red")),
    valid("search-text-stop-words-only", "Search", search(text="the of and with", k=3), hits_any),
    valid("search-text-punctuation-only", "Search", search(text="!!! ... ??? -- ，。", k=3), hits_any),
    valid("search-text-10k-characters", "Search", search(text=("red shirt " * 1000)[:10_000], k=3), hits_any),
    valid("search-text-mixed-scripts", "Search", search(text="red 红色 рубашка シャツ 셔츠 🙂 shirt", k=3), hits_any),
    err("search-target-undeclared", "Search", search(text="red", targets={"year": 2012.0}), "targets"),
    err("search-rating-target-nan", "Search", search(rating=math.nan), "rating"),
    err("search-rating-target-above-5", "Search", search(text="red", rating=7.0), "rating"),
    err("search-price-target-negative", "Search", search(price=-5.0), "price"),
    err("search-price-target-inf", "Search", search(text="red", price=math.inf), "price"),
    err("search-k-zero", "Search", search(text="red", k=0), "k"),
    err("search-k-negative", "Search", search(text="red", k=-7), "k"),
    err("search-k-int32-max", "Search", search(text="red", k=2**31 - 1), "k"),
    err("search-nprobe-negative", "Search", search(text="red", nprobe=-1), "nprobe"),
    err("search-rerank-factor-huge", "Search", search(text="red", rerank_factor=2**31 - 1), "rerank_factor"),
    err("search-user-weight-nan", "Search", search(text="red", user_id="u1", user_weight=math.nan), "user_weight"),
    err("search-user-id-overlong", "Search", search(text="red", user_id="u" * 257), "user_id"),
    err("search-user-id-whitespace", "Search", search(text="red", user_id="   "), "user_id"),
    # ---- Search: filters and modifiers
    # an attribute or category the catalog never had is an error naming the nearest ones, not OK with 0 hits
    err("search-filter-unknown-attribute-name", "Search",
        search(text="red", filters=F(attributes={"material": AV(string_value="silk")})), "filters.attributes"),
    err("search-filter-misspelled-attribute-name", "Search",
        search(text="red", filters=F(attributes={"colur": AV(string_value="red")})), "filters.attributes"),
    err("search-filter-unknown-category", "Search",
        search(text="red", filters=F(category_prefix="Apparel/shirtz")), "filters.category_prefix"),
    err("search-filter-attribute-name-injection", "Search",
        search(text="red", filters=F(attributes={'colour") OR 1=1 --': AV(string_value="x")})), "filters.attributes"),
    err("search-filter-attribute-name-65-chars", "Search",
        search(text="red", filters=F(attributes={"a" * 65: AV(int_value=1)})), "filters.attributes"),
    err("search-filter-attribute-value-nan", "Search",
        search(text="red", filters=F(attributes={"colour": AV(double_value=math.nan)})), "filters.attributes"),
    err("search-filter-empty-string-key", "Search", search(text="red", filters=F(keys=[""])), "filters.keys"),
    err("search-filter-photo-colour-not-in-palette", "Search",
        search(text="red", filters=F(attributes={"photo_colour": AV(string_value="uv")})), "filters.attributes"),
    err("search-filter-photo-colour-number", "Search",
        search(text="red", filters=F(attributes={"photo_colour": AV(int_value=3)})), "filters.attributes"),
    err("search-filter-key-over-256-chars", "Search", search(text="red", filters=F(keys=["x" * 257])),
        "filters.keys"),
    err("search-filter-price-range-inverted", "Search", search(text="red", filters=F(price_min=90.0, price_max=5.0)),
        "filters.price_min"),
    err("search-filter-price-min-negative", "Search", search(text="red", filters=F(price_min=-1.0)),
        "filters.price_min"),
    err("search-filter-price-max-nan", "Search", search(text="red", filters=F(price_max=math.nan)),
        "filters.price_max"),
    err("search-filter-min-rating-above-5", "Search", search(text="red", filters=F(min_rating=6.0)),
        "filters.min_rating"),
    err("search-filter-ids-negative", "Search", search(text="red", filters=F(ids=[1000, -4])), "filters.ids"),
    err("search-filter-ids-too-many", "Search", search(text="red", filters=F(ids=many_ids(100_001))), "filters.ids"),
    err("search-filter-brand-empty-string", "Search", search(text="red", filters=F(brands=["acme", ""])),
        "filters.brands"),
    # SQL wildcards are no category of the catalog: refused by name (the store matches them literally too)
    err("search-filter-category-wildcards-are-literal", "Search",
        search(text="red", filters=F(category_prefix="%_/")), "filters.category_prefix"),
    err("search-modifier-rating-factor-nan", "Search", search(text="red", modifiers=M(rating_factor=math.nan)),
        "modifiers.rating_factor"),
    err("search-modifier-rating-factor-below-minus-1", "Search", search(text="red", modifiers=M(rating_factor=-2)),
        "modifiers.rating_factor"),
    err("search-modifier-popularity-weight-inf", "Search",
        search(text="red", modifiers=M(popularity_weight=-math.inf)), "modifiers.popularity_weight"),
    err("search-modifier-popularity-field-bad-name", "Search",
        search(text="red", modifiers=M(popularity_weight=1, popularity_field="pop ularity")),
        "modifiers.popularity_field"),
    err("search-modifier-brand-boost-huge", "Search", search(text="red", modifiers=M(brand_boosts={"acme": 1e9})),
        "modifiers.brand_boosts"),
    err("search-collapse-bad-name", "Search", search(text="red", collapse="item group"), "collapse"),
    err("search-collapse-overlong", "Search", search(text="red", collapse="g" * 300), "collapse"),
    # ---- SearchStream
    ok("stream-bad-items-answered-inline", "SearchStream", stream_items, check_stream_items),
    err("stream-corrupt-message-ends-the-call-raw", "SearchStream",
        raw_stream("SearchStream", [pb.SearchRequest(request_id="a", query=pb.Query(text="red")).SerializeToString(),
                                    b"\x0a\xff\xff"], pb.SearchResponse), "request"),
    err("stream-invalid-utf8-raw", "SearchStream",
        raw_stream("SearchStream", [invalid_utf8(pb.SearchRequest(query=pb.Query(text="PLACE")), "PLACE")],
                   pb.SearchResponse), "request"),
    err("stream-message-over-limit", "SearchStream",
        lambda c: list(c.stub.SearchStream(iter([pb.SearchRequest(query=pb.Query(text="a" * BIG))]), timeout=10)),
        "", TOO_BIG),
    err("stream-cancelled-midway", "SearchStream", cancelled_search_stream, "", CANCELLED),
    # ---- Embed
    err("embed-texts-and-images", "Embed", embed(texts=["red"], images=[red_png()]), "images"),
    err("embed-nothing", "Embed", embed(), "texts"),
    err("embed-257-texts", "Embed", embed(texts=["red"] * 257), "texts"),
    err("embed-unknown-kind", "Embed", embed(texts=["red"], kind="passage"), "kind"),
    err("embed-second-text-blank", "Embed", embed(texts=["red", "  "]), "texts[1]"),
    err("embed-text-overlong", "Embed", embed(texts=[LONG]), "texts[0]"),
    err("embed-text-invalid-utf8-raw", "Embed",
        raw_bytes("Embed", invalid_utf8(pb.EmbedRequest(texts=["ok", "PLACEHOLDER"]), "PLACEHOLDER")), "request"),
    err("embed-image-zero-bytes", "Embed", embed(images=[b""]), "image"),
    err("embed-image-corrupt-among-good", "Embed", embed(images=[red_png(), b"\x89PNG\r\n\x1a\n\x00\x00garbage"]),
        "image"),
    err("embed-image-bomb-header", "Embed", embed(images=[png_claiming(100_000, 100_000)]), "image"),
    err("embed-image-over-message-limit", "Embed", embed(images=[b"\xff\xd8" + b"\x00" * BIG]), "", TOO_BIG),
    valid("embed-image-cmyk-and-i16-and-gif", "Embed",
          embed(images=[encode(Image.new("CMYK", (16, 16), (0, 220, 220, 30)), "JPEG"), i16_png(), animated_gif()]),
          red_first_vector),
    # ---- Recommend
    err("recommend-k-zero", "Recommend", recommend(k=0, positives=[pb.Example(id=1000)]), "k"),
    err("recommend-k-negative", "Recommend", recommend(k=-1), "k"),
    err("recommend-unknown-positive", "Recommend", recommend(positives=[pb.Example(id=987_654_321)]), "positives",
        NOT_FOUND),
    err("recommend-unknown-negative", "Recommend",
        recommend(positives=[pb.Example(id=1000)], negatives=[pb.Example(id=987_654_321)]), "negatives", NOT_FOUND),
    err("recommend-duplicate-positive", "Recommend", recommend(positives=[pb.Example(id=1000), pb.Example(id=1000)]),
        "positives"),
    err("recommend-weight-nan", "Recommend", recommend(positives=[pb.Example(id=1000, weight=math.nan)]),
        "positives"),
    err("recommend-weight-overflowing", "Recommend", recommend(positives=[pb.Example(id=1000, weight=3e38)]),
        "positives"),
    err("recommend-negative-weight-below-zero", "Recommend",
        recommend(positives=[pb.Example(id=1000)], negatives=[pb.Example(id=1001, weight=-2.0)]), "negatives"),
    err("recommend-user-id-overlong", "Recommend", recommend(user_id="u" * 300), "user_id"),
    err("recommend-filter-inverted-prices", "Recommend",
        recommend(positives=[pb.Example(id=1000)], filters=F(price_min=50.0, price_max=1.0)), "filters.price_min"),
    err("recommend-modifier-boost-nan", "Recommend",
        recommend(positives=[pb.Example(id=1000)], modifiers=M(brand_boosts={"acme": math.nan})),
        "modifiers.brand_boosts"),
    err("recommend-user-id-invalid-utf8-raw", "Recommend",
        raw_bytes("Recommend", invalid_utf8(pb.RecommendRequest(user_id="SHOPPER"), "SHOPPER")), "request"),
    # ---- Upsert: per-row problems come back as rejections and nothing of the row is stored
    ok("upsert-duplicate-ids-in-one-stream", "Upsert",
       upsert(U(product=product(70_001)), U(product=product(70_001, "other")), U(product=product(70_001, "third"))),
       rejected((1, "id"), (2, "id"), accepted=(70_001,))),
    ok("upsert-negative-id", "Upsert", upsert(U(product=product(-5))), rejected((0, "id"))),
    ok("upsert-price-nan", "Upsert", upsert(U(product=product(70_002, price=math.nan))), rejected((0, "price"))),
    ok("upsert-price-negative-among-good", "Upsert",
       upsert(U(product=product(70_003)), U(product=product(70_004, price=-1.0)), U(product=product(70_005))),
       rejected((1, "price"), accepted=(70_003, 70_005))),
    ok("upsert-rating-above-5", "Upsert", upsert(U(product=product(70_006, rating=5.5))), rejected((0, "rating"))),
    ok("upsert-attribute-without-kind", "Upsert", upsert(U(product=product(70_007, attributes={"fit": AV()}))),
       rejected((0, "product.attributes.fit"))),
    ok("upsert-attribute-inf", "Upsert",
       upsert(U(product=product(70_008, attributes={"weight": AV(double_value=math.inf)}))),
       rejected((0, "attributes"))),
    ok("upsert-corrupt-photo", "Upsert", upsert(U(product=product(70_009), image=b"JFIF not really")),
       rejected((0, "image"))),
    ok("upsert-bomb-photo", "Upsert", upsert(U(product=product(70_010), image=png_bomb())), rejected((0, "image"))),
    ok("upsert-truncated-photo-among-good", "Upsert",
       upsert(U(product=product(70_011), image=red_jpeg()[:300]), U(product=product(70_012), image=red_png())),
       rejected((0, "image"), accepted=(70_012,))),
    ok("upsert-title-overlong", "Upsert",
       upsert(U(product=product(70_013, title=LONG)), U(product=product(70_014))),
       rejected((0, "title"), accepted=(70_014,))),
    valid("upsert-valid-unusual-photos", "Upsert",
       upsert(U(product=product(70_020), image=encode(Image.new("CMYK", (16, 16), (0, 220, 220, 30)), "JPEG")),
              U(product=product(70_021), image=i16_png()), U(product=product(70_022), image=animated_gif()),
              U(product=product(70_023), image=encode(Image.new("LA", (9, 9), (100, 50)))),
              U(product=product(70_024), image=encode(Image.new("RGB", (100_000, 1), RED)))),
       rejected(accepted=(70_020, 70_021, 70_022, 70_023, 70_024))),
    err("upsert-orphan-chunk-after-nothing", "Upsert", upsert(U(image_chunk=b"\x00" * 10)), "image_chunk"),
    err("upsert-message-without-product", "Upsert", upsert(U(product=product(70_030)), U()), "product"),
    err("upsert-photo-chunks-over-image-limit", "Upsert", huge_chunks, "image_chunk"),
    err("upsert-single-message-over-limit", "Upsert", upsert(U(product=product(70_031), image=b"\x00" * BIG)), "",
        TOO_BIG),
    err("upsert-corrupt-message-raw", "Upsert",
        raw_stream("Upsert", [good_upsert_bytes(70_032), b"\x0a\x80"], pb.UpsertResponse), "request"),
    err("upsert-title-invalid-utf8-raw", "Upsert",
        raw_stream("Upsert", [invalid_utf8(pb.UpsertRequest(product=product(70_033, "TITLEXX")), "TITLEXX")],
                   pb.UpsertResponse), "request"),
    err("upsert-cancelled-after-three-products", "Upsert",
        cancelled_stream("Upsert", [U(product=product(70_040 + i), image=red_png()) for i in range(3)]), "",
        CANCELLED),
    # ---- Delete
    err("delete-negative-id", "Delete", lambda c: c.stub.Delete(pb.DeleteRequest(ids=[70_001, -1]), timeout=10),
        "ids"),
    ok("delete-unknown-ids", "Delete",
       lambda c: c.stub.Delete(pb.DeleteRequest(ids=[2**63 - 1, 987_654_321]), timeout=10),
       lambda r, c: r.deleted == 0 or pytest.fail(str(r))),
    ok("delete-150k-unknown-ids", "Delete", lambda c: c.stub.Delete(pb.DeleteRequest(ids=many_ids(150_000)),
                                                                     timeout=20),
       lambda r, c: r.deleted == 0 or pytest.fail(str(r))),
    err("delete-empty-string-key", "Delete", lambda c: c.stub.Delete(pb.DeleteRequest(keys=[""]), timeout=10), "ids"),
    err("delete-key-over-256-chars", "Delete",
        lambda c: c.stub.Delete(pb.DeleteRequest(keys=["k" * 300]), timeout=10), "ids"),
    ok("delete-unknown-string-keys", "Delete",
       lambda c: c.stub.Delete(pb.DeleteRequest(keys=["no-such-sku", "c2d766ca982eca83"]), timeout=10),
       lambda r, c: r.deleted == 0 or pytest.fail(str(r))),
    err("delete-garbage-raw", "Delete", raw_bytes("Delete", b"\x0a\x05\x01\x02"), "request"),
    # ---- GetProduct
    err("get-unknown-id", "GetProduct", lambda c: c.stub.GetProduct(pb.GetProductRequest(id=987_654_321),
                                                                    timeout=10), "id", NOT_FOUND),
    err("get-negative-id", "GetProduct", lambda c: c.stub.GetProduct(pb.GetProductRequest(id=-1), timeout=10), "id"),
    err("get-key-over-256-chars", "GetProduct",
        lambda c: c.stub.GetProduct(pb.GetProductRequest(key="k" * 257), timeout=10), "key"),
    err("get-key-with-control-chars", "GetProduct",
        lambda c: c.stub.GetProduct(pb.GetProductRequest(key="a\nb"), timeout=10), "key"),
    err("get-unknown-string-key", "GetProduct",
        lambda c: c.stub.GetProduct(pb.GetProductRequest(key="c2d766ca982eca8304150849735ffef9"), timeout=10), "id",
        NOT_FOUND),
    err("get-truncated-varint-raw", "GetProduct", raw_bytes("GetProduct", b"\x08\xff\xff"), "request"),
    # ---- Stats
    err("stats-garbage-raw", "Stats", raw_bytes("Stats", b"\x0b\x0c\x0d"), "request"),
    ok("stats-unknown-fields-ignored-raw", "Stats", raw_bytes("Stats", b"\x08\x01\x12\x02hi", pb.StatsResponse),
       lambda r, c: (r.products >= 50 and r.products == r.indexed) or pytest.fail(str(r))),
    # ---- RecordEvents: per-event problems are rejections
    ok("events-unknown-kind", "RecordEvents", events(pb.Event(user_id="u1", product_id=1000, kind="wishlist")),
       rejected((0, "kind"))),
    ok("events-unknown-product", "RecordEvents", events(pb.Event(user_id="u1", product_id=987_654, kind="view")),
       rejected((0, "product_id"))),
    ok("events-negative-product", "RecordEvents", events(pb.Event(user_id="u1", product_id=-3, kind="view")),
       rejected((0, "product_id"))),
    ok("events-empty-user", "RecordEvents", events(pb.Event(user_id="", product_id=1000, kind="view")),
       rejected((0, "user_id"))),
    ok("events-timestamp-nan", "RecordEvents",
       events(pb.Event(user_id="u1", product_id=1000, kind="view", timestamp=math.nan)), rejected((0, "ts"))),
    ok("events-timestamp-far-future-among-good", "RecordEvents",
       events(pb.Event(user_id="u2", product_id=1000, kind="view"),
              pb.Event(user_id="u2", product_id=1001, kind="click", timestamp=4e9),
              pb.Event(user_id="u2", product_id=1002, kind="purchase")),
       rejected((1, "ts"), accepted=(1000, 1002))),
    err("events-invalid-utf8-user-raw", "RecordEvents",
        raw_stream("RecordEvents", [invalid_utf8(pb.Event(user_id="USERID", product_id=1000, kind="view"), "USERID")],
                   pb.RecordEventsResponse), "request"),
    err("events-cancelled-midway", "RecordEvents",
        cancelled_stream("RecordEvents", [pb.Event(user_id="cancel-me", product_id=1000, kind="view")] * 2), "",
        CANCELLED),
    # ---- ForgetUser
    err("forget-empty-user", "ForgetUser", lambda c: c.stub.ForgetUser(pb.ForgetUserRequest(), timeout=10),
        "user_id"),
    err("forget-overlong-user", "ForgetUser",
        lambda c: c.stub.ForgetUser(pb.ForgetUserRequest(user_id="x" * 257), timeout=10), "user_id"),
    err("forget-invalid-utf8-raw", "ForgetUser",
        raw_bytes("ForgetUser", invalid_utf8(pb.ForgetUserRequest(user_id="SOMEONE"), "SOMEONE")), "request"),
    ok("forget-cancelled-stream-user-recorded-nothing", "ForgetUser",
       lambda c: c.stub.ForgetUser(pb.ForgetUserRequest(user_id="cancel-me"), timeout=10),
       lambda r, c: r.events_deleted == 0 or pytest.fail(str(r))),
]

# follow-up checks that need the state a case left behind
AFTER: dict[str, Callable[[Conn], None]] = {
    "upsert-cancelled-after-three-products": lambda c: absent(70_040, 70_041, 70_042)(None, c),
    "upsert-corrupt-message-raw": lambda c: absent(70_032)(None, c),
    "upsert-message-without-product": lambda c: absent(70_030)(None, c),
    "upsert-photo-chunks-over-image-limit": lambda c: absent(70_900)(None, c),
}


def test_corpus_is_big_distinct_and_covers_every_rpc() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    malformed = [c for c in CASES if not c.valid]
    assert len(malformed) >= 60, len(malformed)
    rpcs = set(pb.DESCRIPTOR.services_by_name["SearchService"].methods_by_name)
    assert {c.rpc for c in CASES} == rpcs


def check_rich_status(case: Case, code: grpc.StatusCode, status: Any) -> None:
    """ErrorInfo on every error; on INVALID_ARGUMENT a FieldViolation whose path holds the case's field (the
    path runs from the request message: Search's "k" is "query.k")."""
    info = error_info(status)
    assert info is not None and info.domain == "kuamo.dev" and info.reason.isupper(), status
    if code == INVALID:
        fields = field_violations(status)
        assert len(fields) == 1 and case.field in fields[0], (fields, case.field)
        if case.rpc in ("Search", "SearchStream") and fields[0] != "request":
            assert fields[0].startswith("query"), fields


def after_case(case: Case, c: Conn, answer: Any) -> None:
    if case.check is not None:
        case.check(answer, c)
    if case.name in AFTER:
        AFTER[case.name](c)
    # the server is still SERVING and answers a good request correctly
    status = c.health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    good_search(c)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(conn: Conn, case: Case) -> None:
    try:
        answer, code, details, status = case.call(conn), OK, "", None
    except grpc.RpcError as exc:
        answer, code, details = None, exc.code(), exc.details() or ""
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert code == case.code, f"{case.name}: {code} {details}"
    if code == TOO_BIG:
        assert "larger than max" in details, details  # refused by gRPC itself, before kuamo sees it
    elif code == CANCELLED:
        assert "cancel" in details.lower(), details
    elif code != OK:
        assert details.startswith(case.field), details
        assert "internal error" not in details
        check_rich_status(case, code, status)
    after_case(case, conn, answer)


HTTP_CASES = [c for c in CASES if not c.name.endswith("-raw") and c.code != CANCELLED]
# over HTTP a client stream is one body: 24 MiB of photo chunks pass gRPC's per-message limit but not the body's
HTTP_CODE = {"upsert-photo-chunks-over-image-limit": TOO_BIG}


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.name for c in HTTP_CASES])
def test_bad_input_over_http(http_conn: Conn, case: Case) -> None:
    """The same case as JSON: a 4xx whose body carries the same status (a FieldViolation for each malformed
    request), never a 5xx, and the next good request is answered."""
    try:
        answer, code = case.call(http_conn), OK
    except HttpRpcError as exc:
        answer, code = None, exc.code()
        assert 400 <= exc.http_status < 500, exc.error
        if code == TOO_BIG:
            assert exc.http_status == 413 and exc.error["field"] == "body", exc.error
        else:
            assert exc.details().startswith(case.field) and "internal error" not in exc.details(), exc.error
            check_rich_status(case, code, exc.status())
    assert code == HTTP_CODE.get(case.name, case.code), f"{case.name}: {code}"
    after_case(case, http_conn, answer)


def test_over_http_skips_only_what_needs_the_grpc_wire() -> None:
    assert len(HTTP_CASES) >= 80 and len([c for c in HTTP_CASES if c.code == INVALID]) >= 60
