"""OpenTelemetry: one trace per action, from whatever requested it to the ledger.

`KARMA_OTEL__EXPORTER` chooses where spans go: `none` (default: nothing is recorded),
`console`, or `otlp` (`KARMA_OTEL__OTLP_PROTOCOL` `http/protobuf` or `grpc`, to
`KARMA_OTEL__OTLP_ENDPOINT`, else the standard `OTEL_EXPORTER_OTLP_*` variables). The
request span (`karma.request`) starts the trace; Temporal's interceptor carries it into the
workflow and every activity; the Kafka publication and the sink's insert add their spans.
The trace id travels in the transitions' `trace_id` tag, so the ledger keeps it.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

if TYPE_CHECKING:
    from temporalio.contrib.opentelemetry import TracingInterceptor

    from karma.settings import OtelSettings

TRACER = "karma"
EXPORT_TIMEOUT_S = 5
# A batch of the sink holds transitions of up to a thousand actions: at most this many get
# a span of its insert (the span queue would drop them anyway).
MAX_SPANS_PER_BLOCK = 64
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def is_trace_id(text: str) -> bool:
    """32 lowercase hex digits, not all zero (W3C)."""
    return bool(_TRACE_ID.fullmatch(text)) and text != "0" * 32


TRACE_TAG = "trace_id"  # the tag of every transition of a traced action


def tracing_on(settings: OtelSettings) -> bool:
    """Whether spans are recorded (and exported) in this process; installs the exporter
    the first time."""
    if settings.exporter == "none":
        return False
    _install_provider(
        settings.exporter, settings.service_name, settings.otlp_protocol, settings.otlp_endpoint
    )
    return True


def tracing_interceptors(settings: OtelSettings) -> list[TracingInterceptor]:
    """Temporal interceptors (client and worker) that carry the trace through workflows
    and activities, or none."""
    if not tracing_on(settings):
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


@functools.cache
def _install_provider(exporter: str, service_name: str, protocol: str, endpoint: str) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    chosen: SpanExporter
    if exporter == "console":
        chosen = ConsoleSpanExporter(out=sys.stderr)  # stdout is the commands' output
    elif protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        chosen = GrpcExporter(
            endpoint=endpoint or None,
            insecure=not endpoint.startswith("https://") if endpoint else None,
            timeout=EXPORT_TIMEOUT_S,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        url = f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None
        chosen = HttpExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)


def flush(timeout_s: float = 3.0) -> None:
    """Export the spans still buffered (before a short-lived process exits), waiting at
    most `timeout_s`: an unreachable collector never holds a command up for long (the
    SDK's own flush does not keep to its timeout)."""
    provider: Any = trace.get_tracer_provider()
    if not hasattr(provider, "force_flush"):
        return
    flushing = threading.Thread(target=provider.force_flush, daemon=True, name="span-flush")
    flushing.start()
    flushing.join(timeout_s)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def current_trace_id() -> str:
    """The current span's trace id (32 hex digits), or "" when it is not recorded (tracing
    off: a caller's traceparent is not taken as ours)."""
    span = trace.get_current_span()
    context = span.get_span_context()
    return format(context.trace_id, "032x") if span.is_recording() and context.is_valid else ""


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span, or ("", "")."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _within(trace_id: str) -> Context | None:
    """A context whose parent is the action's trace (a remote parent the ledger's spans
    hang under: its span id is derived from the trace id, as nothing else is known)."""
    if not is_trace_id(trace_id):
        return None
    number = int(trace_id, 16)
    span_id = int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:8], "big") or 1
    parent = SpanContext(number, span_id, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextmanager
def continued_from(carrier: Mapping[str, str]) -> Iterator[None]:
    """Run the block in the trace the caller passed (W3C `traceparent` in HTTP or Kafka
    headers), if any: the request span becomes a child of the caller's."""
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not isinstance(trace.get_tracer_provider(), _sdk_provider()):
        yield  # tracing off: nothing of the caller's is taken
        return
    # The W3C trace context only: no baggage, which Temporal would keep in clear in its
    # history headers.
    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


@contextmanager
def spans_in_traces(name: str, trace_ids: Iterable[str], **attributes: Any) -> Iterator[None]:
    """One span named `name` in each of the given traces, around the block (the sink's
    insert of a batch that holds transitions of several actions)."""
    if not isinstance(trace.get_tracer_provider(), _sdk_provider()):
        yield
        return
    opened: list[Span] = []
    for trace_id in sorted(set(trace_ids))[:MAX_SPANS_PER_BLOCK]:
        context = _within(trace_id)
        if context is not None:
            opened.append(tracer().start_span(name, context=context, attributes=attributes))
    try:
        yield
    finally:
        for span in opened:
            span.end()


@functools.cache
def _sdk_provider() -> type:
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider
