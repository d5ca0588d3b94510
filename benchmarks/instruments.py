"""What instruments cost per job: trivial jobs with none, a no-op one, metrics, tracing, both.

All in one process, repeats interleaved (none, no-op, metrics, ...; none,
...) so that a noisy neighbour slows each alike; best of `--repeat`. Every
job is submitted inside one span, so tracing pays for the whole round trip:
`capture` injects the trace context at submit, `run` extracts it and
starts a span per job. The tracer provider is the SDK's, with
`--exporter none` (spans made and dropped) or `memory` (each span handed
to an in-memory exporter through a simple processor).

    python benchmarks/instruments.py [--jobs 100000] [--workers 8] [--loop asyncio,uvloop]
                                     [--repeat 3] [--exporter none|memory]

Needs the `metrics` and `otel` extras and opentelemetry-sdk (all in `dev`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from asyncpool import Dispatcher, Instrument
from asyncpool.metrics import PrometheusMetrics
from asyncpool.tracing import OpenTelemetryTracing
from benchmarks.throughput import new_loop, trivial


def provider(exporter: str) -> TracerProvider:
    made = TracerProvider()
    if exporter == "memory":
        made.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return made


def configurations(exporter: str) -> dict[str, Callable[[], Sequence[Instrument]]]:
    """Each configuration's instruments, made afresh for every run."""
    return {
        "none": lambda: (),
        "no-op Instrument": lambda: (Instrument(),),
        "PrometheusMetrics": lambda: (PrometheusMetrics(registry=CollectorRegistry()),),
        "OpenTelemetryTracing": lambda: (OpenTelemetryTracing(tracer_provider=provider(exporter)),),
        "both": lambda: (
            PrometheusMetrics(registry=CollectorRegistry()),
            OpenTelemetryTracing(tracer_provider=provider(exporter)),
        ),
    }


async def run(n: int, k: int, instruments: Sequence[Instrument]) -> int:
    parent = TracerProvider().get_tracer("benchmark")
    with parent.start_as_current_span("request"):
        async with Dispatcher(k, instruments=instruments) as dispatcher:
            handles = [await dispatcher.submit(trivial, i) for i in range(n)]
            total = 0
            for handle in handles:
                total += await handle
    return total


def measure(kind: str, instruments: Sequence[Instrument], n: int, k: int) -> float:
    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as runner:
        gc.collect()
        start = time.perf_counter()
        total = runner.run(run(n, k, instruments))
        elapsed = time.perf_counter() - start
    if total != n * (n - 1) // 2:
        raise SystemExit("wrong result: jobs were lost or repeated")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--loop", default="asyncio,uvloop")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--exporter", choices=("none", "memory"), default="none")
    args = parser.parse_args()
    configs = configurations(args.exporter)
    print(
        f"python {sys.version.split()[0]}, {args.jobs:,} trivial jobs, K={args.workers}, "
        f"exporter={args.exporter}, best of {args.repeat}"
    )
    print(f"{'loop':8} {'instruments':22} {'jobs/s':>10} {'us/job':>7} {'x none':>7}")
    for kind in args.loop.split(","):
        runs: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeat):
            for name, make in configs.items():
                runs[name].append(measure(kind, make(), args.jobs, args.workers))
        best = {name: max(values) for name, values in runs.items()}
        for name, rate in best.items():
            print(
                f"{kind:8} {name:22} {rate:>10,.0f} {1e6 / rate:>7.2f} {best['none'] / rate:>7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
