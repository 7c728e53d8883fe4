"""HTTP/JSON beside gRPC, in the same process and event loop, over the same servicer: one JSON endpoint per RPC
whose bodies are the proto's canonical JSON mapping (protobuf's json_format, so HTTP and gRPC cannot drift),
the same bearer tokens, admission limit, TLS and metrics, and an OpenAI-compatible POST /v1/embeddings.

    POST /v1/Search, /v1/Embed, /v1/Recommend, /v1/Delete, /v1/GetProduct, /v1/Stats, /v1/ForgetUser
         body: the request message as JSON  ->  the response message as JSON
    POST /v1/Upsert, /v1/RecordEvents     body: NDJSON, one request message per line (or a JSON array)
    POST /v1/SearchStream[?order=completion]  body: NDJSON of SearchRequest -> NDJSON of SearchResponse,
                                           each line written as soon as it may be: in order, or as each is
                                           ready with ?order=completion (request_id matches them)
    POST /v2/<Rpc>                         the same for kuamo.v2 (its messages; SearchStream takes
                                           SearchStreamRequest lines), routes derived from each service
    POST /v1/embeddings                    OpenAI embeddings: {"input": str | [str], "model", "encoding_format":
                                           "float" | "base64"}; extension: "input_type": "query" | "document"
    GET  /healthz (the process answers), /readyz (models loaded and warm: 200, else 503)
    GET  / and /static/*                   the search page (server/web/), no build step, no CDN
    GET  /v1/categories                    the catalog's category paths (the page's filter)
    GET  /photos/<key>                     a product's photo, read from `catalog_dir` only (no traversal,
                                           at most max_photo_bytes)

Errors: the google.rpc.Status gRPC sends in its trailer, in Google's JSON error style:
    {"error": {"code": <HTTP status>, "status": <gRPC code name>, "message", "field" (when one is at fault),
               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason", "domain", "metadata"},
                           {"@type": ".../google.rpc.BadRequest", "fieldViolations": [{"field", "description"}]},
                           {"@type": ".../google.rpc.RetryInfo", "retryDelay": "0.500s"}]}}
with the HTTP status from HTTP_STATUS (Google's mapping of gRPC codes to HTTP), 413 for a body over
max_message_mb, and Retry-After on 429 and 503.

aiohttp was chosen over Starlette + uvicorn: it runs as a site on the event loop grpc.aio already uses (no
second loop or thread, nothing to reconcile with uvloop) and brings no framework beyond HTTP itself.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from kuamo.engine.errors import InvalidInput, KuamoError, NotFound, NotReady
from kuamo.engine.feed_values import is_url
from kuamo.engine.ids import canonical_id
from kuamo.engine.photo_fetch import FETCHED_DIR, photo_name
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v2 import kuamo_pb2 as pb2
from kuamo.server.status import field_path, retry_after_s, rich_status, status_for, status_of

log = logging.getLogger("kuamo.server")

# google/rpc/code.proto's HTTP mapping
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}



def rpc_shapes(module: ModuleType) -> tuple[dict[str, type[Message]], dict[str, type[Message]], type[Message]]:
    """(unary RPCs, client-streaming RPCs, SearchStream's request class) of a version's SearchService,
    read from its descriptor so that a new RPC gets its route without an edit here."""
    unary: dict[str, type[Message]] = {}
    client_stream: dict[str, type[Message]] = {}
    bidi: type[Message] | None = None
    for m in module.DESCRIPTOR.services_by_name["SearchService"].methods:
        cls = getattr(module, m.input_type.name)
        if m.client_streaming and m.server_streaming:
            bidi = cls
        elif m.client_streaming:
            client_stream[m.name] = cls
        else:
            unary[m.name] = cls
    assert bidi is not None
    return unary, client_stream, bidi


OPENAI_MAX_INPUTS = 256
WEB_DIR = Path(__file__).resolve().parent / "web"
UNGUARDED = ("/healthz", "/readyz", "/", "/static/")  # probes and the page's own files: no data in them
PHOTO_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".gif": "image/gif"}


def _sniffed_type(path: Path) -> str | None:
    """The image type of a file without a suffix (a fetched photo) from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"GIF8"):
        return "image/gif"
    return "image/webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None


def to_json(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


def parse(obj: Any, cls: type[Message], where: str) -> Message:
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where} must be a JSON object with the fields of {cls.DESCRIPTOR.name}", field=where)
    try:
        return json_format.ParseDict(obj, cls())
    except json_format.ParseError as exc:
        raise InvalidInput(str(exc), field=where) from None  # str(InvalidInput) names `where` first
    except (UnicodeError, SystemError):  # a lone surrogate ("\\ud800") where protobuf wants a name or text:
        # upb's name lookup fails inside C and surfaces as SystemError
        raise InvalidInput("has text that is not valid Unicode (a lone surrogate such as \\ud800)",
                           field=where) from None


