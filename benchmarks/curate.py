#!/usr/bin/env python3
"""Benchmark `strata curate` against DuckDB doing the same in SQL, on the same files.

    cargo build --release -p strata-cli
    python3 benchmarks/curate.py [--rows 20000000] [--files 8] [--memory-limit 1GiB]

Jobs, each in its own process (peak RSS; strata's wall time, DuckDB's time of its SQL
alone), for reweigh and for an exact undersample to a uniform mix over sex x race x
age_band:
  - strata (split, curation, stratified shuffled zstd shards, manifest, summary);
  - strata again under --memory-limit (DataFusion's memory pool, spilling);
  - DuckDB doing the same job in SQL (benchmarks/duckdb_curate.py `same`: split by
    row_number() per cell, the curation, shards by row_number() per stratum), its
    output then checked against strata's run: equal rows per (split, stratum), equal
    shard sizes, shuffle order inside shards, Kamiran-Calders weights;
  - DuckDB doing only the job's core (`minimal`: no split, one unsorted file), which
    is less work than strata's, for reference.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import shutil
import sys

from duckdb_curate import check_same
from harness import ROOT, TARGET, latest_run, run, synthetic_data

DUCKDB_CURATE = pathlib.Path(__file__).with_name("duckdb_curate.py")


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
        for kind, dest in (("same", scratch / f"duckdb-{job}"), ("minimal", scratch / f"duckdb-{job}-minimal.parquet")):
            _, rss, out = run([sys.executable, str(DUCKDB_CURATE), job, kind, str(data), str(dest), str(args.threads)])
            # the SQL's own time, without starting Python and importing DuckDB (~0.2 s)
            seconds = float(out.split("seconds=", 1)[1].split()[0])
            rows.append((f"DuckDB {job} ({kind})", seconds, rss))
    print(f"\n{args.rows:,} rows, {args.files} files, {args.threads} threads, one run each\n")
    print("strata: wall time of the process; DuckDB: its SQL's own time (without starting Python)\n")
    print("| job | seconds | peak RSS (MiB) |\n| --- | ---: | ---: |")
    for name, wall, rss in rows:
        print(f"| {name} | {wall:.2f} | {rss} |")
    by = {n: (w, m) for n, w, m in rows}
    for kind, note in (("same", "the same job; goal <= 1.0"), ("minimal", "DuckDB doing less, for reference")):
        for job in ("reweigh", "undersample"):
            print(f"strata / DuckDB {job} ({kind}): {by[f'strata {job}'][0] / by[f'DuckDB {job} ({kind})'][0]:.2f}  ({note})")
        # the issue states its DuckDB figure for both jobs together
        both = {who: sum(by[f"{who} {job}" + ("" if who == "strata" else f" ({kind})")][0]
                         for job in ("reweigh", "undersample")) for who in ("strata", "DuckDB")}
        print(f"strata / DuckDB ({kind}), reweigh + undersample together: {both['strata']:.2f} s / "
              f"{both['DuckDB']:.2f} s = {both['strata'] / both['DuckDB']:.2f}")
    failed = False
    # DuckDB's `same` output must be the same job's: counts per stratum and shard as strata's
    for job in ("reweigh", "undersample"):
        problems = check_same(job, scratch / f"duckdb-{job}", scratch / f"strata-{job}")
        failed |= bool(problems)
        print(f"DuckDB {job} (same) checked against strata's run: "
              f"{'; '.join(problems) or 'same rows per (split, stratum) and per shard'}")
    # the memory limit changes speed and memory, never the shards
    for job in ("reweigh", "undersample"):
        hashes = [shard_hashes(scratch / f"strata-{job}{suffix}") for suffix in ("", "-limited")]
        same = hashes[0] == hashes[1] and hashes[0]
        failed |= not same
        print(f"{job}: {len(hashes[0])} shards, limited run byte-identical: {'yes' if same else 'NO'}")
    sys.exit(1 if failed else 0)


def shard_hashes(out: pathlib.Path) -> dict:
    """(path, sha256) of every shard of the run `out/_latest` points at, hashed here."""
    run_dir, manifest = latest_run(out)
    return {s["path"]: hashlib.sha256((run_dir / s["path"]).read_bytes()).hexdigest() for s in manifest["shards"]}


if __name__ == "__main__":
    main()
