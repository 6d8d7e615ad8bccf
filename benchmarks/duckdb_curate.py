#!/usr/bin/env python3
"""DuckDB doing strata's curation jobs in SQL, for benchmarks/curate.py.

    python3 benchmarks/duckdb_curate.py JOB KIND DATA OUT THREADS

JOB: `reweigh`, `undersample` or `oversample` (benchmarks/census-{JOB}.toml). KIND:

  - `same`: the job strata runs, step for step, in plain SQL: the train / validation /
    test split stratified by group x label (`row_number()` per cell in (split hash,
    sample hash) order, the first floor(n*0.8 + 0.5) rows train, up to floor(n*0.9 + 0.5)
    validation); Kamiran-Calders weights over the training rows, or the exact uniform
    undersample of the training rows (`row_number()` per group in (sample hash, split
    hash) order, the smallest k kept), or the exact uniform oversample (each row of a
    group of n rows floor(k/n) copies, one more for its k mod n first rows in that order,
    k the largest group); then stratified shards of at most 500,000 rows
    per split, each stratum cut into consecutive blocks in shuffle-hash order (a third
    `row_number()`), rows of a shard in that order, one zstd Parquet file per shard.
    DuckDB's `hash` stands in for strata's XXH3 hash, so the rows differ, but every
    count (rows per split and stratum, rows per shard) must equal strata's:
    `check_same` compares them after the timing.
  - `minimal`: only the job's core, the way one would write it without a split or
    shards: reweigh = aggregate, window over the cells, join back, `COPY TO` one file;
    undersample = `row_number()` per group in hash(id) order, `COPY TO` one file;
    oversample = the same row numbers, each row repeated as above, `COPY TO` one file.

Joins on group columns are null-safe (`IS NOT DISTINCT FROM`): a missing value is a group.

Prints `seconds=...` (the SQL alone, without starting Python).
"""
from __future__ import annotations

import collections
import pathlib
import sys
import time

import duckdb

from harness import latest_run

GROUP = ["sex", "race", "age_band"]
CELL = GROUP + ["label"]
# benchmarks/census-oversample.toml groups by sex alone (see there why)
JOB_GROUPS = {"oversample": ["sex"]}


def groups(job: str) -> tuple[list[str], list[str]]:
    """The job's protected attributes, and them with the label."""
    g = JOB_GROUPS.get(job, GROUP)
    return g, g + ["label"]
TRAIN, VALIDATION = 0.8, 0.1  # strata's default [split]
SHARD_ROWS = 500_000  # strata's default publish.shard_rows


def cols(names: list[str], prefix: str = "") -> str:
    return ", ".join(prefix + n for n in names)


def on(a: str, b: str, names: list[str]) -> str:
    """A null-safe equi-join condition: missing values are a group, as in strata."""
    return " AND ".join(f"{a}.{n} IS NOT DISTINCT FROM {b}.{n}" for n in names)


def copies(ranked: str, k: str) -> str:
    """The exact oversample's copies of `ranked` rows (rs: rank in group, n: group size)."""
    return f"""SELECT r.* EXCLUDE (rs, n), unnest(range(CAST({k} // r.n + CASE WHEN r.rs < {k} % r.n THEN 1 ELSE 0 END
                  AS BIGINT))) AS copy FROM {ranked} r"""


