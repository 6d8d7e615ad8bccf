#!/usr/bin/env python3
"""Bounded memory and time against rows: strata's data stages on data far larger than
their memory limit.

    scripts/bench --stages scale [--scale-rows 20M,60M,200M] [--memory-limit 1GiB]
    python3 benchmarks/scale.py --rows 20M,60M,200M [--memory-limit 1GiB] [--run-rows 20M] [--jobs run,...] [--json FILE]

For each size: `strata synth` data (census preset, seed 0; a file per 25M rows, at
least --files), then, each in its own process under `--memory-limit` with spill files
in --spill-dir (bench-data/spill by default, emptied after each job; data past 20M
rows is removed after its jobs unless --keep-data):
  - strata profile;
  - strata curate reweigh, and the exact undersample, with publish (zstd shards);
  - `strata run pipelines/synth-census.toml` with `train.shuffle = "shards"` (every
    stage: training and evaluation included) at the sizes up to --run-rows, since
    training two models is minutes per ten million rows on two cores.
Prints seconds, seconds per million rows, peak RSS (from the kernel's rusage), the
largest the spill folder grew (sampled every 0.2 s) and the input's size. The memory
limit bounds DataFusion's pool and the shard writer's buffers; the process also holds
the binary, the runtime, Parquet decoders and the Arrow batches in flight, which is
why peak RSS sits above the limit by a roughly constant amount.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from harness import ROOT, STRATA, bench_spec, census_data, ratio, write_result


def count(text: str) -> int:
    text = text.strip()
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def mib(size: str) -> float:
    """`1GiB`, `512MiB`, `2GB` in MiB."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]i?B)?\s*", size)
    if not m:
        sys.exit(f"error: --memory-limit {size!r}: expected a size such as 1GiB")
    unit = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}.get(m.group(2), 1)
    return float(m.group(1)) * unit / 2**20


def folder_bytes(path: pathlib.Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def job(cmd: list[str], spill: pathlib.Path) -> dict:
    """Wall seconds, peak RSS and the spill folder's largest size of one process."""
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    peak, done = [0], threading.Event()

    def watch():
        while not done.wait(0.2):
            peak[0] = max(peak[0], folder_bytes(spill))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with tempfile.TemporaryFile("w+") as err_f:  # a file: a full pipe would block the child
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        done.set()
        watcher.join()
        err_f.seek(0)
        err = err_f.read()
    code = os.waitstatus_to_exitcode(status)
    shutil.rmtree(spill, ignore_errors=True)
    # `strata run` exits 1 when a gate fails: the model's verdict, not a failed job
    if code not in (0, 1) or (code == 1 and " run " not in f" {' '.join(cmd)} "):
        sys.exit(f"{' '.join(cmd)} failed ({code}): {err[-2000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mib": usage.ru_maxrss // 1024,
            "spill_peak_mib": peak[0] // (1 << 20), "exit": code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="20M,60M,200M")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--memory-limit", default="1GiB")
    ap.add_argument("--spill-dir", type=pathlib.Path, default=ROOT / "bench-data" / "spill")
    ap.add_argument("--run-rows", type=count, default=20_000_000, help="`strata run` at sizes up to this")
    ap.add_argument("--keep-data", action="store_true", help="keep the generated data past 20M rows")
    ap.add_argument("--jobs", default="profile,reweigh,undersample,run",
                    help="which jobs to time (comma-separated): profile, reweigh, undersample, run")
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here (scripts/bench)")
    args = ap.parse_args()
    sizes = [count(r) for r in args.rows.split(",") if r]
    wanted = {j.strip() for j in args.jobs.split(",") if j.strip()}
    if not wanted <= {"profile", "reweigh", "undersample", "run"}:
        sys.exit(f"error: --jobs {args.jobs!r}: expected some of profile, reweigh, undersample, run")
    limit = ["--memory-limit", args.memory_limit, "--spill-dir", str(args.spill_dir)]
    specs = ROOT / "bench-data" / "specs"
    scratch = ROOT / "bench-data" / "scale-out"
    results = []
    for rows in sizes:
        files = max(args.files, -(-rows // 25_000_000))
        data = census_data(rows, files)
        size = sum(f.stat().st_size for f in data.glob("*.parquet"))
        jobs = [("profile", [str(STRATA), "-q", "profile", str(bench_spec("census", data, specs)), "--format", "json"])]
        for kind in ("reweigh", "undersample"):
            jobs.append((f"curate {kind}", [str(STRATA), "-q", "curate", str(bench_spec(f"census-{kind}", data, specs)),
                                            "--out", str(scratch)]))
        if rows <= args.run_rows:
            # under a memory limit the models train a shard at a time (docs/training.md)
            spec = bench_spec("synth-census", data, specs)
            spec.write_text(spec.read_text().replace("[train]\n", '[train]\nshuffle = "shards"\n', 1))
            jobs.append(("run", [str(STRATA), "-q", "run", str(spec), "--out", str(scratch)]))
        for name, cmd in jobs:
            if name.removeprefix("curate ") not in wanted:
                continue
            shutil.rmtree(scratch, ignore_errors=True)
            m = job([*cmd, *limit], args.spill_dir)
            m.update(job=f"{name}, {rows / 1e6:g}M rows", rows=rows, input_mib=size >> 20,
                     per_million_rows=round(m["seconds"] / (rows / 1e6), 3))
            results.append(m)
            print(f"{name:20} {rows:>13,} rows {m['seconds']:8.1f} s  {m['per_million_rows']:6.3f} s/M rows  "
                  f"peak RSS {m['peak_rss_mib']:6} MiB  spill peak {m['spill_peak_mib']:7} MiB  input {size >> 20} MiB",
                  flush=True)
        shutil.rmtree(scratch, ignore_errors=True)
        if rows > 20_000_000 and not args.keep_data:
            shutil.rmtree(data)  # disk: 200M rows are 3 GB, and regenerating them takes a minute

    print(f"\n--memory-limit {args.memory_limit}\n")
    print("| job | seconds | s per M rows | peak RSS (MiB) | spill peak (MiB) | input (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for m in results:
        print(f"| {m['job']} | {m['seconds']:.1f} | {m['per_million_rows']:.3f} | {m['peak_rss_mib']} | "
              f"{m['spill_peak_mib']} | {m['input_mib']} |")
    ratios = []
    limit_mib = mib(args.memory_limit)
    for name in ("profile", "curate reweigh", "curate undersample", "run"):
        mine = [m for m in results if m["job"].startswith(name + ",")]
        if len(mine) >= 2:
            # time per row at the largest size against the smallest: 1.0 is linear
            ratios.append(ratio(f"{name}: s per row at {mine[-1]['rows'] / 1e6:g}M / at {mine[0]['rows'] / 1e6:g}M",
                                mine[-1]["per_million_rows"] / mine[0]["per_million_rows"]))
        if mine:
            ratios.append(ratio(f"{name}: peak RSS / memory limit at {mine[-1]['rows'] / 1e6:g}M rows",
                                mine[-1]["peak_rss_mib"] / limit_mib, "<= 1.0"))
    for r in ratios:
        print(f"{r['name']} = {r['value']:.2f}" + (f"  (goal {r['goal']}: {'met' if r['met'] else 'NOT met'})" if "goal" in r else ""))
    write_result(args.json, "scale", f"--memory-limit {args.memory_limit}, sizes {args.rows}", results, ratios)


if __name__ == "__main__":
    main()
