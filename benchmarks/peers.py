"""asyncpool against its peers: the floor, TaskGroup + Semaphore, aiojobs,
asyncio-pool, aiometer and an anyio task group with a CapacityLimiter.

Workloads (W1 to W4: jobs per second; W5: latency):

    W1  trivial jobs (`async def job(i): return i`)
    W2  jobs that yield once (`await asyncio.sleep(0)`)
    W3  jobs sleeping 1 ms (I/O-like)
    W4  two alternating Job classes with `async process()`
    W5  submit-to-start latency with idle workers, one job at a time

Every configuration (workload, loop, K, implementation) runs in a fresh
process; repeats are interleaved across implementations so that a noisy
neighbour slows them alike; best of `--repeat`, with the spread shown. Every
run checks the count and the sum of the results and fails loudly otherwise.
Raw results go to `--json`; the tables and plots go to
docs/explanation/benchmarks.md and docs/_static/ (unless --no-write).

    python benchmarks/peers.py [--quick] [--jobs N] [--workloads W1,W5]
                               [--workers 8,64,1024] [--loop asyncio,uvloop]
                               [--impls floor,aiojobs] [--repeat 3]
                               [--python PATH] [--json results.json]
                               [--render-only results.json]
                               [--compare other.json] [--no-write]

--python PATH runs the children with that interpreter instead of this one
(which then only schedules them and renders). The Python version and the
package versions in the results are those that a child of PATH reports, and
every measuring child reports its Python version too (checked).

--compare JSON adds the saved results of a run on another interpreter (same
workloads, loops and K): the versions table gets a column per interpreter and
a table "Python X and Y side by side" puts the floor's rate and asyncpool's
ratios (x floor, x fastest peer) under each interpreter next to each other.
The other tables and the plots stay those of this run. It works with
--render-only too. To measure on Python 3.13 and 3.11 and write the page:

    python benchmarks/peers.py --python .venv-3.13/bin/python \
        --json /tmp/p313.json --no-write
    python benchmarks/peers.py --json /tmp/p311.json --compare /tmp/p313.json

or re-render both without measuring:

    python benchmarks/peers.py --render-only /tmp/p311.json --compare /tmp/p313.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _peer_impls as impls

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "explanation" / "benchmarks.md"
STATIC = ROOT / "docs" / "_static"
START_MARK = "<!-- peers:results:start -->"
END_MARK = "<!-- peers:results:end -->"

# The sizes the performance issue asks for (W5: latency samples).
DEFAULT_N = {"W1": 200_000, "W2": 50_000, "W3": 20_000, "W4": 50_000, "W5": 1_000}
QUICK_DIVISOR = 10
WARMUP = 100  # W5 samples run and thrown away before the measured ones
PEER_DISTRIBUTIONS = ("aiojobs", "asyncio-pool", "aiometer", "anyio", "uvloop")


# ------------------------------------------------------------------- child


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def child(workload: str, loop: str, k: int, impl: str, n: int) -> dict[str, Any]:
    """Run one configuration once, check it, and return what it measured."""
    with asyncio.Runner(loop_factory=lambda: new_loop(loop)) as runner:
        if workload == "W5":
            latency = impls.LATENCY[impl]
            gc.collect()
            samples = runner.run(_coro(latency(k, WARMUP + n)))[WARMUP:]
            if len(samples) != n or min(samples) < 0:
                raise SystemExit(f"{impl}: {len(samples)} latency samples, expected {n}")
            cuts = statistics.quantiles(samples, n=100)
            return {"p50": cuts[49], "p99": cuts[98]}
        work = impls.WORKLOADS[workload]
        items = work.items(n)
        run = impls.IMPLS[impl]
        gc.collect()
        start = time.perf_counter()
        count, total = runner.run(_coro(run(work, items, k)))
        elapsed = time.perf_counter() - start
    expected = n * (n - 1) // 2
    if count != n or total != expected:
        raise SystemExit(
            f"{impl} {workload} {loop} K={k}: {count} results summing to {total}, "
            f"expected {n} summing to {expected}: jobs were lost or repeated"
        )
    return {"rate": n / elapsed}


async def _coro(awaitable: Any) -> Any:
    return await awaitable


# ------------------------------------------------------------------ parent


def run_child(python: str, arguments: list[str], what: str) -> dict[str, Any]:
    """Run this file as a child under `python`; its last line of output is JSON."""
    try:
        done = subprocess.run(
            [python, __file__, *arguments], capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise SystemExit(f"FAILED: cannot run {python}: {error}") from error
    if done.returncode != 0:
        raise SystemExit(
            f"FAILED: {what} (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_once(
    python: str, expected_python: str, workload: str, loop: str, k: int, impl: str, n: int
) -> dict[str, Any]:
    arguments = ["--child", workload, loop, str(k), impl, str(n)]
    result = run_child(python, arguments, f"{impl} on {workload} {loop} K={k}")
    reported = result.pop("python")
    if reported != expected_python:
        raise SystemExit(
            f"FAILED: {impl} on {workload} {loop} K={k} ran on Python {reported}, "
            f"but {python} reported Python {expected_python}"
        )
    return result


def child_versions(python: str) -> dict[str, Any]:
    """The Python and package versions, and the executable, as `python` sees them."""
    return run_child(python, ["--child-versions"], f"{python} reporting its versions")


def versions() -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "asyncpool": importlib.metadata.version("asyncpool-dispatch"),
    }
    for name in PEER_DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    workloads = args.workloads.split(",")
    loops = args.loop.split(",")
    ks = [int(k) for k in args.workers.split(",")]
    chosen = args.impls.split(",") if args.impls else list(impls.IMPLS)
    unknown = [name for name in chosen if name not in impls.IMPLS]
    if unknown:
        raise SystemExit(f"unknown implementations {unknown}; known: {list(impls.IMPLS)}")
    sizes: dict[str, int] = {}
    for workload in workloads:
        n = DEFAULT_N[workload]
        if args.jobs is not None and workload != "W5":
            n = args.jobs
        elif args.quick:
            n //= QUICK_DIVISOR
        sizes[workload] = n
    found = child_versions(args.python)
    python = found["versions"]["python"]
    print(f"children run on Python {python} ({found['executable']})", flush=True)
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    for workload in workloads:
        names = [name for name in chosen if workload != "W5" or name in impls.LATENCY]
        print(f"\n{workload}: {_title(workload)}, N = {sizes[workload]:,}", flush=True)
        for loop in loops:
            for k in ks:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
                for _ in range(args.repeat):
                    for name in names:
                        runs[name].append(
                            measure_once(
                                args.python, python, workload, loop, k, name, sizes[workload]
                            )
                        )
                for name in names:
                    row = {"workload": workload, "loop": loop, "k": k, "impl": name}
                    rows.append({**row, "runs": runs[name]})
                _print_block([r for r in rows if _key(r) == (workload, loop, k)])
        print(f"  ({time.monotonic() - began:.0f} s so far)", flush=True)
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.system()}",
        "versions": found["versions"],
        "python_executable": found["executable"],
        "repeat": args.repeat,
        "sizes": sizes,
        "seconds": round(time.monotonic() - began),
        "rows": rows,
    }


def _cpus() -> str:
    import os

    return str(os.cpu_count())


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["workload"], row["loop"], row["k"]


def _is(row: dict[str, Any], workload: str, loop: str, k: int, impl: str) -> bool:
    return _key(row) == (workload, loop, k) and row["impl"] == impl


def _title(workload: str) -> str:
    if workload == "W5":
        return "submit-to-start latency with idle workers (samples per run)"
    return impls.WORKLOADS[workload].title


# --------------------------------------------------------------- reporting


def summarise(block: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best, spread and ratios for the rows of one (workload, loop, K)."""
    out = []
    if block[0]["workload"] == "W5":
        best = {r["impl"]: min(run["p50"] for run in r["runs"]) for r in block}
        peer_p50s = [best[name] for name in best if name not in impls.NOT_PEERS]
        fastest = min(peer_p50s) if peer_p50s else None
        for r in block:
            p50s = [run["p50"] for run in r["runs"]]
            out.append(
                {
                    "impl": r["impl"],
                    "p50": best[r["impl"]],
                    "p99": min(run["p99"] for run in r["runs"]),
                    "spread": (max(p50s) - min(p50s)) / statistics.mean(p50s),
                    "x_floor": best[r["impl"]] / best["floor"] if "floor" in best else None,
                    "x_peer": best[r["impl"]] / fastest if fastest else None,
                }
            )
        return out
    best = {r["impl"]: max(run["rate"] for run in r["runs"]) for r in block}
    peers = [best[name] for name in best if name not in impls.NOT_PEERS]
    fastest_peer = max(peers) if peers else None
    for r in block:
        rates = [run["rate"] for run in r["runs"]]
        rate = best[r["impl"]]
        out.append(
            {
                "impl": r["impl"],
                "rate": rate,
                "spread": (max(rates) - min(rates)) / statistics.mean(rates),
                "x_floor": rate / best["floor"] if "floor" in best else None,
                "x_peer": rate / fastest_peer if fastest_peer else None,
            }
        )
    return out


