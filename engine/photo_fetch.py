"""Photos a feed names by URL (Google Merchant Center's image_link, a marketplace's CDN links), downloaded once
into a folder inside the catalog directory so that every reader (single process, Ray actors, the blend
sample, `kuamo align`) reads them as local files through the same checks.

One file per URL, named by its SHA-256 (`photo_name`): a second run finds it and downloads nothing, unless
asked to revalidate (--refetch-photos: a conditional GET with the stored ETag / Last-Modified in `<name>.meta`;
a merchant may replace the photo behind an unchanged URL). A URL that fails leaves `<name>.failed` holding the
reason, so its row is rejected with that reason, and the next run tries it again; a stored photo whose
revalidation fails is kept. http and https only; a body larger than the photo limit is cut off, not stored.
Standard library only (urllib): the serve-only install carries no HTTP client of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

from kuamo.engine.errors import InvalidInput
from kuamo.engine.imaging import is_image

FETCHED_DIR = "kuamo-photos"  # inside the catalog directory: Ray nodes that see the catalog see its photos
FAILED_SUFFIX = ".failed"
META_SUFFIX = ".meta"  # the photo's ETag / Last-Modified, for --refetch-photos
TIMEOUT_S = 20.0  # per attempt: connect and each read
ATTEMPTS = 3  # a timeout, a reset connection, HTTP 429 or 5xx are tried again; anything else is final
BACKOFF_S = 0.5  # before attempt 2; doubled before each later one
RETRY_AFTER_MAX_S = 30.0  # a throttling CDN's Retry-After is honoured up to this
USER_AGENT = "kuamo-photo-fetch/1 (+https://github.com/kuamo)"
_CHUNK = 1 << 16


def photo_name(url: str) -> str:
    """The file a URL's photo is stored under (hex SHA-256 of the URL as written, surrounding spaces dropped)."""
    return hashlib.sha256(url.strip().encode("utf-8")).hexdigest()


def fetch_failure(folder: Path, url: str) -> str | None:
    """Why the last fetch of `url` into `folder` failed, or None (fetched, or never tried)."""
    failed = folder / (photo_name(url) + FAILED_SUFFIX)
    try:
        return failed.read_text(encoding="utf-8").strip() or "unknown failure"
    except FileNotFoundError:
        return None


@dataclass
class FetchSummary:
    urls: int = 0  # distinct photo URLs in the rows read
    fetched: int = 0  # downloaded on this run
    cached: int = 0  # there already from an earlier run
    failed: int = 0
    updated: int = 0  # --refetch-photos: stored photos the server had changed, downloaded again
    kept: int = 0  # --refetch-photos: stored photos kept because asking again failed
    bytes: int = 0  # downloaded on this run
    seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)  # reason (status / error kind) -> URLs

    def to_dict(self) -> dict:
        return {"urls": self.urls, "fetched": self.fetched, "cached": self.cached, "failed": self.failed,
                "updated": self.updated, "kept": self.kept, "bytes": self.bytes, "seconds": round(self.seconds, 2),
                "failures": dict(self.failures)}


class _Refused(Exception):
    """A final failure: no further attempt."""


