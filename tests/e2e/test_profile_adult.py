"""strata profile on UCI Adult, checked against counts computed independently from the
raw UCI files (plain Python) and against DuckDB over the shipped Parquet."""
from __future__ import annotations

import collections
import csv
import json
import pathlib

import duckdb
import pytest

from conftest import ROOT, profile_json, run_strata

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
    "native_country", "income",
]


def raw_rows(path: pathlib.Path):
    with path.open(newline="") as f:
        for rec in csv.reader(f, skipinitialspace=True):
            if not rec or rec[0].startswith("|"):
                continue
            row = dict(zip(ADULT_COLUMNS, rec, strict=True))
            row["income"] = row["income"].rstrip(".")
            yield {k: (None if v == "?" else v) for k, v in row.items()}


def expected_from_raw(path: pathlib.Path, attributes: list[list[str]]):
    """{(grouping tuple): {(values tuple): [rows, positives, weight, weighted_positives]}}"""
    out = {tuple(g): collections.defaultdict(lambda: [0, 0, 0, 0]) for g in attributes}
    for row in raw_rows(path):
        pos = row["income"] == ">50K"
        w = int(row["fnlwgt"])
        for g in attributes:
            cell = out[tuple(g)][tuple(row[a] for a in g)]
            cell[0] += 1
            cell[1] += pos
            cell[2] += w
            cell[3] += w * pos
    return out


def by_key(profile: dict) -> dict:
    res = {}
    for g in profile["groups"]:
        attrs = g["attributes"]
        res[(tuple(attrs.keys()), tuple(attrs.values()))] = g
    return res


def test_adult_profile_matches_raw_uci_counts(raw_adult):
    p = profile_json(str(ROOT / "pipelines/adult.toml"))
    groupings = [["sex"], ["race"], ["sex", "race"]]
    expected = expected_from_raw(raw_adult / "adult.data", groupings)
    total = sum(c[0] for c in expected[("sex",)].values())
    total_w = sum(c[2] for c in expected[("sex",)].values())
    assert p["total_rows"] == total == 32561
    assert p["total_weight"] == pytest.approx(total_w, rel=1e-12)
    got = by_key(p)
    n = 0
    for g in groupings:
        for values, (rows, pos, w, wpos) in expected[tuple(g)].items():
            grp = got[(tuple(g), values)]
            assert grp["rows"] == rows, (g, values)
            assert grp["positives"] == pos, (g, values)
            assert grp["share"] == pytest.approx(rows / total, rel=1e-12)
            assert grp["positive_rate"] == pytest.approx(pos / rows, rel=1e-12)
            assert grp["weighted_share"] == pytest.approx(w / total_w, rel=1e-9)
            assert grp["weighted_positive_rate"] == pytest.approx(wpos / w, rel=1e-9)
            n += 1
    assert n == len(p["groups"]), "strata reported groups that the raw files do not have"


def test_missing_values_form_an_explicit_group(raw_adult, tmp_path):
    spec = (ROOT / "pipelines/adult.toml").read_text()
    spec = spec.replace('["sex", "race"]', '["sex", "workclass"]')
    spec = spec.split("[groups.reference.race]")[0]
    spec = spec.replace("../data/adult/train.parquet", str(ROOT / "data/adult/train.parquet"))
    (tmp_path / "p.toml").write_text(spec)
    p = profile_json(str(tmp_path / "p.toml"))
    raw = list(raw_rows(raw_adult / "adult.data"))
    missing = [r for r in raw if r["workclass"] is None]
    assert len(missing) == 1836  # documented UCI figure for the training split
    got = by_key(p)
    grp = got[(("workclass",), (None,))]
    assert grp["rows"] == len(missing)
    assert grp["positives"] == sum(r["income"] == ">50K" for r in missing)
    # ... and in the intersection, per sex
    for sex in ("Female", "Male"):
        want = sum(1 for r in missing if r["sex"] == sex)
        assert got[(("sex", "workclass"), (sex, None))]["rows"] == want
    # the missing group sorts last within its grouping
    workclass = [g for g in p["groups"] if list(g["attributes"]) == ["workclass"]]
    assert workclass[-1]["attributes"]["workclass"] is None


