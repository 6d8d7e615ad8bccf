#!/usr/bin/env python3
"""strata against its peers, every stage, in one run: what `scripts/bench` runs.

    scripts/bench [--rows 20M] [--files 8] [--stages synth,profile,curate,train,eval,run,scale]
                  [--repeat 3] [--memory-limit 1GiB] [--scale-rows 20M,60M,200M] [--json FILE]

Generates the data once (`strata synth`, census preset, seed 0, under bench-data/), then
runs each stage's benchmark (benchmarks/STAGE.py, each also runnable alone) on the same
files, streaming their output, and ends with one table of every job (median seconds,
peak RSS) and every ratio against its goal, also written as JSON (--json). Stages:

  synth    `strata synth` itself: rows per second writing the data
  profile  strata vs DuckDB, Polars, pandas, and the decode-only scan floor
  curate   reweigh, exact undersample, exact oversample: strata vs DuckDB (the same
           job in SQL, checked), pandas, and the copy floor
  train    strata vs PyTorch and Keras on the same encoded rows (Adult)
  eval     strata eval with 1,000 replicates vs Fairlearn's MetricFrame (scaled)
  run      `strata run pipelines/synth-census.toml` end to end on the generated data
  scale    bounded memory: profile and curate under --memory-limit at each of
           --scale-rows (time per row, peak RSS against the limit; benchmarks/scale.py)

Exits non-zero when a stage fails (a peer's output differing from strata's is a
failure); an unmet goal is reported in the table, not an error.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from harness import ROOT, STRATA, TARGET, bench_spec, census_data, measure, write_result

STAGES = ("synth", "profile", "curate", "train", "eval", "run", "scale")


def count(text: str) -> int:
    """20M, 200k, 1G or a plain number."""
    text = text.strip()
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform(),
            "python": platform.python_version(), "commit": commit or None,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def synth_stage(rows: int, files: int, out: pathlib.Path) -> None:
    """`strata synth` timed into a scratch folder (the benchmark data itself is cached)."""
    dest = ROOT / "bench-data" / "synth-timed"
    m = measure([str(STRATA), "-q", "synth", "--rows", str(rows), "--files", str(files), "--seed", "0",
                 "--out", str(dest), "--overwrite"])
    size = sum(f.stat().st_size for f in dest.glob("*.parquet"))
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    print(f"strata synth: {rows:,} rows in {m.wall:.1f} s ({rows / m.wall / 1e6:.1f} M rows/s, "
          f"{size / 1e6:.0f} MB), peak RSS {m.rss_mib} MiB")
    write_result(out, "synth", f"{rows:,} rows, {files} files, census preset",
                 [{"job": "strata synth", "seconds": round(m.wall, 3), "peak_rss_mib": m.rss_mib,
                   "note": f"{rows / m.wall / 1e6:.1f} M rows/s"}], [])


def run_stage(data: pathlib.Path, rows: int, out: pathlib.Path) -> None:
    """`strata run` end to end (validate … report) on the generated data."""
    scratch = ROOT / "bench-data" / "run-out"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    spec = bench_spec("synth-census", data, ROOT / "bench-data" / "specs")
    m = measure([str(STRATA), "-q", "run", str(spec), "--out", str(scratch)], check=False)
    found = sorted(scratch.rglob("run.json"))
    if not found:
        sys.exit(f"strata run wrote no run.json: {m.out}")
    report = json.loads(found[-1].read_text())  # a failed gate is the model's verdict, not the benchmark's
    stages = {s["name"]: s["seconds"] for s in report["stages"]}
    print(f"strata run on {rows:,} rows: {m.wall:.1f} s, peak RSS {m.rss_mib} MiB; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items() if isinstance(v, (int, float))))
    jobs = [{"job": "strata run (whole pipeline)", "seconds": round(m.wall, 2), "peak_rss_mib": m.rss_mib}]
    jobs += [{"job": f"  {k}", "seconds": v} for k, v in stages.items() if isinstance(v, (int, float))]
    write_result(out, "run", f"{rows:,} rows, pipelines/synth-census.toml", jobs, [])


def table(results: list[dict]) -> str:
    lines = ["| stage | job | seconds | peak RSS (MiB) | note |", "| --- | --- | ---: | ---: | --- |"]
    for r in results:
        for j in r["jobs"]:
            secs = j.get("seconds")
            lines.append(f"| {r['stage']} | {j['job']} | {'' if secs is None else f'{secs:.3f}'} | "
                         f"{j.get('peak_rss_mib') or ''} | {j.get('note') or j.get('rows_per_second') or ''} |")
    lines += ["", "| stage | ratio | value | goal | met |", "| --- | --- | ---: | --- | --- |"]
    for r in results:
        for q in r["ratios"]:
            met = {True: "yes", False: "**no**"}.get(q.get("met"), "")
            lines.append(f"| {r['stage']} | {q['name']} | {q['value']:.2f} | {q.get('goal', '')} | {met} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rows", type=count, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--stages", default="synth,profile,curate,train,eval,run")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs whose median is reported: the profile's jobs, curate's strata jobs and copy floor")
    ap.add_argument("--memory-limit", default="1GiB")
    ap.add_argument("--scale-rows", default="20M,60M,200M")
    ap.add_argument("--json", type=pathlib.Path, default=ROOT / "bench-data" / "bench.json")
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        sys.exit(f"error: unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGES)})")
    for b in ("strata", "scan_floor", "sql_timer"):
        if not (TARGET / "release" / b).exists():
            sys.exit(f"error: {TARGET / 'release' / b} is missing: cargo build --release --workspace --bins")

    data = census_data(args.rows, args.files)
    parts = ROOT / "bench-data" / "bench"
    parts.mkdir(parents=True, exist_ok=True)
    here = pathlib.Path(__file__).parent
    common = ["--rows", str(args.rows), "--files", str(args.files)]
    commands = {
        "profile": [sys.executable, str(here / "profile.py"), *common, "--repeat", str(args.repeat)],
        "curate": [sys.executable, str(here / "curate.py"), *common, "--memory-limit", args.memory_limit,
                   "--repeat", str(args.repeat)],
        "train": [sys.executable, str(here / "train.py")],
        "eval": [sys.executable, str(here / "eval.py"), "--replicates", "1000"],
        "scale": [sys.executable, str(here / "scale.py"), "--rows", args.scale_rows, "--files", str(args.files),
                  "--memory-limit", args.memory_limit],
    }
    results, failed = [], []
    for stage in stages:
        part = parts / f"{stage}.json"
        part.unlink(missing_ok=True)
        print(f"\n==> {stage}", flush=True)
        started = time.perf_counter()
        if stage == "synth":
            synth_stage(args.rows, args.files, part)
        elif stage == "run":
            run_stage(data, args.rows, part)
        else:
            status = subprocess.run([*commands[stage], "--json", str(part)]).returncode
            if status != 0:
                failed.append(stage)
        print(f"({stage}: {time.perf_counter() - started:.0f} s)", flush=True)
        if part.exists():
            results.append(json.loads(part.read_text()))

    info = machine()
    print(f"\n==> results: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, commit {info['commit']}, "
          f"{info['date']}\n")
    for r in results:
        print(f"{r['stage']}: {r['setup']}")
    print()
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": info, "rows": args.rows, "files": args.files, "stages": results}, indent=1))
    print(f"\nwritten: {args.json}")
    if failed:
        sys.exit(f"error: stage(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
