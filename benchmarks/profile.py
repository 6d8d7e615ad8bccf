#!/usr/bin/env python3
"""Benchmark `strata profile` against DuckDB, Polars and pandas on the same files, in one run.

    scripts/bench --stages profile          # or, with the release build and peers at hand:
    python3 benchmarks/profile.py [--rows 20000000] [--files 8] [--repeat 5] [--json FILE]

Data: `strata synth` (census preset, seed 0) under bench-data/, generated if missing.
Times, each in its own process so peak memory (max RSS) is per job:
  - strata profile (whole process: start-up, listing, planning, the pass, rendering);
  - the same aggregates (rows, positives, labelled rows, weight, positive weight per group
    of sex, race, age_band and sex x race x age_band, missing values as a group) in
    DuckDB (GROUP BY GROUPING SETS), Polars (lazy scan, one `collect_all`) and pandas
    (read_parquet, four `groupby(dropna=False)`), each timed inside its process from
    reading to result, so the interpreter's start-up is not charged to it; their group
    counts must agree;
  - DuckDB GROUP BY over the finest cells only;
  - scan_floor: DataFusion decoding the same columns and nothing else, through
    strata's engine, as a whole process (start-up, listing, footers, the scan: like for
    like with strata) and the scan alone; and `--coded` (strings as Parquet
    dictionaries, as strata's profile reads them).
The goal's ratio is taken against the faster of the two floors.
Runs strata and the peers round robin, then strata and the floors round robin
(a process started right after a DuckDB process runs slower, so the floors and strata
are compared without one in between), and prints the median of --repeat runs (at
least 5 with the peers and 9 with the floors: these are sub-second processes that move
by a tenth from run to run, and their rounds are cheap) and the ratios. Peers missing
from the interpreter (Polars outside scripts/bench's venv) are left out with a note.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

from harness import ROOT, TARGET, bench_spec, census_data, ratio, run, write_result

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

GROUPINGS = [["sex"], ["race"], ["age_band"], ["sex", "race", "age_band"]]

POLARS = r"""
import sys, time, polars as pl
t = time.perf_counter()
lf = pl.scan_parquet(sys.argv[1] + "/*.parquet")
aggs = [pl.len().alias("n"), (pl.col("label") == 1).sum().alias("pos"), pl.col("label").count().alias("labelled"),
        pl.col("weight").sum().alias("w"), pl.when(pl.col("label") == 1).then(pl.col("weight")).sum().alias("wpos")]
out = pl.collect_all([lf.group_by(g).agg(aggs) for g in %r])
print(f"seconds={time.perf_counter() - t:.4f} groups={sum(len(o) for o in out)}")
""" % GROUPINGS

PANDAS = r"""
import sys, time, pandas as pd
t = time.perf_counter()
df = pd.read_parquet(sys.argv[1], columns=["sex", "race", "age_band", "label", "weight"])
df["pos"] = df["label"] == 1
df["wpos"] = df["weight"].where(df["pos"], 0.0)
groups = 0
for g in %r:
    out = df.groupby(g, dropna=False, observed=True).agg(n=("label", "size"), pos=("pos", "sum"),
        labelled=("label", "count"), w=("weight", "sum"), wpos=("wpos", "sum"))
    groups += len(out)