def same_job_sql(job: str, files: str) -> str:
    """The curated rows with `split`, `shard` and the shuffle hash `h3`."""
    GROUP, CELL = groups(job)
    strata = CELL if job == "reweigh" else GROUP  # the shards' strata, as strata's
    if job == "reweigh":
        curate = f"""
  train_cells AS (SELECT {cols(CELL)}, sum(weight) AS w_gy FROM split WHERE split = 'train' GROUP BY ALL),
  factors AS (SELECT {cols(CELL)}, sum(w_gy) OVER (PARTITION BY {cols(GROUP)}) * sum(w_gy) OVER (PARTITION BY label)
                     / (sum(w_gy) OVER () * w_gy) AS factor FROM train_cells),
  curated AS (SELECT s.*, CASE WHEN split = 'train' THEN s.weight * f.factor ELSE s.weight END AS sample_weight
              FROM split s LEFT JOIN factors f ON {on('s', 'f', CELL)}),"""
    elif job == "oversample":
        curate = f"""
  g AS (SELECT {cols(GROUP)}, count(*) AS n FROM split WHERE split = 'train' GROUP BY ALL),
  k AS (SELECT max(n) AS k FROM g),
  ranked_sample AS (SELECT s.*, row_number() OVER (PARTITION BY {cols(GROUP, 's.')} ORDER BY h2, h1) - 1 AS rs, g.n
                    FROM split s JOIN g ON {on('s', 'g', GROUP)} WHERE split = 'train'),
  copied AS ({copies('ranked_sample', '(SELECT k FROM k)')}),
  curated AS (SELECT * EXCLUDE (copy), weight AS sample_weight FROM copied
              UNION ALL SELECT *, weight AS sample_weight FROM split WHERE split <> 'train'),"""
    else:
        curate = f"""
  k AS (SELECT min(n) AS k FROM (SELECT count(*) AS n FROM split WHERE split = 'train' GROUP BY {cols(GROUP)})),
  ranked_sample AS (SELECT *, row_number() OVER (PARTITION BY {cols(GROUP)} ORDER BY h2, h1) - 1 AS rs
                    FROM split WHERE split = 'train'),
  curated AS (SELECT ranked_sample.* EXCLUDE (rs), weight AS sample_weight FROM ranked_sample, k WHERE rs < k.k
              UNION ALL SELECT *, weight AS sample_weight FROM split WHERE split <> 'train'),"""
    return f"""
  WITH src AS (SELECT *, hash(1, id) AS h1, hash(2, id) AS h2 FROM read_parquet('{files}')),
  ranked AS (SELECT *, row_number() OVER (PARTITION BY {cols(CELL)} ORDER BY h1, h2) - 1 AS r,
                    count(*) OVER (PARTITION BY {cols(CELL)}) AS n FROM src),
  split AS (SELECT * EXCLUDE (r, n), CASE WHEN r < floor(n * {TRAIN} + 0.5) THEN 'train'
                 WHEN r < floor(n * {TRAIN + VALIDATION} + 0.5) THEN 'validation' ELSE 'test' END AS split
            FROM ranked),{curate}
  shuffled AS (SELECT *, hash(h1, h2) AS h3 FROM curated),
  strata AS (SELECT split, {cols(strata)}, count(*) AS c FROM shuffled GROUP BY ALL),
  sized AS (SELECT *, CAST(ceil(sum(c) OVER (PARTITION BY split) / {SHARD_ROWS}) AS BIGINT) AS shards FROM strata),
  -- block sizes: floor(c/S), one more in c mod S shards, starting after the previous
  -- stratum's last extra row, as strata deals them (strata here in value order, in
  -- strata by id: other shards get a stratum's extra row, the shard sizes are the same)
  blocks AS (SELECT *, c // shards AS q, c % shards AS e,
                    coalesce(sum(c % shards) OVER (PARTITION BY split ORDER BY {cols(strata)}
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) % shards AS o FROM sized),
  placed AS (SELECT *, row_number() OVER (PARTITION BY split, {cols(strata)} ORDER BY h3) - 1 AS rr FROM shuffled)
  SELECT p.* EXCLUDE (h1, h2, rr),
         CAST(((CASE WHEN rr < b.e * (b.q + 1) THEN rr // (b.q + 1) ELSE b.e + (rr - b.e * (b.q + 1)) // b.q END) + b.o)
               % b.shards AS INTEGER) AS shard
  FROM placed p JOIN blocks b ON {on('p', 'b', ['split', *strata])}"""


def minimal_sql(job: str, files: str, out: str) -> str:
    GROUP, CELL = groups(job)
    if job == "reweigh":
        return f"""COPY (
      WITH cells AS (SELECT {cols(CELL)}, sum(weight) AS w_gy FROM read_parquet('{files}') GROUP BY ALL),
      f AS (SELECT *, sum(w_gy) OVER (PARTITION BY {cols(GROUP)}) * sum(w_gy) OVER (PARTITION BY label)
                       / (sum(w_gy) OVER () * w_gy) AS factor FROM cells)
      SELECT s.*, s.weight * f.factor AS sample_weight
      FROM read_parquet('{files}') s JOIN f ON {on('s', 'f', CELL)}
    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"""
    if job == "oversample":
        return f"""COPY (
      WITH g AS (SELECT {cols(GROUP)}, count(*) AS n FROM read_parquet('{files}') GROUP BY ALL),
      ranked AS (SELECT s.*, row_number() OVER (PARTITION BY {cols(GROUP, 's.')} ORDER BY hash(id)) - 1 AS rs, g.n
                 FROM read_parquet('{files}') s JOIN g ON {on('s', 'g', GROUP)}),
      copied AS ({copies('ranked', '(SELECT max(n) FROM g)')})
      SELECT * EXCLUDE (copy) FROM copied
    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"""
    return f"""COPY (
      WITH ranked AS (
        SELECT *, row_number() OVER (PARTITION BY {cols(GROUP)} ORDER BY hash(id)) AS rn FROM read_parquet('{files}')),
      k AS (SELECT min(n) AS k FROM (SELECT count(*) AS n FROM read_parquet('{files}') GROUP BY {cols(GROUP)}))
      SELECT ranked.* EXCLUDE (rn) FROM ranked, k WHERE rn <= k.k
    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"""


