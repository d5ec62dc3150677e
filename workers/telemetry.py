"""OpenTelemetry tracing of workflows and activities (`KARMA_OTEL__EXPORTER`)."""

from __future__ import annotations

import functools

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor

from karma.settings import OtelSettings


def tracing_interceptors(settings: OtelSettings) -> list[TracingInterceptor]:
    """Temporal interceptors that trace every workflow and activity, or none."""
    if settings.exporter == "none":
        return []
    _install_provider(settings.service_name)
    return [TracingInterceptor()]


@functools.cache
def _install_provider(service_name: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
