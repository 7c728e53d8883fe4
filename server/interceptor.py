"""One server interceptor around every kuamo RPC: auth, admission limit, deadline, the error table,
metrics and the access log. Health checks skip auth and admission so probes work under load."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc import aio
from grpc_status import rpc_status

from kuamo.engine.errors import InvalidInput, KuamoError, Overloaded
from kuamo.server.auth import check_bearer
from kuamo.server.metrics import ServerMetrics
from kuamo.server.status import rich_status, status_for, status_of

log = logging.getLogger("kuamo.server")
access_log = logging.getLogger("kuamo.access")

UNGUARDED_PREFIXES = ("/grpc.health.v1.",)
# grpc.aio ends a request stream normally when the client cancels, and cancels the handler a moment later:
# holding the end of every request stream this long lets that cancellation land before a handler commits
# what it buffered (measured: without it the corpus committed a cancelled RecordEvents stream in 4 runs of
# 10; with 10 ms, in none of 12).
STREAM_END_GRACE_S = 0.01


def _parser(deserializer: Callable[[bytes], Any] | None) -> Callable[[Any], Any]:
    """Raw request bytes -> message, or InvalidInput (corrupt wire format, invalid UTF-8 in a string)."""
    if deserializer is None:
        return lambda raw: raw

    def parse(raw: Any) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:
            raise InvalidInput(f"not a valid request message: {exc}", field="request") from exc

    return parse


def _each(parse: Callable[[Any], Any]) -> Callable[[AsyncIterator[Any]], AsyncIterator[Any]]:
    """The same for every message of a request stream (a bad one ends the call with INVALID_ARGUMENT)."""

    async def parsed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for raw in requests:
            yield parse(raw)
        await asyncio.sleep(STREAM_END_GRACE_S)

    return parsed


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.code, self.message, self.status = code, status.message, status


class ServiceInterceptor(aio.ServerInterceptor):
    def __init__(self, *, metrics: ServerMetrics, tokens: Sequence[str] = (), max_inflight: int = 256) -> None:
        self.metrics, self.tokens, self.max_inflight = metrics, tuple(tokens), max_inflight
        self.inflight = 0
        # The wrapped handler of each method, built on its first call: nothing in it depends on the call (the
        # caller's metadata is read from the call's context), so later calls skip rebuilding it.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith(UNGUARDED_PREFIXES):  # health probes: untouched, so they answer under any load
            return await continuation(details)
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED
                return None
            wrapped = self._handlers[method] = self._wrap(handler, method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        # Requests arrive as bytes and are parsed inside the wrapper (after auth), so a corrupt message is
        # INVALID_ARGUMENT instead of the UNKNOWN gRPC answers when its own deserializer raises.
        one = _parser(handler.request_deserializer)
        serde = {"request_deserializer": None, "response_serializer": handler.response_serializer}
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._wrap_stream(handler.unary_stream, method, one), **serde)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, method, _each(one)), **serde)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method, _each(one)), **serde)
        return grpc.unary_unary_rpc_method_handler(self._wrap_unary(handler.unary_unary, method, one), **serde)

    # -- the parts ---------------------------------------------------------------------------------
    def _admit(self, context: aio.ServicerContext) -> bool:
        self.admit(context.invocation_metadata())
        return True

    def admit(self, metadata: Any) -> None:
        """Auth and the admission limit, shared by gRPC and HTTP (server/http_gateway.py); pair with release()."""
        if self.tokens:
            check_bearer(metadata, self.tokens)
        if self.inflight >= self.max_inflight:
            self.metrics.rejected.inc()
            raise Overloaded(f"server is at its admission limit ({self.max_inflight} requests in flight); retry later")
        self.inflight += 1
        self.metrics.inflight.set(self.inflight)

    def release(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.set(self.inflight)

    def _release(self, admitted: bool) -> None:
        if admitted:
            self.release()

    @staticmethod
    def _to_abort(exc: BaseException) -> _Abort:
        if isinstance(exc, KuamoError):
            return _Abort(status_of(exc), status_for(exc))
        if isinstance(exc, TimeoutError):
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            return _Abort(code, rich_status(code, "deadline exceeded while the request was being served",
                                            reason="DEADLINE_EXCEEDED"))
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error (ref %s)", ref)
        code = grpc.StatusCode.INTERNAL
        return _Abort(code, rich_status(code, f"internal error (ref {ref}; see the server log)", reason="INTERNAL",
                                        metadata={"ref": ref}))

    def _finish(self, method: str, code: grpc.StatusCode, t0: float, context: Any, message: str = "") -> None:
        seconds = time.perf_counter() - t0
        self.metrics.observe(method, code.name, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(json.dumps({"method": method, "code": code.name, "ms": round(seconds * 1000, 3),
                                        "peer": context.peer() if context is not None else "",
                                        **({"error": message[:300]} if message else {})}, ensure_ascii=False))

    @contextlib.asynccontextmanager
    async def _served(self, method: str, context: aio.ServicerContext) -> AsyncIterator[None]:
        """Admission, the error table, metrics and the access log around one call of any shape."""
        t0 = time.perf_counter()
        admitted = False
        try:
            admitted = self._admit(context)
            yield
        except aio.AbortError:
            self._finish(method, context.code() or grpc.StatusCode.UNKNOWN, t0, context)
            raise
        except asyncio.CancelledError:
            self._finish(method, grpc.StatusCode.CANCELLED, t0, context)
            raise
        except Exception as exc:
            ab = self._to_abort(exc)
            self._finish(method, ab.code, t0, context, ab.message)
            # the google.rpc.Status travels in the grpc-status-details-bin trailer (server/status.py)
            await context.abort(ab.code, ab.message, rpc_status.to_status(ab.status).trailing_metadata)
        finally:
            self._release(admitted)
        self._finish(method, grpc.StatusCode.OK, t0, context)

    def _wrap_unary(self, behaviour: Callable, method: str, parse: Callable) -> Callable:
        async def wrapper(request: Any, context: aio.ServicerContext) -> Any:
            async with self._served(method, context):
                request = parse(request)
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                # Abandon the work when the deadline passes (the caller has given up on it anyway);
                # asyncio.timeout cancels in place, without the extra task wait_for would create.
                async with asyncio.timeout(remaining):
                    return await behaviour(request, context)

        return wrapper

    def _wrap_stream(self, behaviour: Callable, method: str, parse: Callable) -> Callable:
        async def wrapper(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._served(method, context):
                request = parse(request)
                if inspect.isasyncgenfunction(behaviour):
                    async for item in behaviour(request, context):
                        yield item
                else:  # a coroutine that answers with context.write()
                    await behaviour(request, context)

        return wrapper
