#!/usr/bin/env python3
"""Generate the synthetic benchmark dataset: skewed groups, a group-dependent label,
row weights and an id, as zstd Parquet in several files. Deterministic by seed.

    python3 benchmarks/gen_synthetic.py --rows 20000000 --files 8 --out bench-data/synthetic
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEX = (["female", "male"], [0.3, 0.7])
RACE = (["white", "black", "asian", "native", "other"], [0.72, 0.14, 0.08, 0.01, 0.05])
AGE = (["18-24", "25-34", "35-44", "45-54", "55-64", "65+"], [0.12, 0.24, 0.22, 0.19, 0.15, 0.08])


def categorical(rng, values, probs, n):
    codes = rng.choice(len(values), size=n, p=probs).astype(np.int8)
    return codes, pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(values)).cast(pa.string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench-data/synthetic"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.parquet"):
        old.unlink()
    rng = np.random.default_rng(args.seed)
    per_file = -(-args.rows // args.files)
    start = 0
    for i in range(args.files):
        n = min(per_file, args.rows - start)
        if n <= 0:
            break
        sex_c, sex = categorical(rng, *SEX, n)
        race_c, race = categorical(rng, *RACE, n)
        age_c, age = categorical(rng, *AGE, n)
        # base rate depends on the groups, so reweighing has something to correct
        p = 0.10 + 0.15 * sex_c + 0.04 * (race_c == 0) + 0.03 * age_c
        label = (rng.random(n) < p).astype(np.int8)
        weight = rng.gamma(2.0, 0.5, n)
        table = pa.table({
            "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "sex": sex,
            "race": race,
            "age_band": age,
            "label": pa.array(label),
            "weight": pa.array(weight),
            "score": pa.array(rng.normal(size=n).astype(np.float32)),
        })
        pq.write_table(table, args.out / f"part-{i:03d}.parquet", compression="zstd", row_group_size=1 << 20)
        start += n
    print(f"wrote {start} rows in {args.files} files to {args.out}")


if __name__ == "__main__":
    main()
