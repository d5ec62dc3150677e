"""`python -m bench` (`make bench`): every speed figure of Karma, measured side by side with
bare Temporal in one run on the embedded stack, each beside its goal; results go to stdout
and bench/results.md. Numbers are never asserted in tests: this is where they live."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench.api import ApiSpeed, api_speed
from bench.ingress_speed import ingress_throughput, sdk_throughput
from bench.latency import unloaded_latency
from bench.measure import Run, spread
from bench.profile import Profile, profile_karma
from bench.saturation import Saturation, saturation
from bench.sink_speed import SinkSpeed, sink_throughput
from bench.stack import bench_stack
from bench.visibility import ledger_visibility

RESULTS = Path(__file__).parent / "results.md"
BOUND = "bounded by the CPU per action of each process (below)"
SINK_BOUND = "bounded by the Python work per transition (stages below)"


def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"**missed**: {miss}"


async def measure(args: argparse.Namespace) -> list[str]:
    async with bench_stack(in_memory=args.in_memory) as stack:
        print("saturation: interleaved rounds…", flush=True)
        sat = await saturation(
            stack, pairs=args.pairs, actions=args.actions, concurrency=args.concurrency
        )
        print("unloaded latency…", flush=True)
        bare_lat, karma_lat = await unloaded_latency(stack, each=args.latency_each)
        karma_rate = Saturation.total(sat.karma).throughput
        print(f"ledger visibility at {0.8 * karma_rate:.1f}/s…", flush=True)
        visible = await ledger_visibility(stack, rate=0.8 * karma_rate, seconds=args.seconds)
        print("ingress and SDK starts…", flush=True)
        ingress = await ingress_throughput(stack, count=args.starts)
        sdk = await sdk_throughput(stack, count=args.starts, concurrency=args.concurrency)
        print("the HTTP API…", flush=True)
        api = await api_speed(stack, count=args.api_requests)
        print("ledger sink from a filled topic…", flush=True)
        sink = await sink_throughput(stack, count=args.sink_transitions)
        profiles = []
        for name, one in (("before", stack.before_action), ("after", stack.action)):
            print(f"profile of the Karma process, {name} the speed work…", flush=True)
            profiles.append(
                await profile_karma(
                    stack, name, one, actions=args.profile_actions, concurrency=args.concurrency
                )
            )
    return report(
        args, sat, (bare_lat, karma_lat), visible, (ingress, sdk), sink, api,
        (profiles[0], profiles[1]),
    )  # fmt: skip


def report(
    args: argparse.Namespace,
    sat: Saturation,
    latency: tuple[Run, Run],
    visible: tuple[int, float, float, float],
    starts: tuple[float, float],
    sink: SinkSpeed,
    api: ApiSpeed,
    profiles: tuple[Profile | str, Profile | str],
) -> list[str]:
    bare, karma = Saturation.total(sat.bare), Saturation.total(sat.karma)
    ratios = sat.ratios
    median_ratio = statistics.median(ratios)
    bare_lat, karma_lat = latency
    lat_gap = karma_lat.percentile(0.5) - bare_lat.percentile(0.5)
    count, p50, p99, worst = visible
    ingress, sdk = starts
    sink_rate = sink.rate
    cpu_ratio = bare.total_cpu_ms_per_action / karma.total_cpu_ms_per_action
    lines = [
        "# Karma vs bare Temporal: every speed figure, side by side",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` "
        f"(`{' '.join(['python -m bench', *args.argv])}`) on {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, temporalio {version('temporalio')}. One embedded stack: "
        f"Temporal dev server ({'in memory' if args.in_memory else 'SQLite file'}), tansu, chdb; "
        "Karma's worker and bridge and the bare worker in one process, same runner and settings. "
        "Bare: a workflow with one activity returning its input. Karma: ActionWorkflow running a "
        "no-op action with full mirroring (Kafka acknowledges every transition before the "
        "workflow ends; the bridge writes them to ClickHouse).",
        "",
        "| figure | measured | goal | |",
        "|---|---|---|---|",
        f"| throughput Karma/bare at saturation (median of {len(ratios)} interleaved pairs) "
        f"| **{median_ratio:.2f}** | ≥ 0.90 | "
        f"{verdict(median_ratio >= 0.9, f'by {0.9 - median_ratio:.2f}: {BOUND}')} |",
        f"| unloaded start -> terminal, p50 (Karma - bare) | {karma_lat.percentile(0.5):.0f} - "
        f"{bare_lat.percentile(0.5):.0f} = {lat_gap:+.0f} ms | ≤ +25 ms | "
        f"{verdict(lat_gap <= 25, f'by {lat_gap - 25:.0f} ms')} |",
        f"| transition recorded -> in ClickHouse at 80 % of saturation, p99 | {p99:.0f} ms "
        f"(p50 {p50:.0f}, max {worst:.0f}, {count} transitions) | < 1000 ms | "
        f"{verdict(p99 < 1000, f'by {p99 - 1000:.0f} ms')} |",
        "| ledger sink from a filled topic, one process, default batches "
        f"({sink.batch_rows:,} rows) | {sink_rate:,.0f} transitions/s "
        f"({sink.written:,} in {sink.seconds:.1f} s) | ≥ 100,000/s | "
        f"{verdict(sink_rate >= 100_000, f'by {100_000 - sink_rate:,.0f}/s: {SINK_BOUND}')} |",
        f"| ingress: requests on actions.requested -> started | {ingress:.1f}/s, "
        f"{ingress / sdk:.2f} x the SDK's {sdk:.1f}/s | (reported) | |",
        f"| HTTP API: request -> workflow started, p50/p99 (SDK directly) "
        f"| {api.p(api.api_start_ms, 0.5):.1f}/{api.p(api.api_start_ms, 0.99):.1f} ms "
        f"({api.p(api.sdk_start_ms, 0.5):.1f}/{api.p(api.sdk_start_ms, 0.99):.1f} ms) "
        f"| (reported) | |",
        f"| HTTP API: transition recorded -> Server-Sent Event received, p50/p99 "
        f"| {api.p(api.sse_delivery_ms, 0.5):.1f}/{api.p(api.sse_delivery_ms, 0.99):.1f} ms "
        f"({len(api.sse_delivery_ms)} live events) | (reported) | |",
        "",
        f"Per-pair ratios: {', '.join(f'{r:.2f}' for r in ratios)} ({spread(ratios)}). "
        f"Throughput: bare {bare.throughput:.1f}/s, Karma {karma.throughput:.1f}/s "
        f"({args.actions} workflows per round, {args.concurrency} clients, each system "
        f"{len(sat.bare)} rounds). Latency at saturation p50/p99: bare "
        f"{bare.percentile(0.5):.0f}/{bare.percentile(0.99):.0f} ms, Karma "
        f"{karma.percentile(0.5):.0f}/{karma.percentile(0.99):.0f} ms.",
        "",
        f"CPU per action (ms), every process (steadier than wall-clock throughput; on "
        f"{os.cpu_count()} cores the "
        f"throughput ratio follows the ratio of total CPU per action, here {cpu_ratio:.2f}):",
        "",
        "| process | bare | Karma | Karma - bare |",
        "|---|---|---|---|",
    ]
    for process in bare.cpu:
        b, k = bare.cpu_ms_per_action(process), karma.cpu_ms_per_action(process)
        lines.append(f"| {process} | {b:.1f} | {k:.1f} | {k - b:+.1f} |")
    b_total, k_total = bare.total_cpu_ms_per_action, karma.total_cpu_ms_per_action
    lines.append(f"| **total** | {b_total:.1f} | {k_total:.1f} | {k_total - b_total:+.1f} |")
    lines += [
        "",
        "The ledger sink's stages, each timed alone on the same messages in batches of the "
        f"sink's size ({sink.batch_rows:,} rows), in microseconds per transition. The sink "
        "overlaps fetching and ClickHouse's engine with decoding; decoding and the row checks "
        f"are Python holding the GIL: their CPU alone allows one process at most "
        f"{sink.python_bound:,.0f} transitions/s.",
        "",
        "| stage | µs per transition |",
        "|---|---|",
        *(f"| {stage} | {micro:.1f} |" for stage, micro in sink.stages.items()),
    ]
    lines += profile_table(*profiles)
    lines.append("")
    return lines


def profile_table(before: Profile | str, after: Profile | str) -> list[str]:
    """Where each millisecond of CPU per action goes, before and after the speed work, both
    measured in this run: "before" is a sandboxed worker running requests made for contract 1
    (STARTED upserts a search attribute), "after" is Karma as it runs by default."""
    lines = [
        "",
        "Where each millisecond of CPU per action goes, before and after the speed work, both "
        "measured in this run (py-spy samples of the threads holding the GIL in the Karma "
        "process; servers from /proc). *Before*: a worker with the workflow sandbox running "
        "requests made for contract 1 (search-attribute upsert for STARTED); *after*: the "
        "defaults (no sandbox, contract 2).",
        "",
    ]
    for why_not in (before, after):
        if isinstance(why_not, str):
            return [*lines, f"(no profile: {why_not})"]
    assert isinstance(before, Profile) and isinstance(after, Profile)
    lines += [
        f"Throughput while profiled: before {before.run.throughput:.1f}/s, after "
        f"{after.run.throughput:.1f}/s ({after.run.count} actions each).",
        "",
        "| where | before (ms/action) | after (ms/action) | change |",
        "|---|---|---|---|",
    ]
    b_parts, a_parts = before.ms_per_action(), after.ms_per_action()
    for name in sorted(set(b_parts) | set(a_parts), key=lambda n: -b_parts.get(n, 0.0)):
        b, a = b_parts.get(name, 0.0), a_parts.get(name, 0.0)
        lines.append(f"| Karma process: {name} | {b:.2f} | {a:.2f} | {a - b:+.2f} |")
    for process in after.run.cpu:
        if process == "karma process":
            continue
        b, a = before.run.cpu_ms_per_action(process), after.run.cpu_ms_per_action(process)
        lines.append(f"| {process} | {b:.2f} | {a:.2f} | {a - b:+.2f} |")
    b_total, a_total = before.run.total_cpu_ms_per_action, after.run.total_cpu_ms_per_action
    lines.append(f"| **total** | {b_total:.2f} | {a_total:.2f} | {a_total - b_total:+.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=6, help="interleaved bare/Karma round pairs")
    parser.add_argument("--actions", type=int, default=120, help="workflows per round")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients")
    parser.add_argument("--latency-each", type=int, default=30, help="unloaded workflows each")
    parser.add_argument("--seconds", type=float, default=20, help="of load for visibility")
    parser.add_argument("--starts", type=int, default=500, help="requests for the start rates")
    parser.add_argument("--sink-transitions", type=int, default=100_000)
    parser.add_argument("--api-requests", type=int, default=100, help="each way, one at a time")
    parser.add_argument("--profile-actions", type=int, default=800)
    parser.add_argument("--in-memory", action="store_true", help="Temporal without SQLite")
    parser.add_argument("--no-write", action="store_true", help="do not update results.md")
    args = parser.parse_args()
    import sys

    args.argv = sys.argv[1:]
    text = "\n".join(asyncio.run(measure(args)))
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
