#!/usr/bin/env python3
"""Time two builds of strata against each other, runs interleaved, on the same arguments.

    python3 benchmarks/ab.py [--runs 5] OLD_BINARY NEW_BINARY -- ARGS...

`{out}` in ARGS becomes a fresh scratch folder for every run. For example, with the
previous build copied aside:

    python3 benchmarks/ab.py /tmp/strata-old target/release/strata -- \\
        -q curate benchmarks/synthetic-reweigh.toml --out {out}

This machine's speed drifts by 10-20 % within the hour, so two builds timed minutes
apart can differ by more than a change does; alternating them run by run puts both under
the same drift. Prints each build's median wall time, mean CPU time (user + system) and
peak RSS, and new / old.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile

from harness import measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="after --: the arguments of both builds")
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args:
        sys.exit("give the arguments after --")
    results: dict[str, list] = {"old": [], "new": []}
    for i in range(a.runs):
        for name, binary in (("old", a.old), ("new", a.new)):
            scratch = tempfile.mkdtemp(prefix="strata-ab-")
            try:
                m = measure([binary] + [x.replace("{out}", scratch) for x in args])
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            results[name].append(m)
            print(f"run {i + 1} {name}: {m.wall:.2f} s wall, {m.cpu:.2f} s CPU, {m.rss_mib} MiB", flush=True)
    summary = {}
    for name, ms in results.items():
        summary[name] = (statistics.median(m.wall for m in ms), statistics.mean(m.cpu for m in ms), max(m.rss_mib for m in ms))
    print(f"\n| build | median wall (s) | mean CPU (s) | peak RSS (MiB) |\n| --- | ---: | ---: | ---: |")
    for name, (wall, cpu, rss) in summary.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss} |")
    (ow, oc, _), (nw, nc, _) = summary["old"], summary["new"]
    print(f"\nnew / old: wall {nw / ow:.3f}, CPU {nc / oc:.3f}  ({a.runs} runs each, interleaved)")


if __name__ == "__main__":
    main()
