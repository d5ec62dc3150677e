from __future__ import annotations

from temporalio.contrib.opentelemetry import TracingInterceptor

from karma.settings import OtelSettings
from karma.telemetry import tracing_interceptors


def test_tracing_is_off_unless_an_exporter_is_chosen() -> None:
    assert tracing_interceptors(OtelSettings()) == []
    interceptors = tracing_interceptors(OtelSettings(exporter="console"))
    assert [type(i) for i in interceptors] == [TracingInterceptor]
