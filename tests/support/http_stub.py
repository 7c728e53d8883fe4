"""A stand-in for a generated gRPC stub that sends each call over kuamo's HTTP/JSON gateway instead: the same
request messages (as canonical JSON), the same response messages back, and errors raised as grpc.RpcError with
the gRPC code the body names, so a test written against the gRPC stub runs unchanged over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

STREAMS_IN = ("Upsert", "RecordEvents", "SearchStream")


class HttpRpcError(grpc.RpcError):
    """An HTTP error answer, read as the RpcError the gRPC stub would raise (code, details, the status)."""

    def __init__(self, http_status: int, body: dict[str, Any]) -> None:
        err = body["error"]
        super().__init__(err["message"])
        self.http_status, self.error = http_status, err
        self._code = grpc.StatusCode[err["status"]]

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.error["message"]

    def status(self) -> status_pb2.Status:
        """The google.rpc.Status the body carries (parsed back from its JSON details)."""
        return json_format.ParseDict({"code": self._code.value[0], "message": self.error["message"],
                                      "details": self.error.get("details", [])}, status_pb2.Status())


def field_violations(status: status_pb2.Status | None) -> list[str]:
    """The field paths of a status's BadRequest detail."""
    out: list[str] = []
    for d in status.details if status is not None else ():
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            out += [v.field for v in br.field_violations]
    return out


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    for d in status.details if status is not None else ():
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return info
    return None


class HttpStub:
    def __init__(self, port: int, pb: ModuleType, prefix: str = "/v1", service: str = "SearchService") -> None:
        self.base, self.pb, self.prefix = f"http://127.0.0.1:{port}", pb, prefix
        self.methods = pb.DESCRIPTOR.services_by_name[service].methods_by_name

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self.methods:
            raise AttributeError(name)
        return lambda request, timeout=30, metadata=None: self.call(name, request, timeout)

    def call(self, name: str, request: Any, timeout: float = 30) -> Any:
        if name in STREAMS_IN:
            msgs: Iterable[Any] = request
            data = "\n".join(json_format.MessageToJson(m, indent=None) for m in msgs).encode()
            ctype = "application/x-ndjson"
        else:
            data, ctype = json_format.MessageToJson(request, indent=None).encode(), "application/json"
        req = urllib.request.Request(f"{self.base}{self.prefix}/{name}", data=data, method="POST",
                                     headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise HttpRpcError(e.code, json.loads(e.read().decode())) from None
        out_cls = getattr(self.pb, self.methods[name].output_type.name)
        if name == "SearchStream":
            return [json_format.Parse(line, out_cls()) for line in text.splitlines() if line.strip()]
        return json_format.Parse(text, out_cls())