def status_response(code: grpc.StatusCode, st: status_pb2.Status, field: str | None = None, *,
                    http_status: int | None = None) -> web.Response:
    """A google.rpc.Status as the JSON error body (see the module doc) with its HTTP status."""
    status = http_status or HTTP_STATUS.get(code, 500)
    body = {"error": {"code": status, "status": code.name, "message": st.message,
                      **({"field": field} if field else {}),
                      "details": [json_format.MessageToDict(d) for d in st.details]}}  # unset fields left out
    delay = retry_after_s(st)
    headers = {"Retry-After": str(max(1, round(delay)))} if delay is not None else None
    return web.json_response(body, status=status, headers=headers)


def error_response(exc: BaseException) -> web.Response:
    if isinstance(exc, KuamoError):
        return status_response(status_of(exc), status_for(exc), field_path(exc))
    code = grpc.StatusCode.INTERNAL
    return status_response(code, rich_status(code, "internal error; see the server log", reason="INTERNAL"))


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", field="body") from None


async def _messages(request: web.Request, cls: type[Message]) -> AsyncIterator[Message]:
    """NDJSON lines (or one JSON array) -> messages; a bad line is INVALID_ARGUMENT naming it."""
    raw = await request.read()
    try:
        text = raw.decode("utf-8") if raw else ""
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the body is not valid UTF-8: {exc}", field="body") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"the body is not a valid JSON array: {exc}", field="body") from None
    else:
        items = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"line {n} is not valid JSON: {exc}", field=f"line {n}") from None
    for i, item in enumerate(items):
        yield parse(item, cls, f"message {i}")


async def _replay(messages: list[Message]) -> AsyncIterator[Message]:
    """Parsed messages as the request stream a servicer method reads."""
    for m in messages:
        yield m


