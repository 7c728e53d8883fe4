"""The reliability fuzzer's requests: for every RPC, valid messages, messages built from hostile field values,
valid messages with their bytes mutated, random bytes; real photos, mutated photos and odd or hostile images."""

from __future__ import annotations

import io
import math
import random
import struct
import time
import zlib
from typing import Any

from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb

SERVICE = "/kuamo.v1.SearchService/"
RPCS: dict[str, tuple[str, Any]] = {  # name -> (call shape, response message)
    "Search": ("unary_unary", pb.SearchResponse), "SearchStream": ("stream_stream", pb.SearchResponse),
    "Embed": ("unary_unary", pb.EmbedResponse), "Recommend": ("unary_unary", pb.SearchResponse),
    "Upsert": ("stream_unary", pb.UpsertResponse), "Delete": ("unary_unary", pb.DeleteResponse),
    "GetProduct": ("unary_unary", pb.Product), "Stats": ("unary_unary", pb.StatsResponse),
    "RecordEvents": ("stream_unary", pb.RecordEventsResponse), "ForgetUser": ("unary_unary", pb.ForgetUserResponse),
}


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
