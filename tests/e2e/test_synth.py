"""`strata synth`: the generated data read back by DuckDB and pyarrow, against the
shares and effects docs/synth.md states; deterministic by seed, the same rows however
they are cut into files; any store; refusals."""
from __future__ import annotations

import hashlib
import json
import math
import pathlib

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, one_error_line, run_strata

ROWS = 300_000


def synth(out, *args: str, env: dict | None = None, check: bool = True):
    return run_strata("synth", "--rows", str(ROWS), "--out", str(out), *args, env=env, check=check)


def digest(folder: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "census"
    proc = synth(out, "--files", "3", "--seed", "11", "--format", "json")
    return out, json.loads(proc.stdout)


def test_rows_files_and_schema(census):
    out, summary = census
    assert summary["rows"] == ROWS and len(summary["files"]) == 3
    assert sorted(p.name for p in out.glob("*.parquet")) == [f["name"] for f in summary["files"]]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet")) == ROWS
    meta = pq.ParquetFile(next(out.glob("*.parquet"))).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(next(out.glob("*.parquet")))
    assert {"id", "sex", "race", "age_band", "label", "weight", "age", "occupation"} <= set(schema.names)
    con = duckdb.connect()
    ids = con.execute(f"SELECT count(DISTINCT id), min(id), max(id) FROM '{out}/*.parquet'").fetchone()
    assert ids == (ROWS, 0, ROWS - 1)


def test_group_shares_and_label_rates_follow_the_documented_structure(census):
    out, _ = census
    con = duckdb.connect()
    t = f"'{out}/*.parquet'"

    def close(got: float, want: float):
        se = math.sqrt(want * (1 - want) / ROWS)
        assert abs(got - want) < 4 * se, (got, want)

    shares = dict(con.execute(f"SELECT coalesce(sex, 'null'), count(*) / {ROWS} FROM {t} GROUP BY 1").fetchall())
    close(shares["null"], 0.01)
    close(shares["Female"], 0.33)
    close(shares["Male"], 0.66)
    race = dict(con.execute(f"SELECT coalesce(race, 'null'), count(*) / {ROWS} FROM {t} GROUP BY 1").fetchall())
    close(race["null"], 0.04)
    close(race["White"], 0.68)
    close(race["Amer-Indian-Eskimo"], 0.03)
    rates = dict(con.execute(f"SELECT sex, avg(label) FROM {t} WHERE sex IS NOT NULL GROUP BY 1").fetchall())
    assert rates["Male"] > rates["Female"] + 0.1, rates
    # the features carry signal: education raises the positive rate
    low, high = con.execute(f"SELECT avg(label) FILTER (education_num <= 8), avg(label) FILTER (education_num >= 13) FROM {t}").fetchone()
    assert high > low + 0.2, (low, high)
    w_min, w_mean = con.execute(f"SELECT min(weight), avg(weight) FROM {t}").fetchone()
    assert w_min > 0 and abs(w_mean - 1.0) < 0.02


def test_same_seed_same_bytes_and_rows_independent_of_files(census, tmp_path):
    out, _ = census
    again = tmp_path / "again"
    synth(again, "--files", "3", "--seed", "11", "--threads", "1")
    assert digest(again) == digest(out)
    other_cut = tmp_path / "cut"
    synth(other_cut, "--files", "2", "--seed", "11")
    con = duckdb.connect()
    q = "SELECT * FROM '{}/*.parquet' ORDER BY id"
    assert con.execute(q.format(out)).fetchall() == con.execute(q.format(other_cut)).fetchall()
    other_seed = tmp_path / "seed"
    synth(other_seed, "--files", "3", "--seed", "12")
    assert digest(other_seed) != digest(out)


def test_the_data_profiles_and_curates(census, tmp_path):
    out, _ = census
    spec = tmp_path / "synth.toml"
    spec.write_text((ROOT / "pipelines/synth-census.toml").read_text().replace(
        'url = "../bench-data/census/"', f'url = "{out}/"'))
    profile = json.loads(run_strata("profile", str(spec), "--format", "json").stdout)
    assert profile["total_rows"] == ROWS
    # the missing share is a group of its own, of about 1 % of the rows
    missing = [g for g in profile["groups"] if g["attributes"] == {"sex": None}]
    assert len(missing) == 1 and abs(missing[0]["share"] - 0.01) < 0.002, missing
    run_strata("curate", str(spec), "--out", str(tmp_path / "curated"))


def test_on_object_storage(s3_env, tmp_path):
    import boto3
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="synth")
    run_strata("synth", "--rows", "50000", "--files", "2", "--out", "s3://synth/census/", env=s3_env)
    local = tmp_path / "local"
    run_strata("synth", "--rows", "50000", "--files", "2", "--out", str(local))
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="synth", Prefix="census/")["Contents"])
    assert keys == ["census/part-00000.parquet", "census/part-00001.parquet"]
    for k in keys:
        body = s3.get_object(Bucket="synth", Key=k)["Body"].read()
        assert body == (local / k.split("/")[1]).read_bytes()


def test_refusals(census, tmp_path):
    out, _ = census
    proc = synth(out, check=False)
    assert proc.returncode == 3 and "already holds 3 Parquet" in one_error_line(proc)
    before = digest(out)
    proc = synth(out, "--files", "3", "--seed", "11", "--overwrite")
    assert digest(out) == before
    proc = run_strata("synth", "--rows", "2", "--files", "3", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 3 and "--files 3" in one_error_line(proc)
    proc = run_strata("synth", "--rows", "lots", "--out", str(tmp_path / "y"), check=False)
    assert proc.returncode == 2 and "lots" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
