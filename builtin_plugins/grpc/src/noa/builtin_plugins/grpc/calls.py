"""What every gRPC call goes through, installed around each method handler at start.

For each call, in order: a request id (the caller's ``x-request-id`` when it is short
and plain, else a new one; sent back in the trailing metadata), the caller's W3C
``traceparent`` made current (:mod:`noa.plugin_sdk.tracing`), the access policy asked
with the method's declared scope (credentials from ``authorization: Bearer ...`` or
``x-api-key``; rate limits), the call's deadline applied to the handler, the error mapped
to a status code (:mod:`.status`), and one count and one duration in the metrics. With
the observability plugin exporting traces, each call is also a server span
(``grpc <service>/<method>``, its status code recorded) in the caller's trace.

Handlers are wrapped once, when a service is added to the server (:class:`GuardedServer`
stands in for the server in the generated ``add_*_to_server``), so a call pays no lookup.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from random import getrandbits
from typing import Any
from urllib.parse import unquote

import grpc
from noa.builtin_plugins.grpc.status import status_of
from noa.plugin_sdk.auth import AccessPolicy, AccessRequest
from noa.plugin_sdk.metrics import MetricsRegistry
from noa.plugin_sdk.tracing import current_traceparent

__all__ = ["CallMetrics", "Guard", "GuardedServer", "Spans", "peer_address"]

log = logging.getLogger("noa.grpc")

_REQUEST_ID = "x-request-id"
_SAFE_ID = re.compile(r"^[0-9A-Za-z\-_.:]{1,128}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def peer_address(peer: str | None) -> str | None:
    """The address in a gRPC peer string: ``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``,
    ``ipv6:[::1]:5000`` (or ``%5B::1%5D``) -> ``::1``; None for other transports."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]")
    return None


