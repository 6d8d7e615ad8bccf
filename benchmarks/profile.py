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
    (strings as Parquet dictionaries, four partitions per core).
The goal's ratio is taken against the faster of the two floors.
Runs strata and the DuckDB queries round robin, then strata and the floors round robin
(a process started right after a DuckDB process runs slower, so the floors and strata
are compared without one in between), and prints the median of --repeat runs and the
ratios. Needs pyarrow, numpy and duckdb (the test venv has them).
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

    strata_job = [str(strata), "-q", "profile", str(spec), "--format", "json"]
    peers = {
        "DuckDB GROUPING SETS": [sys.executable, "-c", DUCK, str(data), "grouping_sets", str(args.threads)],
        "DuckDB GROUP BY cells": [sys.executable, "-c", DUCK, str(data), "cells", str(args.threads)],
    }
    floors = {
        "DataFusion scan floor": [str(scan), str(spec)],
        "DataFusion scan floor, coded": [str(scan), str(spec), "--coded"],
    }
    for cmd in [strata_job, *peers.values(), *floors.values()]:
        run(cmd)  # warm the page cache and the binaries

    def rounds(others: dict[str, list[str]]) -> tuple[list[float], dict, dict, dict]:
        """strata and `others` round robin, one run of each per round, so that the
        machine's drift (10-20 % within minutes here) reaches every job alike."""
        mine, times, process, mems = [], {n: [] for n in others}, {n: [] for n in others}, {"strata profile": []}
        for _ in range(args.repeat):
            wall, rss, _ = run(strata_job)
            mine.append(wall)
            mems["strata profile"].append(rss)
            for name, cmd in others.items():
                wall, rss, out = run(cmd)
                times[name].append(field(out, "seconds"))
                process[name].append(wall)
                mems.setdefault(name, []).append(rss)
        return mine, times, process, mems

    # Two sets of rounds: strata with DuckDB, then strata with the floors. A process
    # that starts right after a DuckDB process runs measurably slower (the floor by
    # ~6 %, strata by ~10-15 %: BENCHMARKS.md), so the floor comparison runs without
    # DuckDB processes in between, each side under the same conditions.
    mine_duck, duck_times, _, duck_mems = rounds(peers)
    mine_floor, floor_times, floor_process, floor_mems = rounds(floors)
    s_duck, s_floor = statistics.median(mine_duck), statistics.median(mine_floor)
    rss = lambda mems, name: max(mems[name])  # noqa: E731
    results = {
        "strata profile (rounds with DuckDB)": (s_duck, rss(duck_mems, "strata profile")),
        **{name: (statistics.median(duck_times[name]), rss(duck_mems, name)) for name in peers},
        "strata profile (rounds with the floors)": (s_floor, rss(floor_mems, "strata profile")),
    }
    for name in floors:
        results[name] = (statistics.median(floor_times[name]), rss(floor_mems, name))
        results[f"{name} (whole process)"] = (statistics.median(floor_process[name]), rss(floor_mems, name))

    print(f"\n{args.rows:,} rows, {args.files} files, {size / 1e6:.0f} MB zstd Parquet, "
          f"{args.threads} threads, median of {args.repeat}\n")
    print(f"| job | seconds | peak RSS (MiB) |\n| --- | ---: | ---: |")
    for name, (t, m) in results.items():
        print(f"| {name} | {t:.3f} | {m} |")
    duck = results["DuckDB GROUPING SETS"][0]
    print(f"\nstrata / DuckDB GROUPING SETS = {s_duck / duck:.2f}  (goal <= 1.0)")
    print(f"strata / DuckDB cells         = {s_duck / results['DuckDB GROUP BY cells'][0]:.2f}")
    for name in floors:
        print(f"strata / {name[len('DataFusion '):]}, both whole processes = {s_floor / results[f'{name} (whole process)'][0]:.2f}")
    floor = min(results[f"{name} (whole process)"][0] for name in floors)
    print(f"strata / the faster floor, both whole processes = {s_floor / floor:.2f}  (goal <= 1.2)")
    print(f"strata (whole process) / scan floor (scan alone) = {s_floor / results['DataFusion scan floor'][0]:.2f}")
    print(json.dumps({k: {"seconds": v[0], "peak_rss_mib": v[1]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
