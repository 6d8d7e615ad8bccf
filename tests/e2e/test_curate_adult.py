"""strata curate on UCI Adult, checked against independent computations: the split
reproduced by a Python implementation of the documented hash, Kamiran–Calders weights in
closed form (DuckDB), and exact resample counts from the plan's arithmetic."""
from __future__ import annotations

import collections
import json
import math

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, latest_manifest, read_curated, run_strata, shard_paths
from strata_hash import split_rows

ADULT = ROOT / "data/adult/train.parquet"


def curate(tmp_path, pipeline="pipelines/adult.toml", *args, env=None):
    out = tmp_path / "out"
    proc = run_strata("curate", str(ROOT / pipeline), "--out", str(out), "--format", "json", *args, env=env)
    return out, json.loads(proc.stdout)


def source_rows():
    t = pq.read_table(ADULT)
    return t.column_names, t.to_pylist()


@pytest.fixture(scope="module")
def reweighed(tmp_path_factory):
    return curate(tmp_path_factory.mktemp("reweigh"))


def test_split_matches_an_independent_implementation_of_the_hash(reweighed):
    out, summary = reweighed
    columns, rows = source_rows()
    expected = split_rows(rows, columns, key=columns, cell=["sex", "race", "income"], seed=42,
                          train=0.8, validation=0.1)
    got = read_curated(out).to_pylist()
    assert len(got) == len(rows) == 32561  # reweighing keeps every row
    for split in ("train", "validation", "test"):
        want = collections.Counter(tuple(r[c] for c in columns) for r in expected[split])
        have = collections.Counter(tuple(r[c] for c in columns) for r in got if r["split"] == split)
        assert have == want, split
        assert summary["splits"][["train", "validation", "test"].index(split)]["rows_after"] == sum(want.values())


def test_reweighing_matches_the_closed_form(reweighed):
    """w(g, y) = W_g * W_y / (W * W_gy) over the training split, W = sums of fnlwgt."""
    out, _ = reweighed
    con = duckdb.connect()
    rows = con.execute(
        """
        WITH t AS (SELECT * FROM read_parquet(?) WHERE split = 'train'),
        cells AS (SELECT sex, race, income, sum(fnlwgt) AS w_gy FROM t GROUP BY ALL),
        closed AS (
          SELECT sex, race, income,
                 sum(w_gy) OVER (PARTITION BY sex, race) * sum(w_gy) OVER (PARTITION BY income)
                   / (sum(w_gy) OVER () * w_gy) AS factor
          FROM cells)
        SELECT c.sex, c.race, c.income, c.factor,
               min(t.sample_weight / t.fnlwgt) AS lo, max(t.sample_weight / t.fnlwgt) AS hi
        FROM t JOIN closed c USING (sex, race, income)
        GROUP BY ALL
        """,
        [[str(p) for p in shard_paths(out)]],
    ).fetchall()
    assert len(rows) == 20  # 2 sexes x 5 races x 2 labels, all present
    for sex, race, income, factor, lo, hi in rows:
        assert lo == pytest.approx(factor, rel=1e-12), (sex, race, income)
        assert hi == pytest.approx(factor, rel=1e-12), (sex, race, income)
    # validation and test keep their natural weights
    other = con.execute("SELECT count(*) FROM read_parquet(?) WHERE split <> 'train' AND sample_weight <> fnlwgt",
                        [[str(p) for p in shard_paths(out)]]).fetchone()[0]
    assert other == 0
    # total training weight preserved; weighted positive rate equal across groups
    total, new_total = con.execute("SELECT sum(fnlwgt), sum(sample_weight) FROM read_parquet(?) WHERE split = 'train'",
                                   [[str(p) for p in shard_paths(out)]]).fetchone()
    assert new_total == pytest.approx(total, rel=1e-12)
    rates = con.execute(
        """SELECT sex, race, sum(CASE WHEN income = '>50K' THEN sample_weight END) / sum(sample_weight)
           FROM read_parquet(?) WHERE split = 'train' GROUP BY ALL""", [[str(p) for p in shard_paths(out)]]).fetchall()
    first = rates[0][2]
    for _, _, r in rates:
        assert r == pytest.approx(first, rel=1e-9)