class CallMetrics:
    """``grpc_server_handled_total`` and ``grpc_server_handling_seconds``."""

    __slots__ = ("handled", "seconds")

    def __init__(self, registry: MetricsRegistry) -> None:
        labels = ("grpc_service", "grpc_method", "grpc_code")
        self.handled = registry.counter(
            "grpc_server_handled_total", "gRPC calls completed, by method and status", labels
        )
        self.seconds = registry.histogram(
            "grpc_server_handling_seconds",
            "Time to handle a gRPC call, by method and status",
            labels,
            buckets=_BUCKETS,
        )

    def observe(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        name = code.name
        self.handled.labels(service, method, name).inc()
        self.seconds.labels(service, method, name).observe(seconds)


class Spans:
    """One OpenTelemetry server span per call, made with the observability plugin's
    tracer (``TRACER_STATE_KEY``), named ``grpc <service>/<method>``, in the caller's
    trace when it sent a ``traceparent``."""

    __slots__ = ("_error", "_extract", "_kind", "_span_id", "_status", "_trace_id", "tracer")

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.propagate import extract
        from opentelemetry.trace import (
            SpanKind,
            Status,
            StatusCode,
            format_span_id,
            format_trace_id,
        )

        self.tracer = tracer
        self._extract = extract
        self._kind = SpanKind.SERVER
        self._status = Status
        self._error = StatusCode.ERROR
        self._trace_id = format_trace_id
        self._span_id = format_span_id

    def start(self, name: str, traceparent: str | None) -> tuple[Any, str]:
        """The span, and the ``traceparent`` that makes it the parent of outgoing calls."""
        carrier = {"traceparent": traceparent} if traceparent else {}
        span = self.tracer.start_span(name, context=self._extract(carrier), kind=self._kind)
        ctx = span.get_span_context()
        flags = "01" if ctx.trace_flags.sampled else "00"
        return span, f"00-{self._trace_id(ctx.trace_id)}-{self._span_id(ctx.span_id)}-{flags}"

    def end(self, span: Any, guard: Guard, code: grpc.StatusCode, rid: str) -> None:
        span.set_attribute("rpc.system", "grpc")
        span.set_attribute("rpc.service", guard.service)
        span.set_attribute("rpc.method", guard.method)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_attribute("noa.request_id", rid)
        if code in _SERVER_FAULTS:
            span.set_status(self._status(self._error, code.name))
        span.end()


# The codes that mean the server failed (OpenTelemetry's rule for gRPC server spans);
# the others are the client's doing and leave the span's status unset.
_SERVER_FAULTS = frozenset(
    (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)


class _Call:
    """What :meth:`Guard.begin` found and made for one call."""

    __slots__ = ("headers", "rid", "span", "token")

    def __init__(self, rid: str, headers: list[tuple[bytes, bytes]], token: Any, span: Any) -> None:
        self.rid = rid
        self.headers = headers
        self.token = token
        self.span = span


class Guard:
    """Access, request id, tracing, deadline, errors and metrics of one method.

    ``resource_of(request)`` names the resource a call touches (``"model:<name>"``), as a
    REST route's ``RESOURCE_OPT`` does, so capability tokens work; it is asked only of
    methods taking one request (a stream of them names none).
    """

    __slots__ = (
        "group",
        "method",
        "metrics",
        "name",
        "path",
        "policy",
        "resource_of",
        "scope",
        "secure",
        "service",
        "spans",
    )

    def __init__(
        self,
        *,
        service: str,
        method: str,
        scope: str,
        group: str,
        policy: AccessPolicy,
        metrics: CallMetrics,
        secure: bool,
        resource_of: Callable[[Any], str | None] | None = None,
        spans: Spans | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.path = f"/{service}/{method}"
        self.name = f"grpc {service}/{method}"
        self.scope = scope
        self.group = group
        self.policy = policy
        self.metrics = metrics
        self.secure = secure
        self.resource_of = resource_of
        self.spans = spans

    def begin(self, context: grpc.aio.ServicerContext[Any, Any]) -> _Call:
        """The call's request id, credentials and trace context (its span, if tracing)."""
        metadata = context.invocation_metadata() or ()
        rid = None
        traceparent = None
        headers: list[tuple[bytes, bytes]] = []
        for key, value in metadata:
            if isinstance(value, bytes):
                continue  # binary (-bin) metadata carries no credential
            if key == _REQUEST_ID and _SAFE_ID.match(value):
                rid = value
            elif key == "traceparent" and _TRACEPARENT.match(value):
                traceparent = value
            headers.append((key.encode("latin-1"), value.encode("latin-1", "replace")))
        rid = rid or f"{getrandbits(128):032x}"
        context.set_trailing_metadata(((_REQUEST_ID, rid),))
        span = None
        if self.spans is not None:
            span, traceparent = self.spans.start(self.name, traceparent)
        return _Call(rid, headers, current_traceparent.set(traceparent), span)

    async def authorize(
        self, context: grpc.aio.ServicerContext[Any, Any], call: _Call, request: Any
    ) -> None:
        """Ask the access policy; ``request`` is the call's message (None: a stream)."""
        resource = None
        if self.resource_of is not None and request is not None:
            resource = self.resource_of(request)
        grant = await self.policy.authorize(
            AccessRequest(
                method="POST",
                path=self.path,
                headers=call.headers,
                peer=peer_address(context.peer()),
                secure=self.secure,
                group=self.group,
                scope=self.scope,
                resource=resource,
            )
        )
        if grant.headers:
            context.set_trailing_metadata(
                ((_REQUEST_ID, call.rid), *((k.lower(), v) for k, v in grant.headers))
            )

    def failure(
        self, exc: BaseException, rid: str
    ) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
        """The status, message and trailing metadata that answer ``exc``."""
        mapped = status_of(exc)
        trailing: list[tuple[str, str]] = [(_REQUEST_ID, rid)]
        if mapped is None:
            log.error(
                "unhandled error in %s (request_id=%s)",
                self.path,
                rid,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            return grpc.StatusCode.INTERNAL, f"internal error (request id {rid})", tuple(trailing)
        code, message = mapped
        retry_after = getattr(exc, "headers", {}).get("Retry-After")
        if retry_after:
            trailing.append(("retry-after", str(retry_after)))
        return code, message, tuple(trailing)

    def done(self, call: _Call, code: grpc.StatusCode, started: float) -> None:
        current_traceparent.reset(call.token)
        if call.span is not None and self.spans is not None:
            self.spans.end(call.span, self, code, call.rid)
        self.metrics.observe(self.service, self.method, code, time.perf_counter() - started)


def _code_after_abort(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN


def _code_after_cancel(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """Why grpc cancelled the handler: its deadline passed, or the client went away."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _unary_response(
    guard: Guard, inner: Callable[[Any, Any], Awaitable[Any]], *, one_request: bool
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        call = guard.begin(context)
        try:
            await guard.authorize(context, call, request if one_request else None)
            remaining = context.time_remaining()
            if remaining is None:
                return await inner(request, context)
            async with asyncio.timeout(max(remaining, 0.0)):
                return await inner(request, context)
        except grpc.aio.AbortError:
            code = _code_after_abort(context)
            raise
        except asyncio.CancelledError:
            code = _code_after_cancel(context)
            raise
        except BaseException as exc:
            code, message, trailing = guard.failure(exc, call.rid)
            await context.abort(code, message, trailing_metadata=trailing)
        finally:
            guard.done(call, code, started)

    return handle


def _stream_response(
    guard: Guard, inner: Callable[[Any, Any], AsyncIterator[Any]], *, one_request: bool
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        call = guard.begin(context)
        try:
            await guard.authorize(context, call, request if one_request else None)
            async for item in inner(request, context):
                yield item
        except grpc.aio.AbortError:
            code = _code_after_abort(context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = _code_after_cancel(context)
            raise
        except BaseException as exc:
            code, message, trailing = guard.failure(exc, call.rid)
            await context.abort(code, message, trailing_metadata=trailing)
        finally:
            guard.done(call, code, started)

    return handle


def guarded(handler: grpc.RpcMethodHandler, guard: Guard) -> grpc.RpcMethodHandler:
    """``handler`` with ``guard`` around its behaviour, serialisers unchanged."""
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary_response(guard, handler.unary_unary, one_request=True), **options
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary_response(guard, handler.stream_unary, one_request=False), **options
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream_response(guard, handler.unary_stream, one_request=True), **options
        )
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(
        _stream_response(guard, handler.stream_stream, one_request=False), **options
    )


class GuardedServer:
    """Stands in for the server in a generated ``add_<Service>Servicer_to_server``: the
    method handlers it registers reach the real server wrapped in their guards."""

    def __init__(self, server: grpc.aio.Server, guard_for: Callable[[str, str], Guard]) -> None:
        self._server = server
        self._guard_for = guard_for
        self.services: list[str] = []

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {name: guarded(h, self._guard_for(service, name)) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)
        self.services.append(service)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        # Generated code registers its methods twice: a generic handler (which cannot be
        # wrapped from outside), then add_registered_method_handlers, which is used.
        return None
