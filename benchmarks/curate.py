#!/usr/bin/env python3
"""Benchmark `strata curate` against DuckDB doing the same in SQL, on the same files.

    cargo build --release -p strata-cli
    python3 benchmarks/curate.py [--rows 20000000] [--files 8] [--memory-limit 1GiB]

Jobs (each in its own process; wall time and peak RSS):
  - reweigh: strata (split + Kamiran–Calders + zstd Parquet) vs DuckDB (aggregate,
    window over the cells, join back, COPY TO zstd Parquet);
  - exact undersample to a uniform mix over sex x race x age_band: strata vs DuckDB
    (row_number() over (partition by stratum order by hash(id)), COPY TO zstd Parquet);
  - the strata jobs again under --memory-limit (DataFusion's memory pool, spilling).
DuckDB does less work than strata here (no train/validation/test split, no summary,
no read-back), so the comparison flatters DuckDB.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import sys

from harness import ROOT, TARGET, run, synthetic_data

DUCK = r"""
import sys, time, duckdb
data, job, out, threads = sys.argv[1:5]
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
files = data + "/*.parquet"
if job == "reweigh":
    sql = f'''COPY (
      WITH cells AS (SELECT sex, race, age_band, label, sum(weight) AS w_gy FROM read_parquet('{files}') GROUP BY ALL),
      f AS (SELECT *, sum(w_gy) OVER (PARTITION BY sex, race, age_band) * sum(w_gy) OVER (PARTITION BY label)
                       / (sum(w_gy) OVER () * w_gy) AS factor FROM cells)
      SELECT s.*, s.weight * f.factor AS sample_weight
      FROM read_parquet('{files}') s JOIN f USING (sex, race, age_band, label)
    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)'''
else:
    sql = f'''COPY (
      WITH ranked AS (
        SELECT *, row_number() OVER (PARTITION BY sex, race, age_band ORDER BY hash(id)) AS rn FROM read_parquet('{files}')),
      k AS (SELECT min(n) AS k FROM (SELECT count(*) AS n FROM read_parquet('{files}') GROUP BY sex, race, age_band))
      SELECT ranked.* EXCLUDE (rn) FROM ranked, k WHERE rn <= k.k
    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)'''
t = time.perf_counter()
con.execute(sql)
print(f"seconds={time.perf_counter() - t:.3f}")
"""



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-limit", default="1GiB")
    args = ap.parse_args()
    data = synthetic_data(args.rows, args.files)
    scratch = ROOT / "bench-data" / "out"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    strata = str(TARGET / "release" / "strata")
    rows = []
    for job in ("reweigh", "undersample"):
        spec = str(ROOT / "benchmarks" / f"synthetic-{job}.toml")
        wall, rss, _ = run([strata, "-q", "curate", spec, "--out", str(scratch / f"strata-{job}")])
        rows.append((f"strata {job}", wall, rss))
        wall, rss, out = run([strata, "-q", "curate", spec, "--out", str(scratch / f"strata-{job}-limited"),
                              "--memory-limit", args.memory_limit], check=False)
        name = f"strata {job} --memory-limit {args.memory_limit}"
        rows.append((name + (f" ({out})" if out.startswith("FAILED") else ""), wall, rss))
        wall, rss, out = run([sys.executable, "-c", DUCK, str(data), job, str(scratch / f"duckdb-{job}.parquet"), str(args.threads)])
        rows.append((f"DuckDB {job}", wall, rss))
    print(f"\n{args.rows:,} rows, {args.files} files, {args.threads} threads, one run each\n")
    print("| job | seconds (wall) | peak RSS (MiB) |\n| --- | ---: | ---: |")
    for name, wall, rss in rows:
        print(f"| {name} | {wall:.2f} | {rss} |")
    by = {n: (w, m) for n, w, m in rows}
    for job in ("reweigh", "undersample"):
        print(f"strata / DuckDB {job}: {by[f'strata {job}'][0] / by[f'DuckDB {job}'][0]:.2f}  (goal <= 1.0)")
    # the issue states its DuckDB figure for both jobs together
    both = {who: sum(by[f"{who} {job}"][0] for job in ("reweigh", "undersample")) for who in ("strata", "DuckDB")}
    print(f"strata / DuckDB, reweigh + undersample together: {both['strata']:.2f} s / {both['DuckDB']:.2f} s = "
          f"{both['strata'] / both['DuckDB']:.2f}")
    # the memory limit changes speed and memory, never the shards
    for job in ("reweigh", "undersample"):
        hashes = [shard_hashes(scratch / f"strata-{job}{suffix}") for suffix in ("", "-limited")]
        same = hashes[0] == hashes[1] and hashes[0]
        print(f"{job}: {len(hashes[0])} shards, limited run byte-identical: {'yes' if same else 'NO'}")


def shard_hashes(out: pathlib.Path) -> dict:
    """(path, sha256) of every shard of the run `out/_latest` points at, hashed here."""
    latest = json.loads((out / "_latest").read_text())
    manifest = json.loads((out / latest["manifest"]).read_text())
    run = (out / latest["manifest"]).parent
    return {s["path"]: hashlib.sha256((run / s["path"]).read_bytes()).hexdigest() for s in manifest["shards"]}


if __name__ == "__main__":
    main()