def test_adult_profile_matches_duckdb_grouping_sets():
    p = profile_json(str(ROOT / "pipelines/adult.toml"))
    got = by_key(p)
    con = duckdb.connect()
    rows = con.execute(
        """
        SELECT sex, race, GROUPING(sex) AS gs, GROUPING(race) AS gr,
               count(*) AS n, sum(CASE WHEN income = '>50K' THEN 1 ELSE 0 END) AS pos
        FROM read_parquet(?)
        GROUP BY GROUPING SETS ((sex), (race), (sex, race))
        """,
        [str(ROOT / "data/adult/train.parquet")],
    ).fetchall()
    assert len(rows) == len(p["groups"])
    for sex, race, gs, gr, n, pos in rows:
        if gs == 0 and gr == 0:
            key = (("sex", "race"), (sex, race))
        elif gs == 0:
            key = (("sex",), (sex,))
        else:
            key = (("race",), (race,))
        assert got[key]["rows"] == n
        assert got[key]["positives"] == pos


def test_test_split_profile(raw_adult, tmp_path):
    """The converted test split keeps every row and normalises '>50K.' labels."""
    p = profile_json(str(ROOT / "pipelines/adult.toml"), "--source", str(ROOT / "data/adult/test.parquet"))
    raw = list(raw_rows(raw_adult / "adult.test"))
    assert p["total_rows"] == len(raw) == 16281
    assert p["positives"] == sum(r["income"] == ">50K" for r in raw) == 3846


def test_weighted_sums_are_exact_and_do_not_depend_on_partitioning(tmp_path):
    """Fractional weights over many files: float sums would differ in their last digits
    with the order rows reach partitions; strata's exact sums give the same JSON for
    every run and partitioning, equal to DuckDB's sum(CAST(w AS DECIMAL(38, 10)))."""
    import pyarrow.parquet as pq
    import pyarrow.compute as pc

    table = pq.read_table(ROOT / "data/adult/train.parquet")
    table = table.append_column("w", pc.divide(pc.cast(table["fnlwgt"], "float64"), 7.3))
    # the data must expose a float sum's order: summed forwards and backwards, cells differ
    cells = list(zip(table["sex"].to_pylist(), table["race"].to_pylist(), table["w"].to_pylist()))
    forwards, backwards = collections.defaultdict(float), collections.defaultdict(float)
    for sex, race, w in cells:
        forwards[(sex, race)] += w
    for sex, race, w in reversed(cells):
        backwards[(sex, race)] += w
    assert forwards != backwards
    src = tmp_path / "src"
    src.mkdir()
    step = table.num_rows // 12 + 1
    for i in range(12):
        pq.write_table(table.slice(i * step, step), src / f"part-{i:02d}.parquet", row_group_size=1000)
    spec = (ROOT / "pipelines/adult.toml").read_text()
    spec = spec.replace('url = "../data/adult/train.parquet"', f'url = "{src}/"').replace(
        'weight_column = "fnlwgt"', 'weight_column = "w"'
    )
    pipeline = tmp_path / "adult-w.toml"
    pipeline.write_text(spec)

    outputs = {
        run_strata("profile", str(pipeline), "--format", "json", "--target-partitions", str(n)).stdout
        for n in (1, 2, 3, 8, 2, 8)
    }
    assert len(outputs) == 1, "profile JSON differs between runs"
    got = by_key(json.loads(outputs.pop()))

    con = duckdb.connect()
    rows = con.execute(
        """SELECT sex, race, CAST(sum(CAST(w AS DECIMAL(38, 10))) AS DOUBLE)
           FROM read_parquet(?) GROUP BY sex, race""",
        [str(src / "*.parquet")],
    ).fetchall()
    assert len(rows) > 5
    for sex, race, exact in rows:
        assert got[(("sex", "race"), (sex, race))]["weighted_rows"] == pytest.approx(exact, rel=1e-15, abs=0)