def run_same(con, job: str, files: str, out: pathlib.Path) -> None:
    con.execute(f"CREATE TEMP TABLE curated AS ({same_job_sql(job, files)})")
    for split, shard in con.execute("SELECT DISTINCT split, shard FROM curated ORDER BY ALL").fetchall():
        (out / split).mkdir(parents=True, exist_ok=True)
        con.execute(f"""COPY (SELECT * EXCLUDE (shard, h3) FROM curated WHERE split = '{split}' AND shard = {shard}
                        ORDER BY h3) TO '{out / split / f"part-{shard:05d}.parquet"}' (FORMAT parquet, COMPRESSION zstd)""")


def check_same(job: str, duck_out: pathlib.Path, strata_out: pathlib.Path) -> list[str]:
    """What differs between DuckDB's shards and strata's published run: rows per
    (split, stratum), the rows of the shards of each split, the shuffle order inside
    DuckDB's shards, and for reweigh the independence of group and label under the
    training weights. An empty list: DuckDB did the same job."""
    _, manifest = latest_run(strata_out)
    strata = manifest["stratum_columns"]
    want_counts, want_shards = collections.Counter(), collections.Counter()
    for shard in manifest["shards"]:
        want_shards[(shard["split"], shard["rows"])] += 1
        for stratum in shard["strata"]:
            want_counts[(shard["split"], *stratum["values"])] += stratum["rows"]
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    files = f"{duck_out}/*/*.parquet"
    got_counts = {tuple(r[:-1]): r[-1] for r in con.execute(
        f"SELECT split, {', '.join(f'CAST({c} AS VARCHAR)' for c in strata)}, count(*) FROM read_parquet('{files}') GROUP BY ALL").fetchall()}
    shards = con.execute(f"""SELECT split, count(*), bool_and(h3 >= prev) FROM (
        SELECT split, filename, hash(hash(1, id), hash(2, id)) AS h3,
               lag(hash(hash(1, id), hash(2, id)), 1, 0) OVER (PARTITION BY filename ORDER BY file_row_number) AS prev
        FROM read_parquet('{files}', filename = true, file_row_number = true)) GROUP BY split, filename""").fetchall()
    problems = []
    if got_counts != dict(want_counts):
        problems.append(f"rows per (split, stratum) differ from strata's ({len(got_counts)} vs {len(want_counts)} strata)")
    if collections.Counter((s, n) for s, n, _ in shards) != want_shards:
        problems.append("shard sizes differ from strata's")
    if not all(ordered for *_, ordered in shards):
        problems.append("a shard's rows are not in shuffle-hash order")
    if job == "reweigh":
        rates, total, natural = con.execute(f"""SELECT max(rate) - min(rate), sum(w), sum(nat) FROM (
            SELECT sum(sample_weight * label) / sum(sample_weight) AS rate, sum(sample_weight) AS w, sum(weight) AS nat
            FROM read_parquet('{files}') WHERE split = 'train' GROUP BY {cols(GROUP)}
            -- a group with one label only keeps its rate, and W_g W_y / W of its weight
            HAVING min(label) = 0 AND max(label) = 1)""").fetchone()
        if rates > 1e-9 or abs(total - natural) > 1e-6 * natural:
            problems.append(f"training weights not Kamiran-Calders (label rates spread {rates}, total {total} vs {natural})")
    return problems


def main() -> None:
    job, kind, data, out, threads = sys.argv[1:6]
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET enable_progress_bar = false")
    files = f"{data}/*.parquet"
    start = time.perf_counter()
    if kind == "same":
        run_same(con, job, files, pathlib.Path(out))
    else:
        con.execute(minimal_sql(job, files, out))
    print(f"seconds={time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