class HttpGateway:
    """The HTTP surface of one KuamoServer (its servicer, interceptor for auth and admission, metrics)."""

    def __init__(self, server: Any, *, max_body_bytes: int, catalog_dir: Path | None = None,
                 max_photo_bytes: int = 20 * 1024 * 1024) -> None:
        self.srv = server
        self.catalog_dir = catalog_dir.resolve() if catalog_dir is not None else None
        self.max_photo_bytes = max_photo_bytes
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=[self._guard])
        for prefix, module, servicer in (("/v1", pb, server.servicer), ("/v2", pb2, server.servicer_v2)):
            unary, client_stream, stream_cls = rpc_shapes(module)
            for name, cls in unary.items():
                self.app.router.add_post(f"{prefix}/{name}", self._unary(cls, getattr(servicer, name)))
            for name, cls in client_stream.items():
                self.app.router.add_post(f"{prefix}/{name}", self._client_stream(cls, getattr(servicer, name)))
            self.app.router.add_post(f"{prefix}/SearchStream", self._search_stream(stream_cls, servicer))
        self.app.router.add_post("/v1/embeddings", self._openai_embeddings)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/v1/categories", self._categories)
        self.app.router.add_get("/photos/{id}", self._photo)
        self.app.router.add_get("/", self._page)
        self.app.router.add_static("/static/", WEB_DIR, show_index=False, follow_symlinks=False)
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=ssl_context, reuse_port=False)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- the guard every request passes: auth, admission, the error table, metrics --------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        if request.path in UNGUARDED or request.path.startswith("/static/"):  # as gRPC health: no auth
            return await handler(request)
        t0 = time.perf_counter()
        method = f"HTTP {request.path}"
        admitted = False
        try:
            metadata = [(k.lower(), v) for k, v in request.headers.items()]
            self.srv.interceptor.admit(metadata)
            admitted = True
            response = await handler(request)
            code = grpc.StatusCode.OK
        except web.HTTPRequestEntityTooLarge as exc:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            response = status_response(code, rich_status(code, f"the body is over the limit: {exc.text}",
                                                         reason="BODY_TOO_LARGE", field="body"), "body",
                                       http_status=413)
        except web.HTTPException:
            raise  # aiohttp's own 404 / 405 for unknown paths and methods
        except KuamoError as exc:
            code, response = status_of(exc), error_response(exc)
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            response = status_response(code, rich_status(code, "deadline exceeded", reason="DEADLINE_EXCEEDED"))
        except Exception:
            log.exception("internal error in %s", method)
            code, response = grpc.StatusCode.INTERNAL, error_response(RuntimeError())
        finally:
            if admitted:
                self.srv.interceptor.release()
        self.srv.metrics.observe(method, code.name, time.perf_counter() - t0)
        return response

    # -- one handler per RPC shape ---------------------------------------------------------------------
    @staticmethod
    def _unary(cls: type[Message], behaviour: Callable) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            msg = parse(await _json_body(request), cls, "body")
            return web.json_response(to_json(await behaviour(msg, None)))

        return handle

    @staticmethod
    def _client_stream(cls: type[Message], behaviour: Callable) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            messages = [m async for m in _messages(request, cls)]  # parsed whole: a bad line commits nothing
            return web.json_response(to_json(await behaviour(_replay(messages), None)))

        return handle

    @staticmethod
    def _search_stream(cls: type[Message], servicer: Any) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            messages = [m async for m in _messages(request, cls)]
            _ = servicer.engine  # UNAVAILABLE before the 200 header goes out
            order = request.query.get("order", "arrival")
            if order not in ("arrival", "completion"):
                raise InvalidInput(f"order must be 'arrival' or 'completion', got {order!r}", field="order")
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            answers = servicer.SearchStream(_replay(messages), None, by_completion=order == "completion")
            async for answer in answers:
                await response.write(json.dumps(to_json(answer), ensure_ascii=False).encode() + b"\n")
            await response.write_eof()
            return response

        return handle

    async def _openai_embeddings(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object", field="body")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("input must be a string or a non-empty list of strings (token arrays are not "
                               "accepted)", field="input")
        if len(texts) > OPENAI_MAX_INPUTS:
            raise InvalidInput(f"at most {OPENAI_MAX_INPUTS} inputs per call, got {len(texts)}", field="input")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InvalidInput(f"encoding_format must be 'float' or 'base64', got {fmt!r}", field="encoding_format")
        kind = body.get("input_type", "query")
        if kind not in ("query", "document"):
            raise InvalidInput(f"input_type must be 'query' or 'document', got {kind!r}", field="input_type")
        engine = self.srv.servicer.engine
        model = engine.text_model_name()
        if body.get("model") not in (None, model):
            raise InvalidInput(f"unknown model {body.get('model')!r}; this server embeds with {model!r}",
                               field="model")
        dims = body.get("dimensions")
        vecs = await engine.embed_text(texts, kind)
        if dims is not None and dims != vecs.shape[1]:
            raise InvalidInput(f"dimensions must be {vecs.shape[1]} (this model's), got {dims!r}", field="dimensions")
        tokens = sum(engine.text_tokens(texts, kind))
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
                 if fmt == "base64" else [float(x) for x in v]} for i, v in enumerate(vecs)]
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def _categories(self, request: web.Request) -> web.Response:
        return web.json_response({"categories": await self.srv.servicer.engine.categories(),
                                  "photos": self.catalog_dir is not None})

    async def _photo(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]  # the catalog's id as text (Hit.key)
        if self.catalog_dir is None:
            raise NotFound("this server shows no photos (start it with --catalog-dir)", field="id")
        product = await self.srv.servicer.engine.get(canonical_id(raw))
        ref = product.image_ref or ""
        # a photo the feed named by URL is shown from the copy `kuamo index --fetch-photos` stored, by its bytes
        path = self._inside_catalog(f"{FETCHED_DIR}/{photo_name(ref)}" if is_url(ref) else ref)
        kind = PHOTO_TYPES.get(path.suffix.lower()) if path.suffix else _sniffed_type(path)
        if kind is None:
            raise NotFound(f"product {raw} has no photo kuamo shows ({path.suffix or 'no'} file type)", field="id")
        size = path.stat().st_size
        if size > self.max_photo_bytes:
            raise InvalidInput(f"the photo of product {raw} has {size} bytes, above {self.max_photo_bytes}",
                               field="id")
        return web.Response(body=path.read_bytes(), content_type=kind,
                            headers={"Cache-Control": "private, max-age=3600"})

    def _inside_catalog(self, ref: str) -> Path:
        """The product's photo path, which must resolve inside the catalog directory (a catalog row or a
        symlink must not make the server hand out other files)."""
        assert self.catalog_dir is not None
        rel = Path(ref)
        if not ref or "\x00" in ref or rel.is_absolute() or ".." in rel.parts:
            raise NotFound("this product has no photo inside the catalog directory", field="id")
        path = (self.catalog_dir / rel).resolve()
        if not path.is_relative_to(self.catalog_dir) or not path.is_file():
            raise NotFound("this product has no photo inside the catalog directory", field="id")
        return path

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            _ = self.srv.servicer.engine
        except NotReady as exc:
            return web.json_response({"status": "starting", "message": str(exc)}, status=503)
        return web.json_response({"status": "ready"})