def _download(url: str, max_bytes: int, timeout_s: float, validators: dict[str, str] | None = None
              ) -> tuple[bytes | None, dict[str, str]]:
    """(the photo, its validators (ETag, Last-Modified)), or (None, {}) when `validators` show it unchanged."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise _Refused(f"not http(s): {scheme or 'no scheme'}:// is not fetched")
    headers = {"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"}
    if validators and validators.get("etag"):
        headers["If-None-Match"] = validators["etag"]
    if validators and validators.get("last_modified"):
        headers["If-Modified-Since"] = validators["last_modified"]
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout_s)  # scheme checked above
    except urllib.error.HTTPError as exc:
        if exc.code == 304 and validators is not None:
            return None, {}
        raise
    with resp:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise _Refused(f"too large: {int(declared):,} bytes, above the photo limit of {max_bytes:,}")
        body = bytearray()
        while chunk := resp.read(_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise _Refused(f"too large: over the photo limit of {max_bytes:,} bytes")
    if not body:
        raise _Refused("empty: the server sent no bytes")
    if not is_image(bytes(body)):  # a CDN's soft 404 is an HTML page with status 200: not stored, tried again
        kind = resp.headers.get("Content-Type") or "no Content-Type"
        raise _Refused(f"not an image: the server sent {len(body):,} bytes of {kind}")
    found = {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}
    return bytes(body), {k: v for k, v in found.items() if v}


def _reason(exc: BaseException) -> tuple[str, bool]:
    """(reason for the row, worth another attempt)."""
    if isinstance(exc, _Refused):
        return str(exc), False
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip(), exc.code == 429 or exc.code >= 500
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out", True
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        if isinstance(inner, TimeoutError | socket.timeout):
            return "timed out", True
        return f"cannot connect: {inner}", not isinstance(inner, socket.gaierror)
    if isinstance(exc, ValueError):  # urllib's "unknown url type", a URL with spaces or no host
        return f"not a fetchable URL: {exc}", False
    return f"{type(exc).__name__}: {exc}", isinstance(exc, OSError)


def _retry_after(exc: BaseException) -> float:
    """Seconds a 429 / 503 asks the client to wait (Retry-After in seconds), at most RETRY_AFTER_MAX_S."""
    if not isinstance(exc, urllib.error.HTTPError) or exc.headers is None:
        return 0.0
    value = (exc.headers.get("Retry-After") or "").strip()
    return min(float(value), RETRY_AFTER_MAX_S) if value.isdigit() else 0.0


class Fetched(NamedTuple):
    """What fetch_one did with a URL: "fetched" / "updated" (`size` bytes written), "cached" (the stored copy
    stands), "kept" (asking again failed, the stored copy stays) or "failed" (no copy); `reason` for the last two."""

    outcome: Literal["fetched", "updated", "cached", "kept", "failed"]
    size: int = 0
    reason: str = ""


def fetch_one(url: str, folder: Path, *, max_bytes: int, timeout_s: float = TIMEOUT_S,
              attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S, revalidate: bool = False) -> Fetched:
    """Download one URL into folder (fetched, cached or failed); with `revalidate`, a stored photo is asked for
    again, conditionally by its ETag / Last-Modified (updated when it changed, cached when not, kept when asking
    failed)."""
    name = photo_name(url)
    target, failed, meta = folder / name, folder / (name + FAILED_SUFFIX), folder / (name + META_SUFFIX)
    stored = target.is_file()
    if stored and not revalidate:
        return Fetched("cached")
    validators = _read_meta(meta) if stored else None
    reason, wait = "", 0.0
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(max(wait, backoff_s * 2 ** (attempt - 1)))
        try:
            body, found = _download(url.strip(), max_bytes, timeout_s, validators)
        except Exception as exc:  # every failure becomes the row's reason, none stops the run
            reason, again = _reason(exc)
            wait = _retry_after(exc)
            if again:
                continue
            break
        if body is None or (stored and body == target.read_bytes()):
            return Fetched("cached")  # not modified
        tmp = folder / f"{name}.{os.getpid()}.{id(body)}.part"
        tmp.write_bytes(body)
        os.replace(tmp, target)  # whole or absent: a killed run never leaves half a photo under the name
        failed.unlink(missing_ok=True)
        if found:
            meta.write_text(json.dumps(found), encoding="utf-8")
        else:
            meta.unlink(missing_ok=True)
        return Fetched("updated" if stored else "fetched", len(body))
    if stored:  # the photo we have beats none: the row keeps it
        return Fetched("kept", reason=reason)
    failed.write_text(reason + "\n", encoding="utf-8")
    return Fetched("failed", reason=reason)


def _read_meta(path: Path) -> dict[str, str]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in found.items() if k in ("etag", "last_modified")} if isinstance(found, dict) else {}


def fetch_all(urls: Iterable[str], folder: Path, *, max_bytes: int, workers: int = 16,
              timeout_s: float = TIMEOUT_S, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
              progress: Callable[[int], None] | None = None, revalidate: bool = False) -> FetchSummary:
    """Every distinct URL into folder, `workers` downloads at a time (network-bound: threads, not cores)."""
    t0 = time.perf_counter()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidInput(f"cannot store fetched photos in {folder}: {exc.strerror or exc}; the catalog's directory "
                           "must be writable for --fetch-photos", field="fetch_photos") from None
    unique = list(dict.fromkeys(u.strip() for u in urls))
    out = FetchSummary(urls=len(unique))
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="kuamo-fetch") as pool:
        for got in pool.map(lambda u: fetch_one(u, folder, max_bytes=max_bytes, timeout_s=timeout_s,
                                                attempts=attempts, backoff_s=backoff_s, revalidate=revalidate),
                            unique):
            out.fetched += got.outcome == "fetched"
            out.updated += got.outcome == "updated"
            out.cached += got.outcome == "cached"
            out.kept += got.outcome == "kept"
            out.bytes += got.size
            if got.outcome == "failed":
                out.failed += 1
                kind = got.reason.split(":")[0]
                out.failures[kind] = out.failures.get(kind, 0) + 1
            if progress is not None:
                progress(1)
    out.seconds = time.perf_counter() - t0
    return out
