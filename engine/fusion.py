"""One fused vector per product: the concatenation of L2-normalised modality blocks.

A product stores each block normalised (missing block = zeros). A query builds the same layout from what
it has and multiplies each normalised block by its weight, so
    <query, product> = sum_b  w_b * cos(query_b, product_b)
is exactly the weighted sum of per-modality similarities (a weight is what its block's cosine counts in the score;
nothing is renormalised, so only the ratios between weights change an order), and one inner-product index serves
every weighting (text only, image only, text + image, "like this photo but cheaper", rating search).

Scalars (rating, price, declared numeric attributes) become 2-d unit vectors on an arc:
    t = clip((f(v) - lo) / (hi - lo), 0, 1),  theta = t * pi / 2,  block = (cos theta, sin theta)
with f = log10 for log-scaled fields (price). Then cos(query_b, product_b) = cos(theta_q - theta_p):
1 at equal values, falling smoothly to 0 at opposite ends of the range: "rated about 4.5" and
"around 300" are nearest-neighbour questions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kuamo.engine.errors import InvalidInput, names, shown


@dataclass(frozen=True)
class Block:
    name: str
    dim: int
    kind: str  # "vector" | "scalar"
    lo: float = 0.0
    hi: float = 1.0
    log: bool = False

    def encode_scalar(self, value: float) -> np.ndarray:
        v = float(value)
        if not math.isfinite(v):
            raise InvalidInput(f"{self.name} must be a finite number, got {shown(value)}", field=self.name)
        if self.log:
            if v < 0:
                raise InvalidInput(f"{self.name} must be >= 0 on its log scale, got {v}", field=self.name)
            # 0 (a free item) sits at the bottom of the range like anything cheaper than 10**lo
            v = math.log10(v) if v > 0 else self.lo
        t = min(max((v - self.lo) / (self.hi - self.lo), 0.0), 1.0)
        theta = t * math.pi / 2
        return np.asarray([math.cos(theta), math.sin(theta)], dtype=np.float32)


def parse_numeric(spec: str) -> Block:
    """'name:lo:hi' or 'name:lo:hi:log' -> a scalar block."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[0]:
        raise InvalidInput(f"numeric attribute {spec!r} needs a range: write 'name:lo:hi' or 'name:lo:hi:log'",
                           field="numeric_attributes")
    try:
        lo, hi = float(parts[1]), float(parts[2])
    except ValueError as exc:
        raise InvalidInput(f"numeric attribute {spec!r}: lo and hi must be numbers",
                           field="numeric_attributes") from exc
    log = len(parts) == 4 and parts[3] == "log"
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    if not hi > lo:
        raise InvalidInput(f"numeric attribute {spec!r}: hi must exceed lo", field="numeric_attributes")
    return Block(parts[0], 2, "scalar", lo, hi, log)


@dataclass(frozen=True)
class FusionLayout:
    blocks: tuple[Block, ...]

    @classmethod
    def default(cls, *, text_dim: int = 384, image_dim: int = 384,
                numeric_attributes: Sequence[str] = ()) -> FusionLayout:
        blocks = [Block("image", image_dim, "vector"), Block("text", text_dim, "vector"),
                  Block("rating", 2, "scalar", 0.0, 5.0), Block("price", 2, "scalar", 0.0, 6.0, log=True)]
        blocks += [parse_numeric(s) for s in numeric_attributes]
        names = [b.name for b in blocks]
        if len(set(names)) != len(names):
            raise InvalidInput(f"duplicate block names in {names}", field="numeric_attributes")
        return cls(tuple(blocks))

    @property
    def dim(self) -> int:
        return sum(b.dim for b in self.blocks)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for b in self.blocks:
            out[b.name] = slice(start, start + b.dim)
            start += b.dim
        return out

    def _block_vec(self, b: Block, value: Any) -> np.ndarray | None:
        if value is None:
            return None
        if b.kind == "scalar":
            return b.encode_scalar(value)
        v = np.asarray(value, dtype=np.float32).reshape(-1)
        if v.shape[0] != b.dim:
            raise InvalidInput(f"{b.name} vector has {v.shape[0]} dims, the layout expects {b.dim}", field=b.name)
        n = float(np.linalg.norm(v))
        if not math.isfinite(n) or n == 0:
            raise InvalidInput(f"{b.name} vector is zero or not finite", field=b.name)
        return v / n

    def product_vector(self, blocks: Mapping[str, Any]) -> np.ndarray:
        unknown = set(blocks) - set(self.names)
        if unknown:
            raise InvalidInput(f"unknown blocks {sorted(unknown)}; layout has {self.names}", field="blocks")
        out = np.zeros(self.dim, dtype=np.float32)
        sl = self.slices()
        for b in self.blocks:
            v = self._block_vec(b, blocks.get(b.name))
            if v is not None:
                out[sl[b.name]] = v
        return out

    def query_vector(self, blocks: Mapping[str, Any], weights: Mapping[str, float]) -> np.ndarray:
        """Normalised query blocks times their weights. Weights must be finite and >= 0, name known
        blocks, and not all be zero over the blocks the query has."""
        for name, w in weights.items():
            if name not in self.names:
                raise InvalidInput(f"unknown weight {name!r}; the blocks are {names(self.names)}", field="weights")
            if not isinstance(w, int | float) or not math.isfinite(float(w)) or float(w) < 0:
                raise InvalidInput(f"weight {name!r} must be a finite number >= 0, got {shown(w)}", field="weights")
        present = [n for n in self.names if blocks.get(n) is not None]
        if not present:
            raise InvalidInput("the query has nothing to search with (text, image, rating, price or a target)",
                               field="query")
        if sum(float(weights.get(n, 0.0)) for n in present) <= 0:
            raise InvalidInput(f"all weights are zero for the query's blocks ({names(present)})", field="weights")
        out = np.zeros(self.dim, dtype=np.float32)
        sl = self.slices()
        for b in self.blocks:
            v = self._block_vec(b, blocks.get(b.name))
            if v is not None:
                out[sl[b.name]] = v * float(weights.get(b.name, 0.0))
        return out

    def contributions(self, query_vec: np.ndarray, product_vec: np.ndarray) -> dict[str, float]:
        """Per-block inner products: they sum to the fused score (the explanation of a hit)."""
        q, p = np.asarray(query_vec, dtype=np.float32), np.asarray(product_vec, dtype=np.float32)
        return {name: float(q[s] @ p[s]) for name, s in self.slices().items() if np.any(q[s])}

    def to_dict(self) -> dict:
        return {"blocks": [{"name": b.name, "dim": b.dim, "kind": b.kind, "lo": b.lo, "hi": b.hi, "log": b.log}
                           for b in self.blocks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FusionLayout:
        return cls(tuple(Block(x["name"], int(x["dim"]), x["kind"], float(x.get("lo", 0.0)), float(x.get("hi", 1.0)),
                               bool(x.get("log", False))) for x in d["blocks"]))
