#!/usr/bin/env python3
"""Benchmark `strata curate` against DuckDB, pandas and a copy floor on the same files.

    scripts/bench --stages curate          # or, with the release build and peers at hand:
    python3 benchmarks/curate.py [--rows 20000000] [--files 8] [--memory-limit 1GiB] [--json FILE]

Data: `strata synth` (census preset, seed 0) under bench-data/, generated if missing.
Jobs, each in its own process (peak RSS; strata's wall time, the peers' time of their
work alone, without starting Python), for reweigh, an exact undersample to a uniform mix
over sex x race x age_band and an exact oversample to a uniform mix over sex
(benchmarks/census-*.toml):
  - strata (split, curation, stratified shuffled zstd shards, manifest, summary);
  - strata again under --memory-limit (DataFusion's memory pool, spilling);
  - DuckDB doing the same job in SQL (benchmarks/duckdb_curate.py `same`: split by
    row_number() per cell, the curation, shards by row_number() per stratum), its
    output then checked against strata's run: equal rows per (split, stratum), equal
    shard sizes, shuffle order inside shards, Kamiran-Calders weights;
  - DuckDB doing only the job's core (`minimal`: no split, one unsorted file), which
    is less work than strata's, for reference;
  - pandas the way a notebook does it: read_parquet, the closed-form weights (merge) or
    `groupby(dropna=False).sample()`, `to_parquet(compression="zstd")`; no split, no
    shards: less work than strata's;
  - the copy floor: DataFusion, through strata's engine, reading the source and writing
    it as zstd Parquet, nothing else (`sql_timer` running `COPY`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import shutil
import statistics
import sys

from duckdb_curate import JOB_GROUPS, GROUP, check_same
from harness import ROOT, TARGET, bench_spec, census_data, latest_run, ratio, run, write_result

DUCKDB_CURATE = pathlib.Path(__file__).with_name("duckdb_curate.py")
JOBS = ("reweigh", "undersample", "oversample")

PANDAS = r"""
import sys, time, pandas as pd
data, job, out, group = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
t = time.perf_counter()
df = pd.read_parquet(data)
if job == "reweigh":
    cell = group + ["label"]
    w_gy = df.groupby(cell, dropna=False, observed=True)["weight"].sum().rename("w_gy").reset_index()
    w_g = df.groupby(group, dropna=False, observed=True)["weight"].sum().rename("w_g").reset_index()
    w_y = df.groupby("label")["weight"].sum().rename("w_y").reset_index()
    f = w_gy.merge(w_g, on=group).merge(w_y, on="label")
    f["factor"] = f["w_g"] * f["w_y"] / (df["weight"].sum() * f["w_gy"])
    df = df.merge(f[cell + ["factor"]], on=cell, how="left")
    df["sample_weight"] = df["weight"] * df["factor"]
    df = df.drop(columns="factor")
else:
    sizes = df.groupby(group, dropna=False, observed=True).size()
    k = int(sizes.min() if job == "undersample" else sizes.max())
    df = df.groupby(group, dropna=False, observed=True, group_keys=False).sample(
        n=k, replace=job == "oversample", random_state=1)
