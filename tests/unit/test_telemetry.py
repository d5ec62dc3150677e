from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from temporalio.contrib.opentelemetry import TracingInterceptor

from karma import telemetry
from karma.settings import OtelSettings
from karma.telemetry import continued_from, current_trace_id, is_trace_id, tracing_interceptors

CALLER = {"traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}


def test_tracing_is_off_unless_an_exporter_is_chosen(monkeypatch: Any) -> None:
    installed: list[tuple[str, ...]] = []
    # Not installed for real: the provider is global to the process the tests run in.
    monkeypatch.setattr(telemetry, "_install_provider", lambda *a: installed.append(a))
    assert tracing_interceptors(OtelSettings()) == [] and installed == []
    interceptors = tracing_interceptors(OtelSettings(exporter="console"))
    assert [type(i) for i in interceptors] == [TracingInterceptor]
    assert installed == [("console", "karma", "http/protobuf", "")]


def test_with_tracing_off_a_callers_trace_is_not_taken() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a tracer provider was installed in this process")
    with continued_from(CALLER), telemetry.tracer().start_as_current_span("x"):
        assert current_trace_id() == ""


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0123456789abcdef0123456789abcdef", True),
        ("0" * 32, False),
        ("0x23456789abcdef0123456789abcdef", False),
        (" 123456789abcdef0123456789abcdef", False),
        ("0123456789ABCDEF0123456789ABCDEF", False),
        ("1_23456789abcdef0123456789abcdef", False),
        ("", False),
    ],
)
def test_trace_ids_are_w3c_ones(text: str, ok: bool) -> None:
    assert is_trace_id(text) is ok
