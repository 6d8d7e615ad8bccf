#!/usr/bin/env python3
"""Benchmark `strata profile` against DuckDB on the same synthetic files, in one run.

    cargo build --release -p strata-cli -p strata-benchmarks
    python3 benchmarks/profile.py [--rows 20000000] [--files 8] [--repeat 5]

Generates the data if missing (benchmarks/gen_synthetic.py), then times, each in its
own process so peak memory (max RSS) is per job:
  - strata profile (whole process: start-up, listing, planning, the pass, rendering);
  - DuckDB GROUP BY GROUPING SETS over the four groupings strata reports
    (query time inside the process, so DuckDB's Python start-up is not charged to it);
  - DuckDB GROUP BY over the finest cells only;
  - scan_floor: DataFusion decoding the same columns and nothing else, through
    strata's engine; timed both as a whole process (start-up, listing, footers, the
    scan: like for like with strata) and as the scan alone;
  - scan_floor --coded: the same, reading the columns the way strata's profile does
    (strings as Parquet dictionaries, two partitions per core).
The goal's ratio is taken against the faster of the two floors.
Runs the jobs round robin and prints the median of --repeat runs and the ratios. Needs pyarrow, numpy and duckdb
(the test venv has them).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from harness import ROOT, TARGET, run, synthetic_data

DUCK = r"""
import sys, time, duckdb
con = duckdb.connect()
con.execute(f"SET threads = {sys.argv[3]}")
files = sys.argv[1] + "/*.parquet"
sql = {
  "grouping_sets": '''SELECT sex, race, age_band, GROUPING(sex, race, age_band) AS g, count(*) AS n,
        sum(CASE WHEN label = 1 THEN 1 ELSE 0 END) AS pos, count(label) AS labelled, sum(weight) AS w,
        sum(CASE WHEN label = 1 THEN weight END) AS wpos
      FROM read_parquet(?) GROUP BY GROUPING SETS ((sex), (race), (age_band), (sex, race, age_band))''',
  "cells": '''SELECT sex, race, age_band, count(*) AS n, sum(CASE WHEN label = 1 THEN 1 ELSE 0 END) AS pos,
        count(label) AS labelled, sum(weight) AS w, sum(CASE WHEN label = 1 THEN weight END) AS wpos
      FROM read_parquet(?) GROUP BY sex, race, age_band''',
}[sys.argv[2]]
t = time.perf_counter()
rows = con.execute(sql, [files]).fetchall()
print(f"seconds={time.perf_counter() - t:.4f} groups={len(rows)}")
"""



def field(out: str, name: str) -> float:
    for tok in out.split():
        if tok.startswith(name + "="):
            return float(tok.split("=", 1)[1])
    raise ValueError(f"{name} not in {out!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    data = synthetic_data(args.rows, args.files)
    size = sum(f.stat().st_size for f in data.glob("*.parquet"))
    strata = TARGET / "release" / "strata"
    scan = TARGET / "release" / "scan_floor"
    spec = ROOT / "benchmarks" / "synthetic.toml"

    jobs = {
        "strata profile": [str(strata), "-q", "profile", str(spec), "--format", "json"],
        "DuckDB GROUPING SETS": [sys.executable, "-c", DUCK, str(data), "grouping_sets", str(args.threads)],
        "DuckDB GROUP BY cells": [sys.executable, "-c", DUCK, str(data), "cells", str(args.threads)],
        "DataFusion scan floor": [str(scan), str(spec)],  # query time; whole process below
        "DataFusion scan floor, coded": [str(scan), str(spec), "--coded"],
    }
    for cmd in jobs.values():
        run(cmd)  # warm the page cache and the binaries
    # round robin, one run of each job per round, so that the machine's drift (10-20 %
    # within minutes here) reaches every job alike
    times = {name: [] for name in jobs}
    mems = {name: [] for name in jobs}
    floors = ("DataFusion scan floor", "DataFusion scan floor, coded")
    floor_process = {name: [] for name in floors}
    for _ in range(args.repeat):
        for name, cmd in jobs.items():
            wall, rss, out = run(cmd)
            times[name].append(wall if name == "strata profile" else field(out, "seconds"))
            mems[name].append(rss)
            if name in floors:
                floor_process[name].append(wall)
    results = {name: (statistics.median(times[name]), max(mems[name])) for name in jobs}
    for name in floors:
        results[f"{name} (whole process)"] = (statistics.median(floor_process[name]), results[name][1])

    print(f"\n{args.rows:,} rows, {args.files} files, {size / 1e6:.0f} MB zstd Parquet, "
          f"{args.threads} threads, median of {args.repeat}\n")
    print(f"| job | seconds | peak RSS (MiB) |\n| --- | ---: | ---: |")
    for name, (t, m) in results.items():
        print(f"| {name} | {t:.3f} | {m} |")
    s = results["strata profile"][0]
    print(f"\nstrata / DuckDB GROUPING SETS = {s / results['DuckDB GROUPING SETS'][0]:.2f}  (goal <= 1.0)")
    print(f"strata / DuckDB cells         = {s / results['DuckDB GROUP BY cells'][0]:.2f}")
    for name in floors:
        print(f"strata / {name[len('DataFusion '):]}, both whole processes = {s / results[f'{name} (whole process)'][0]:.2f}")
    floor = min(results[f"{name} (whole process)"][0] for name in floors)
    print(f"strata / the faster floor, both whole processes = {s / floor:.2f}  (goal <= 1.2)")
    print(f"strata (whole process) / scan floor (scan alone) = {s / results['DataFusion scan floor'][0]:.2f}")
    print(json.dumps({k: {"seconds": v[0], "peak_rss_mib": v[1]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