def test_census_mix_resample_hits_the_planned_counts_exactly(tmp_path):
    out, summary = curate(tmp_path, "pipelines/adult-census-mix.toml")
    t = read_curated(out)
    con = duckdb.connect()
    counts = dict(((s, r, i), n) for s, r, i, n in con.execute(
        "SELECT sex, race, income, count(*) FROM t WHERE split = 'train' GROUP BY ALL").fetchall())
    assert sum(counts.values()) == 20000
    # independent plan: group shares = product of census marginals, largest remainder
    sex = {"Female": 0.513, "Male": 0.487}
    race = {"White": 0.803, "Black": 0.121, "Asian-Pac-Islander": 0.029, "Amer-Indian-Eskimo": 0.008, "Other": 0.039}
    groups = sorted((s, r) for s in sex for r in race)
    shares = [sex[s] * race[r] for s, r in groups]
    total = sum(shares)
    shares = [x / total for x in shares]

    def largest_remainder(n, weights):
        exact = [n * w / sum(weights) for w in weights]
        parts = [math.floor(e) for e in exact]
        order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
        for i in order[: n - sum(parts)]:
            parts[i] += 1
        return parts

    k_group = largest_remainder(20000, shares)
    # training rows per (group, label), from the independent split
    columns, rows = source_rows()
    train = split_rows(rows, columns, key=columns, cell=["sex", "race", "income"], seed=7, train=0.8, validation=0.1)["train"]
    n_cell = collections.Counter((r["sex"], r["race"], r["income"]) for r in train)
    for (s, r), k in zip(groups, k_group):
        labels = sorted(i for (ss, rr, i) in n_cell if (ss, rr) == (s, r))
        k_cell = largest_remainder(k, [n_cell[(s, r, i)] for i in labels])
        for i, kc in zip(labels, k_cell):
            assert counts.get((s, r, i), 0) == kc, (s, r, i)
    # the planned counts in the summary agree
    for st in summary["strata"]:
        key = (st["stratum"]["sex"], st["stratum"]["race"], st["stratum"]["income"])
        assert st["planned_rows"] == st["rows_after"] == counts.get(key, 0)
    # validation and test keep their natural mix (no resampling there)
    natural = con.execute("SELECT count(*) FROM t WHERE split <> 'train'").fetchone()[0]
    assert natural == sum(s["rows_before"] for s in summary["splits"] if s["split"] != "train")


def test_curated_output_through_s3(tmp_path, s3_client, s3_env):
    s3_client.create_bucket(Bucket="strata-curate")
    local_out, _ = curate(tmp_path)
    proc = run_strata("curate", str(ROOT / "pipelines/adult.toml"), "--out", "s3://strata-curate/adult/",
                      "--format", "json", env=s3_env)
    summary = json.loads(proc.stdout)
    local = latest_manifest(local_out)
    run_id = local["run_id"]
    assert summary["output"] == f"s3://strata-curate/adult/runs/{run_id}/"
    latest = json.loads(s3_client.get_object(Bucket="strata-curate", Key="adult/_latest")["Body"].read())
    remote = json.loads(s3_client.get_object(Bucket="strata-curate", Key=f"adult/{latest['manifest']}")["Body"].read())
    assert [s["sha256"] for s in remote["shards"]] == [s["sha256"] for s in local["shards"]]
    for shard in remote["shards"]:
        obj = s3_client.get_object(Bucket="strata-curate", Key=f"adult/runs/{run_id}/{shard['path']}")["Body"].read()
        assert obj == (local_out / "runs" / run_id / shard["path"]).read_bytes(), "same bytes through S3 and locally"
    meta = json.loads(s3_client.get_object(Bucket="strata-curate", Key=f"adult/runs/{run_id}/curation.json")["Body"].read())
    assert meta["splits"] == summary["splits"]


@pytest.mark.parametrize("pipeline", ["pipelines/adult.toml", "pipelines/adult-census-mix.toml"])
def test_every_way_to_the_cuts_gives_the_same_bytes(tmp_path, pipeline):
    """Exact resampling finds its sample cuts in the split's pass when it can, else in a
    pass of their own (1b); a cut outside its window (about one in 10^9) is found again
    over the whole key space. STRATA_CUT_PATHS forces each way: the shards' sha256 must
    not change, and the log must show the way was taken."""
    def run(mode):
        out = tmp_path / (mode or "default")
        env = {"STRATA_CUT_PATHS": mode} if mode else {}
        proc = run_strata("curate", str(ROOT / pipeline), "--out", str(out), "--format", "json", env=env)
        return [s["sha256"] for s in latest_manifest(out)["shards"]], proc.stderr
    want, log = run(None)
    separate, log_separate = run("separate")
    full, log_full = run("full-window")
    assert separate == want and full == want
    assert "whole key space" not in log and "whole key space" in log_full
    if "census-mix" in pipeline:  # exact resampling: pass 1b taken only when asked
        assert "pass 1b done" not in log and "pass 1b done" in log_separate