df.to_parquet(out, compression="zstd", index=False)
print(f"seconds={time.perf_counter() - t:.3f} rows={len(df)}")
"""


def seconds(out: str) -> float:
    return float(out.split("seconds=", 1)[1].split()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-limit", default="1GiB")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of strata's jobs and of the copy floor, whose median is reported "
                         "(one of each peer: they take minutes)")
    ap.add_argument("--jobs", default=",".join(JOBS), help="comma-separated, from " + ", ".join(JOBS))
    ap.add_argument("--no-pandas", action="store_true", help="leave pandas out (it needs the data in memory)")
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here (scripts/bench)")
    args = ap.parse_args()
    jobs = [j for j in args.jobs.split(",") if j]
    data = census_data(args.rows, args.files)
    size = sum(f.stat().st_size for f in data.glob("*.parquet"))
    scratch = ROOT / "bench-data" / "out"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    strata = str(TARGET / "release" / "strata")
    specs = ROOT / "bench-data" / "specs"
    rows = []

    # the copy floor: read everything, write it as zstd Parquet, nothing else
    copy_out = scratch / "copy-floor"
    copy_sql = (f"COPY (SELECT * FROM source) TO '{copy_out}/' STORED AS PARQUET "
                "OPTIONS (compression 'zstd(3)')")
    wall, rss = median_run([str(TARGET / "release" / "sql_timer"), str(bench_spec("census", data, specs)), copy_sql],
                           copy_out, args.repeat)
    rows.append(("copy floor (DataFusion read + zstd Parquet write)", wall, rss, "whole process"))
    shutil.rmtree(copy_out, ignore_errors=True)

    for job in jobs:
        spec = str(bench_spec(f"census-{job}", data, specs))
        out = scratch / f"strata-{job}"
        wall, rss = median_run([strata, "-q", "curate", spec, "--out", str(out)], out, args.repeat)
        rows.append((f"strata {job}", wall, rss, "whole process"))
        wall, rss, out = run([strata, "-q", "curate", spec, "--out", str(scratch / f"strata-{job}-limited"),
                              "--memory-limit", args.memory_limit], check=False)
        name = f"strata {job} --memory-limit {args.memory_limit}"
        rows.append((name + (f" ({out})" if out.startswith("FAILED") else ""), wall, rss, "whole process"))
        for kind, dest in (("same", scratch / f"duckdb-{job}"), ("minimal", scratch / f"duckdb-{job}-minimal.parquet")):
            _, rss, out = run([sys.executable, str(DUCKDB_CURATE), job, kind, str(data), str(dest), str(args.threads)])
            note = "the same job; its SQL alone" if kind == "same" else "no split, one file; its SQL alone"
            rows.append((f"DuckDB {job} ({kind})", seconds(out), rss, note))
        if not args.no_pandas:
            group = ",".join(JOB_GROUPS.get(job, GROUP))
            _, rss, out = run([sys.executable, "-c", PANDAS, str(data), job, str(scratch / f"pandas-{job}.parquet"), group],
                              check=False)
            if out.startswith("FAILED"):
                rows.append((f"pandas {job} ({out})", float("nan"), rss, "failed"))
            else:
                rows.append((f"pandas {job}", seconds(out), rss, "no split, one file; read to written"))
            (scratch / f"pandas-{job}.parquet").unlink(missing_ok=True)

    setup = (f"{args.rows:,} rows, {args.files} files, {size / 1e6:.0f} MB zstd Parquet, "
             f"{args.threads} threads; strata (without a limit) and the copy floor: medians of "
             f"{args.repeat}, the others one run each")
    print(f"\n{setup}\n")
    print("| job | seconds | peak RSS (MiB) | timed |\n| --- | ---: | ---: | --- |")
    for name, wall, rss, note in rows:
        print(f"| {name} | {wall:.2f} | {rss} | {note} |")
    by = {n: w for n, w, _, _ in rows}
    floor = by["copy floor (DataFusion read + zstd Parquet write)"]
    ratios = []
    for job in jobs:
        ratios.append(ratio(f"strata {job} / DuckDB (same job)", by[f"strata {job}"] / by[f"DuckDB {job} (same)"], "<= 0.5"))
        ratios.append(ratio(f"strata {job} / DuckDB (minimal, less work)", by[f"strata {job}"] / by[f"DuckDB {job} (minimal)"]))
        ratios.append(ratio(f"strata {job} / copy floor", by[f"strata {job}"] / floor, "<= 1.5"))
        if f"pandas {job}" in by:
            ratios.append(ratio(f"strata {job} / pandas (less work)", by[f"strata {job}"] / by[f"pandas {job}"], "<= 0.1"))
    for r in ratios:
        print(f"{r['name']} = {r['value']:.2f}" + (f"  (goal {r['goal']}: {'met' if r['met'] else 'NOT met'})" if "goal" in r else ""))
    failed = False
    # DuckDB's `same` output must be the same job's: counts per stratum and shard as strata's
    for job in jobs:
        problems = check_same(job, scratch / f"duckdb-{job}", scratch / f"strata-{job}")
        failed |= bool(problems)
        print(f"DuckDB {job} (same) checked against strata's run: "
              f"{'; '.join(problems) or 'same rows per (split, stratum) and per shard'}")
    # the memory limit changes speed and memory, never the shards
    for job in jobs:
        hashes = [shard_hashes(scratch / f"strata-{job}{suffix}") for suffix in ("", "-limited")]
        same = hashes[0] == hashes[1] and hashes[0]
        failed |= not same
        print(f"{job}: {len(hashes[0])} shards, limited run byte-identical: {'yes' if same else 'NO'}")
    jobs_out = [{"job": n, "seconds": round(w, 3), "peak_rss_mib": m, "note": note} for n, w, m, note in rows]
    write_result(args.json, "curate", setup, jobs_out, ratios)
    sys.exit(1 if failed else 0)


def median_run(cmd: list[str], out: pathlib.Path, repeat: int) -> tuple[float, int]:
    """Median wall seconds and largest peak RSS of `repeat` runs of `cmd`, each into an
    empty `out` (the last run's output is kept for the checks)."""
    walls, rsss = [], []
    for _ in range(max(repeat, 1)):
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, _ = run(cmd)
        walls.append(wall)
        rsss.append(rss)
    return statistics.median(walls), max(rsss)


def shard_hashes(out: pathlib.Path) -> dict:
    """(path, sha256) of every shard of the run `out/_latest` points at, hashed here."""
    run_dir, manifest = latest_run(out)
    return {s["path"]: hashlib.sha256((run_dir / s["path"]).read_bytes()).hexdigest() for s in manifest["shards"]}


if __name__ == "__main__":
    main()
