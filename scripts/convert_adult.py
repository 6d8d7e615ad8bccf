#!/usr/bin/env python3
"""Convert the raw UCI Adult files into the Parquet strata ships under data/adult/.

    python3 scripts/convert_adult.py [--raw data/raw/adult] [--out data/adult]

Rules (see data/README.md):
- column names follow adult.names, with '-' replaced by '_' so they are plain SQL
  identifiers (education-num -> education_num, ...);
- '?' becomes null; every row is kept, none is dropped;
- adult.test's first line ('|1x3 Cross validator') is not a record and is skipped;
  its labels lose their trailing period ('>50K.' -> '>50K');
- fnlwgt (the census sampling weight) is kept as an integer column;
- the output is zstd-compressed Parquet, one file per official split.

Needs pyarrow. The output is deterministic for a given pyarrow version.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = [
    ("age", pa.int64()),
    ("workclass", pa.string()),
    ("fnlwgt", pa.int64()),
    ("education", pa.string()),
    ("education_num", pa.int64()),
    ("marital_status", pa.string()),
    ("occupation", pa.string()),
    ("relationship", pa.string()),
    ("race", pa.string()),
    ("sex", pa.string()),
    ("capital_gain", pa.int64()),
    ("capital_loss", pa.int64()),
    ("hours_per_week", pa.int64()),
    ("native_country", pa.string()),
    ("income", pa.string()),
]

EXPECTED_SHA256 = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}


def parse(path: pathlib.Path) -> pa.Table:
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256[path.name]:
        sys.exit(f"{path}: sha256 {digest} does not match the documented raw file")
    values: list[list] = [[] for _ in COLUMNS]
    for lineno, line in enumerate(raw.decode("ascii").splitlines(), start=1):
        if not line.strip() or line.startswith("|"):
            continue  # blank trailing lines and the test file's header comment
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(COLUMNS):
            sys.exit(f"{path}:{lineno}: expected {len(COLUMNS)} fields, found {len(fields)}")
        for i, ((name, typ), field) in enumerate(zip(COLUMNS, fields)):
            if field == "?":
                values[i].append(None)
            elif typ == pa.int64():
                values[i].append(int(field))
            elif name == "income":
                values[i].append(field.rstrip("."))
            else:
                values[i].append(field)
    schema = pa.schema([pa.field(n, t) for n, t in COLUMNS])
    return pa.Table.from_arrays([pa.array(v, type=t) for v, (_, t) in zip(values, COLUMNS)], schema=schema)


def main() -> None:
    here = pathlib.Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=pathlib.Path, default=here / "data" / "raw" / "adult")
    ap.add_argument("--out", type=pathlib.Path, default=here / "data" / "adult")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for raw_name, out_name in (("adult.data", "train.parquet"), ("adult.test", "test.parquet")):
        table = parse(args.raw / raw_name)
        pq.write_table(table, args.out / out_name, compression="zstd", write_statistics=True)
        print(f"{args.raw / raw_name} -> {args.out / out_name}: {table.num_rows} rows")


if __name__ == "__main__":
    main()
