"""One trace per action, end to end: `karma request` (the CLI) starts it, the workflow and
its activities continue it, the Kafka publication and the ledger's insert join it, and the
ledger keeps its id. Spans are received by an OTLP/HTTP endpoint the test serves, as a
collector would (the exporters are the real ones)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from karma.embedded.stack import with_free_ports
from karma.settings import Settings
from tests.support.processes import KarmaProcess, karma_env, run_karma

pytestmark = pytest.mark.usefixtures("embedded_binaries")


@dataclass
class Received:
    """(trace id, span name, service name) of every span exported to the receiver."""

    spans: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names_in(self, trace_id: str) -> set[str]:
        with self.lock:
            return {name for t, name, _ in self.spans if t == trace_id}

    def count(self, trace_id: str, name: str) -> int:
        with self.lock:
            return sum(1 for t, n, _ in self.spans if (t, n) == (trace_id, name))

    def services_in(self, trace_id: str) -> set[str]:
        with self.lock:
            return {service for t, _, service in self.spans if t == trace_id}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            export = ExportTraceServiceRequest.FromString(body)
            with received.lock:
                for resource_spans in export.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            received.spans.append((span.trace_id.hex(), span.name, service))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


async def test_one_trace_from_the_cli_through_the_workflow_kafka_and_the_ledger(
    tmp_path: Path, receiver: tuple[str, Received], report: Callable[[str], None]
) -> None:
    endpoint, received = receiver
    settings = with_free_ports(Settings(), tmp_path)
    env = karma_env(
        settings,
        KARMA_OTEL__EXPORTER="otlp",
        KARMA_OTEL__OTLP_ENDPOINT=endpoint,
        KARMA_LOG_FORMAT="json",
        KARMA_METRICS__PORT=str(free_port()),
        KARMA_METRICS__SDK_PORT=str(free_port()),
    )
    dev = KarmaProcess(["dev"], env, tmp_path / "dev.log")
    try:
        await dev.wait_for_output("Press Ctrl-C to stop", timeout=120)
        code, out = await run_karma(["request", "log", "-p", "message=traced", "--wait"], env)
        assert code == 0, out
        found = re.search(r"act_[0-9a-f]{32}", out)
        assert found, out
        action_id = found.group(0)
        # The ledger keeps the trace id on every row (read through the API of `karma dev`).
        async with asyncio.timeout(30):
            while True:
                code, out = await run_karma(["ledger", action_id, "--json"], env)
                rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
                if code == 0 and rows and rows[-1]["event_type"] == "action.succeeded":
                    break
                await asyncio.sleep(0.5)
        # `karma stats` and `karma report` read it through the API of `karma dev` too.
        code, out = await run_karma(["stats", "--json", "--by", "type"], env)
        assert code == 0, out
        stats = json.loads(out[out.index("{") :])
        [group] = [g for g in stats["stats"]["groups"] if g["group"] == "log"]
        assert (group["total"], group["outcomes"]["SUCCEEDED"]) == (1, 1)
        page = tmp_path / "report.html"
        code, out = await run_karma(["report", "--html", str(page)], env)
        assert code == 0 and "1 ended actions" in out, out
        assert page.read_text().count('class="plotly-graph-div"') == 4  # no errors: no chart
        code, out = await run_karma(["stats", "--since", "yesterday"], env)
        assert code == 2 and "--since: expected a time" in out, out
        trace_ids = {row["trace_id"] for row in rows}
        assert len(trace_ids) == 1, rows
        [trace_id] = trace_ids
        assert trace_id and re.fullmatch(r"[0-9a-f]{32}", trace_id)
        # Every part of the action's way, in that one trace.
        wanted = {
            "karma.request log",
            "StartWorkflow:ActionWorkflow",
            "RunWorkflow:ActionWorkflow",
            "kafka.publish transitions",
            "ledger.insert",
        }
        async with asyncio.timeout(60):
            while True:
                if wanted <= received.names_in(trace_id):
                    break
                await asyncio.sleep(0.5)
        names = received.names_in(trace_id)
        assert received.count(trace_id, "RunActivity:execute") == 1, received.spans
        assert received.count(trace_id, "karma.request log") == 1
        assert received.services_in(trace_id) == {"karma"}
        # JSON logs carry the action id (and, within a span, the trace id).
        logged = [json.loads(line) for line in dev.output().splitlines() if line.startswith("{")]
        assert logged, "no JSON log lines"
        assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logged)
        mine = [entry for entry in logged if entry.get("action_id") == action_id]
        assert mine, "no log line names the action"
        # Prometheus: Karma's metrics, and the Temporal SDK's on their own port.
        async with httpx.AsyncClient(timeout=10) as http:
            ours = (await http.get(f"http://127.0.0.1:{env['KARMA_METRICS__PORT']}/metrics")).text
            sdk = (
                await http.get(f"http://127.0.0.1:{env['KARMA_METRICS__SDK_PORT']}/metrics")
            ).text
        for line in (
            'karma_actions_started_total{type="log"} 1.0',
            'karma_actions_ended_total{state="SUCCEEDED",type="log"} 1.0',
            'karma_attempt_duration_seconds_count{method="execute",outcome="ok",type="log"} 1.0',
            'karma_ledger_transitions_total{event_type="action.succeeded"} 1.0',
        ):
            assert line in ours, ours
        assert re.search(r"^karma_emit_latency_seconds_count [1-9]", ours, re.M), ours
        assert re.search(r'^karma_sink_batch_records_count\{sink="ledger"\} [1-9]', ours, re.M)
        assert re.search(r'^karma_sink_lag_records\{sink="ledger"\} \d', ours, re.M), ours
        assert re.search(r"^temporal_\w+", sdk, re.M), sdk[:500]
    finally:
        dev.ensure_stopped()
    report(
        f"trace {trace_id}: {len(names)} span names "
        f"({', '.join(sorted(names))}); the ledger's rows carry it"
    )