def _display_name(impl: str) -> str:
    """Implementation names for the tables: asyncpool's rows in bold."""
    return f"**{impl}**" if impl.startswith("asyncpool") else impl


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_block(block: list[dict[str, Any]]) -> None:
    workload, loop, k = _key(block[0])
    for s in summarise(block):
        if workload == "W5":
            print(
                f"  {loop:8} K={k:<5} {s['impl']:28} p50 {s['p50'] * 1e6:8.1f} us"
                f"  p99 {s['p99'] * 1e6:8.1f} us  spread {s['spread']:4.0%}"
                f"  x floor {_ratio(s['x_floor'])}",
                flush=True,
            )
        else:
            print(
                f"  {loop:8} K={k:<5} {s['impl']:28} {s['rate']:>10,.0f} jobs/s"
                f"  spread {s['spread']:4.0%}  x floor {_ratio(s['x_floor']):>5}"
                f"  x fastest peer {_ratio(s['x_peer']):>5}",
                flush=True,
            )


def blocks(results: dict[str, Any], workload: str) -> list[list[dict[str, Any]]]:
    keys: list[tuple[str, str, int]] = []
    for row in results["rows"]:
        if row["workload"] == workload and _key(row) not in keys:
            keys.append(_key(row))
    return [[r for r in results["rows"] if _key(r) == key] for key in keys]