print(f"seconds={time.perf_counter() - t:.4f} groups={groups}")
""" % GROUPINGS


def importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


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
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here (scripts/bench)")
    args = ap.parse_args()

    data = census_data(args.rows, args.files)
    size = sum(f.stat().st_size for f in data.glob("*.parquet"))
    strata = TARGET / "release" / "strata"
    scan = TARGET / "release" / "scan_floor"
    spec = bench_spec("census", data, ROOT / "bench-data" / "specs")

    strata_job = [str(strata), "-q", "profile", str(spec), "--format", "json"]
    env_threads = {"POLARS_MAX_THREADS": str(args.threads)}
    os.environ.update(env_threads)
    peers = {
        "DuckDB GROUPING SETS": [sys.executable, "-c", DUCK, str(data), "grouping_sets", str(args.threads)],
        "DuckDB GROUP BY cells": [sys.executable, "-c", DUCK, str(data), "cells", str(args.threads)],
    }
    missing = []
    for name, module, code in (("Polars", "polars", POLARS), ("pandas", "pandas", PANDAS)):
        if importable(module):
            peers[name] = [sys.executable, "-c", code, str(data)]
        else:
            missing.append(name)
    floors = {
        "DataFusion scan floor": [str(scan), str(spec)],
        "DataFusion scan floor, coded": [str(scan), str(spec), "--coded"],
    }
    groups = {}
    for name, cmd in [("strata", strata_job), *peers.items(), *floors.items()]:
        _, _, out = run(cmd)  # warm the page cache and the binaries
        if name in peers and name != "DuckDB GROUP BY cells":
            groups[name] = int(field(out, "groups"))
    if len(set(groups.values())) != 1:
        sys.exit(f"the peers disagree on the number of groups: {groups}")

    def rounds(others: dict[str, list[str]], repeat: int) -> tuple[list[float], dict, dict, dict]:
        """strata and `others` round robin, one run of each per round, so that the
        machine's drift (10-20 % within minutes here) reaches every job alike."""
        mine, times, process, mems = [], {n: [] for n in others}, {n: [] for n in others}, {"strata profile": []}
        for _ in range(repeat):
            wall, rss, _ = run(strata_job)
            mine.append(wall)
            mems["strata profile"].append(rss)
            for name, cmd in others.items():
                wall, rss, out = run(cmd)
                times[name].append(field(out, "seconds"))
                process[name].append(wall)
                mems.setdefault(name, []).append(rss)
        return mine, times, process, mems

    # Two sets of rounds: strata with the peers, then strata with the floors. A process
    # that starts right after a DuckDB process runs measurably slower (the floor by
    # ~6 %, strata by ~10-15 %: BENCHMARKS.md), so the floor comparison runs without
    # peer processes in between, each side under the same conditions. pandas is slow
    # enough that fewer runs of it say as much.
    slow = {n: peers.pop(n) for n in ("pandas",) if n in peers}
    peer_repeat, floor_repeat = max(args.repeat, 5), max(args.repeat, 9)
    mine_duck, duck_times, _, duck_mems = rounds(peers, peer_repeat)
    _, slow_times, _, slow_mems = rounds(slow, max(1, min(2, args.repeat))) if slow else ([], {}, {}, {})
    mine_floor, floor_times, floor_process, floor_mems = rounds(floors, floor_repeat)
    s_duck, s_floor = statistics.median(mine_duck), statistics.median(mine_floor)
    rss = lambda mems, name: max(mems[name])  # noqa: E731
    results = {
        "strata profile (rounds with the peers)": (s_duck, rss(duck_mems, "strata profile")),
        **{name: (statistics.median(duck_times[name]), rss(duck_mems, name)) for name in peers},
        **{name: (statistics.median(slow_times[name]), rss(slow_mems, name)) for name in slow},
        "strata profile (rounds with the floors)": (s_floor, rss(floor_mems, "strata profile")),
    }
    for name in floors:
        results[name] = (statistics.median(floor_times[name]), rss(floor_mems, name))
        results[f"{name} (whole process)"] = (statistics.median(floor_process[name]), rss(floor_mems, name))

    setup = (f"{args.rows:,} rows, {args.files} files, {size / 1e6:.0f} MB zstd Parquet, "
             f"{args.threads} threads, medians of {peer_repeat} (with DuckDB and Polars), "
             f"{min(2, args.repeat) if slow else 0} (pandas), {floor_repeat} (with the floors)")
    print(f"\n{setup}\n")
    print("| job | seconds | peak RSS (MiB) |\n| --- | ---: | ---: |")
    for name, (t, m) in results.items():
        print(f"| {name} | {t:.3f} | {m} |")
    floor = min(results[f"{name} (whole process)"][0] for name in floors)
    ratios = [ratio("strata / DuckDB (GROUPING SETS)", s_duck / results["DuckDB GROUPING SETS"][0], "<= 0.7"),
              ratio("strata / DuckDB (finest cells only)", s_duck / results["DuckDB GROUP BY cells"][0]),
              ratio("strata / scan floor (faster floor, both whole processes)", s_floor / floor, "<= 1.15")]
    if "Polars" in peers:
        ratios.append(ratio("strata / Polars", s_duck / results["Polars"][0]))
    if "pandas" in slow:
        ratios.append(ratio("strata / pandas", s_duck / results["pandas"][0], "<= 0.1"))
    for r in ratios:
        print(f"{r['name']} = {r['value']:.2f}" + (f"  (goal {r['goal']}: {'met' if r['met'] else 'NOT met'})" if "goal" in r else ""))
    for name in missing:
        print(f"{name} left out: not importable here (scripts/bench installs it)")
    jobs = [{"job": k, "seconds": round(v[0], 4), "peak_rss_mib": v[1]} for k, v in results.items()]
    write_result(args.json, "profile", setup, jobs, ratios)


if __name__ == "__main__":
    main()