def markdown(results: dict[str, Any], other: dict[str, Any] | None = None) -> str:
    """The results section: `results`' tables, and with `other` (a run on
    another interpreter) a side-by-side table of the two."""
    v = results["versions"]
    sizes = results["sizes"]
    lines = [
        f"Measured {results['date']} on {results['machine']} (shared and noisy), "
        f"Python {v['python']}, best of {results['repeat']} runs, each in a fresh "
        f"process; the whole run took {_minutes(results)}."
    ]
    if other is None:
        lines += [
            "",
            "| package | version |",
            "| --- | --- |",
            *(f"| {name} | {version} |" for name, version in v.items() if name != "python"),
        ]
    else:
        ov = other["versions"]
        where = "" if other["machine"] == results["machine"] else f" on {other['machine']}"
        lines[0] += (
            f" A second run on Python {ov['python']} (measured {other['date']}{where}, "
            f"best of {other['repeat']}, {_minutes(other)}) is set beside it in the last "
            f"section; the other tables and the plots are the Python {v['python']} run."
        )
        names = [n for n in dict.fromkeys([*v, *ov]) if n != "python"]
        lines += [
            "",
            f"| package | Python {v['python']} | Python {ov['python']} |",
            "| --- | --- | --- |",
            *(f"| {n} | {v.get(n, '-')} | {ov.get(n, '-')} |" for n in names),
        ]
    lines += [
        "",
        "Jobs per run: "
        + ", ".join(f"{w} N = {n:,}" for w, n in sizes.items() if w != "W5")
        + (f"; W5: {sizes['W5']:,} samples after {WARMUP} thrown away." if "W5" in sizes else "."),
        "",
        "*x floor* is the rate divided by the floor's; *x fastest peer* is the rate "
        "divided by that of the fastest of TaskGroup + Semaphore, aiojobs, asyncio-pool, "
        "aiometer and anyio in the same row group (so the fastest peer shows 1.00). "
        "*spread* is (max - min) / mean of the runs.",
    ]
    for workload in [w for w in sizes if w != "W5"]:
        lines += [
            "",
            f"### {workload}: {impls.WORKLOADS[workload].title}",
            "",
            f"![{workload}: jobs per second by implementation](../_static/bench-"
            f"{workload.lower()}.png)",
            "",
            "| loop | K | implementation | jobs/s | spread | x floor | x fastest peer |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for block in blocks(results, workload):
            _, loop, k = _key(block[0])
            for s in summarise(block):
                name = _display_name(s["impl"])
                lines.append(
                    f"| {loop} | {k} | {name} | {s['rate']:,.0f} | {s['spread']:.0%} "
                    f"| {_ratio(s['x_floor'])} | {_ratio(s['x_peer'])} |"
                )
    if "W5" in sizes:
        lines += [
            "",
            "### W5: submit-to-start latency with idle workers",
            "",
            "![W5: median submit-to-start latency](../_static/bench-w5.png)",
            "",
            "Microseconds from just before the submit call to the first line of the "
            "job; best (lowest) p50 and p99 of the runs; *x floor* is p50 divided by "
            "the floor's p50 (higher is slower). aiometer has no submit call (it maps "
            "over a sequence given up front), so it has no row here.",
            "",
            "| loop | K | implementation | p50 µs | p99 µs | spread (p50) | x floor (p50) |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for block in blocks(results, "W5"):
            _, loop, k = _key(block[0])
            for s in summarise(block):
                name = _display_name(s["impl"])
                lines.append(
                    f"| {loop} | {k} | {name} | {s['p50'] * 1e6:.1f} | {s['p99'] * 1e6:.1f} "
                    f"| {s['spread']:.0%} | {_ratio(s['x_floor'])} |"
                )
    if other is not None:
        lines += ["", *side_by_side(results, other)]
    return "\n".join(lines)


def _minutes(results: dict[str, Any]) -> str:
    return f"{results['seconds'] / 60:.0f} minutes"


def _minor(results: dict[str, Any]) -> str:
    return ".".join(results["versions"]["python"].split(".")[:2])


def _version_key(results: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", results["versions"]["python"])[:3])


Summaries = dict[tuple[str, str, int], dict[str, dict[str, Any]]]


def _summaries(results: dict[str, Any]) -> Summaries:
    """summarise() of every (workload, loop, K), by implementation."""
    out: Summaries = {}
    for workload in results["sizes"]:
        for block in blocks(results, workload):
            out[_key(block[0])] = {s["impl"]: s for s in summarise(block)}
    return out


# The columns of the side-by-side table: (implementation, ratio, heading).
SIDE_BY_SIDE = [
    ("asyncpool (default)", "x_floor", "default x floor"),
    ("asyncpool (default)", "x_peer", "default x fastest peer"),
    ("asyncpool (queue_size=0)", "x_floor", "queue_size=0 x floor"),
    ("asyncpool (queue_size=0)", "x_peer", "queue_size=0 x fastest peer"),
]


def side_by_side(results: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """A table with both interpreters' floor and asyncpool ratios in each cell
    (the older Python first), for every (workload, loop, K) of either run."""
    runs = sorted([results, other], key=_version_key)
    tables = [_summaries(run) for run in runs]
    names = [f"Python {run['versions']['python']}" for run in runs]
    keys = list(dict.fromkeys([*tables[0], *tables[1]]))
    missing = [key for key in keys if not all(key in table for table in tables)]
    if missing:
        print(f"warning: only one of the two runs has {missing}", file=sys.stderr)
    lines = [
        f"### Python {_minor(runs[0])} and {_minor(runs[1])} side by side",
        "",
        f"Each cell is *{names[0]} / {names[1]}*. *default* is asyncpool (default) and "
        "*queue_size=0* is asyncpool (queue_size=0); each ratio is against the floor and "
        "the fastest peer measured on the same interpreter, as in the tables above. "
        "W5's ratios are of the p50 latency (higher is slower).",
    ]
    shared = [w for w in runs[0]["sizes"] if w in runs[1]["sizes"]]
    if any(runs[0]["sizes"][w] != runs[1]["sizes"][w] for w in shared):
        print("warning: the two runs used different N", file=sys.stderr)
        lines[-1] += (
            " The two runs used different N: "
            + "; ".join(
                f"{name}: " + ", ".join(f"{w} {run['sizes'][w]:,}" for w in shared)
                for name, run in zip(names, runs, strict=True)
            )
            + "."
        )
    headings = " | ".join(heading for _, _, heading in SIDE_BY_SIDE)
    rule = " | ".join("---:" for _ in SIDE_BY_SIDE)
    for latency in (False, True):
        chosen = [key for key in keys if (key[0] == "W5") == latency]
        if not chosen:
            continue
        floor = "floor p50 µs" if latency else "floor jobs/s"
        lines += [
            "",
            f"| workload | loop | K | {floor} | {headings} |",
            f"| --- | --- | ---: | ---: | {rule} |",
        ]
        for key in chosen:
            rows = [table.get(key, {}) for table in tables]
            floors = [row.get("floor") for row in rows]
            cells = [
                " / ".join(
                    "-"
                    if s is None
                    else (f"{s['p50'] * 1e6:.1f}" if latency else f"{s['rate']:,.0f}")
                    for s in floors
                )
            ]
            for impl, ratio, _ in SIDE_BY_SIDE:
                cells.append(
                    " / ".join(_ratio(row[impl][ratio] if impl in row else None) for row in rows)
                )
            workload, loop, k = key
            lines.append(f"| {workload} | {loop} | {k} | {' | '.join(cells)} |")
    return lines


def write_page(results: dict[str, Any], other: dict[str, Any] | None = None) -> None:
    text = PAGE.read_text()
    if START_MARK not in text or END_MARK not in text:
        raise SystemExit(f"{PAGE} lacks the markers {START_MARK} / {END_MARK}")
    head, rest = text.split(START_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    PAGE.write_text(f"{head}{START_MARK}\n\n{markdown(results, other)}\n\n{END_MARK}{tail}")
    print(f"wrote the results into {PAGE.relative_to(ROOT)}")


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for workload in results["sizes"]:
        groups = blocks(results, workload)
        if not groups:
            continue
        loops = list(dict.fromkeys(_key(b[0])[1] for b in groups))
        ks = list(dict.fromkeys(_key(b[0])[2] for b in groups))
        names = list(dict.fromkeys(r["impl"] for b in groups for r in b))
        fig, axes = plt.subplots(1, len(loops), figsize=(6 * len(loops), 4.5), squeeze=False)
        width = 0.8 / len(names)
        for ax, loop in zip(axes[0], loops, strict=True):
            for j, name in enumerate(names):
                values, worst = [], []
                for k in ks:
                    runs = [r["runs"] for b in groups for r in b if _is(r, workload, loop, k, name)]
                    if not runs:
                        values.append(0.0)
                        worst.append(0.0)
                    elif workload == "W5":
                        values.append(min(run["p50"] for run in runs[0]) * 1e6)
                        worst.append(max(run["p50"] for run in runs[0]) * 1e6)
                    else:
                        values.append(max(run["rate"] for run in runs[0]))
                        worst.append(min(run["rate"] for run in runs[0]))
                xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(ks))]
                hatch = "//" if name.startswith("asyncpool") else None
                ax.bar(xs, values, width, label=name, hatch=hatch, edgecolor="black", lw=0.3)
                # A line from the best run to the worst one: the spread.
                ax.vlines(xs, values, worst, colors="black", lw=0.8)
            ax.set_xticks(range(len(ks)), [f"K = {k}" for k in ks])
            ax.set_title(f"{workload} on {loop}")
            ax.set_ylabel("p50 latency (µs, lower is better)" if workload == "W5" else "jobs/s")
            ax.yaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
            ax.grid(axis="y", alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(
            f"{_title(workload)}, N = {results['sizes'][workload]:,}; "
            f"bar: best of {results['repeat']}, line: down to the worst",
            fontsize=10,
        )
        fig.tight_layout()
        path = STATIC / f"bench-{workload.lower()}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        print(f"wrote {path.relative_to(ROOT)}")


# -------------------------------------------------------------------- main


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        workload, loop, k, impl, n = sys.argv[2:7]
        result = child(workload, loop, int(k), impl, int(n))
        print(json.dumps({**result, "python": platform.python_version()}))
        return
    if sys.argv[1:2] == ["--child-versions"]:
        print(json.dumps({"versions": versions(), "executable": sys.executable}))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N / 10 (W5 too), one run each")
    parser.add_argument("--jobs", type=int, help="N for W1 to W4 (W5 keeps its samples)")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    parser.add_argument("--workers", default="8,64,1024")
    parser.add_argument("--loop", default="asyncio,uvloop")
    parser.add_argument("--impls", default="", help="comma-separated names; default all")
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--json", default="/tmp/asyncpool-peers.json", help="raw results")
    parser.add_argument(
        "--python",
        default=sys.executable,
        metavar="PATH",
        help="interpreter the children run on (default: this one)",
    )
    parser.add_argument("--render-only", metavar="JSON", help="re-render saved results")
    parser.add_argument(
        "--compare", metavar="JSON", help="saved results of another interpreter, side by side"
    )
    parser.add_argument("--no-write", action="store_true", help="leave docs/ alone")
    args = parser.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.render_only and args.python != sys.executable:
        parser.error("--python runs children; --render-only runs none")
    # Read before measuring: a bad path should not cost a whole run.
    other = json.loads(Path(args.compare).read_text()) if args.compare else None
    if args.render_only:
        results = json.loads(Path(args.render_only).read_text())
    else:
        results = run_suite(args)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"\nraw results in {args.json}; {results['seconds']} s in all")
    print()
    print(markdown(results, other))
    if not args.no_write:
        write_page(results, other)
        plot(results)


if __name__ == "__main__":
    main()
