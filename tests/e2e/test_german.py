"""A dataset no other test sees: UCI German Credit, curated, trained and scored by
strata, then `strata eval` recomputed with Fairlearn and scikit-learn."""
from __future__ import annotations

import json
import pathlib
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, demographic_parity_ratio,
                               equalized_odds_difference, false_positive_rate, selection_rate,
                               true_positive_rate)
from sklearn.metrics import accuracy_score, roc_auc_score

from conftest import ROOT, run_strata

RAW = ROOT / "data" / "raw" / "german"
COLUMNS = ["status", "duration", "credit_history", "purpose", "credit_amount", "savings",
           "present_employment", "installment_rate", "status_sex", "other_debtors", "residence_since",
           "property", "age", "installment_plans", "housing", "existing_credits", "job", "people_liable",
           "telephone", "foreign_worker", "credit"]

SPEC = """
name = "german"
[source]
url = "{source}"
[label]
column = "credit"
positive = "good"
[groups]
attributes = ["sex", "age_group"]
min_group_rows = 20
[curate]
strategy = "reweigh"
seed = 3
[train]
epochs = 20
[eval]
replicates = 300
[[eval.gates]]
metric = "demographic_parity_ratio"
grouping = "sex"
op = ">="
value = 0.0
"""


def german_table() -> pa.Table:
    maps = json.loads((RAW / "values_maps.json").read_text())
    rows = [line.split() for line in (RAW / "german.data").read_text().splitlines() if line.strip()]
    assert len(rows) == 1000 and all(len(r) == 21 for r in rows)
    cols = {}
    for i, name in enumerate(COLUMNS):
        values = [r[i] for r in rows]
        key = {"credit": "credit"}.get(name, name)
        if key in maps:
            cols[name] = [str(maps[key][v]).strip() for v in values]
        else:
            cols[name] = [int(v) for v in values]
    cols["sex"] = [s.split(":")[0].strip() for s in cols["status_sex"]]
    cols["age_group"] = ["under 25" if a < 25 else "25 and over" for a in cols["age"]]
    return pa.table(cols)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("german")
    source = tmp / "german.parquet"
    pq.write_table(german_table(), source)
    spec = tmp / "german.toml"
    spec.write_text(SPEC.format(source=source))
    run = tmp / "run"
    run_strata("curate", str(spec), "--out", str(run))
    run_strata("train", str(spec), "--shards", str(run), "--out", str(tmp / "model"))
    preds = tmp / "preds.parquet"
    run_strata("predict", "--model", str(tmp / "model"), "--shards", str(run), "--split", "test", "--out", str(preds))
    return spec, preds, tmp


def test_eval_of_a_real_model_on_german_credit_matches_fairlearn(scored):
    spec, preds, tmp = scored
    out_dir = tmp / "eval"
    proc = run_strata("eval", str(spec), "--predictions", str(preds), "--out", str(out_dir), "--format", "json")
    report = json.loads(proc.stdout)
    assert report == json.loads((out_dir / "eval.json").read_text())
    assert report["passed"] is True and report["weight"] == "sample_weight"
    (model,) = report["models"]
    df = pq.read_table(preds).to_pandas()
    y = (df["y_true"] == "good").to_numpy()
    p = (df["y_pred"] == "good").to_numpy()
    w = df["sample_weight"].to_numpy()
    assert model["rows"] == len(df) == 100  # the test split: 10% of 1,000
    assert accuracy_score(y, p) > 0.6  # a real model, better than chance on this data
    o = model["overall"]["metrics"]
    assert abs(o["accuracy"]["value"] - accuracy_score(y, p, sample_weight=w)) < 1e-9
    assert abs(o["roc_auc"]["value"] - roc_auc_score(y, df["y_score"], sample_weight=w)) < 1e-9
    metrics = {"accuracy": accuracy_score, "selection_rate": selection_rate,
               "true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate}
    params = {k: {"sample_weight": w} for k in metrics}
    for g in model["groupings"]:
        cols = g["attributes"]
        frame = MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=df[cols], sample_params=params)
        for grp in g["groups"]:
            key = grp["values"][0] if len(cols) == 1 else tuple(grp["values"])
            for m in metrics:
                assert abs(grp["metrics"][m]["value"] - frame.by_group[m][key]) < 1e-9, (g["grouping"], key, m)
        judged = [grp for grp in g["groups"] if not grp["too_small"]]
        if len(judged) == len(g["groups"]):  # Fairlearn has no notion of a group too small to judge
            sf = df[cols]
            for name, fn in [("demographic_parity_difference", demographic_parity_difference),
                             ("demographic_parity_ratio", demographic_parity_ratio),
                             ("equalized_odds_difference", equalized_odds_difference)]:
                for method, suffix in [("between_groups", ""), ("to_overall", "_to_overall")]:
                    want = fn(y, p, sensitive_features=sf, method=method, sample_weight=w)
                    got = g["disparities"][name + suffix]["value"]
                    assert abs(got - want) < 1e-9, (g["grouping"], name, method)
        # a small test split: some intersections are too small to judge, and say so
        for grp in g["groups"]:
            assert grp["too_small"] == (grp["rows"] < 20)
    assert any(grp["too_small"] for g in model["groupings"] for grp in g["groups"])
    page = (out_dir / "report.html").read_text()
    assert "german" in page and "too-small" in page


def test_strata_run_on_german_credit(tmp_path):
    """The whole pipeline on data no other test sees, with a spec written from the README."""
    source = tmp_path / "german.parquet"
    pq.write_table(german_table(), source)
    spec = tmp_path / "german.toml"
    # no SQL checks: the default folder (../sql beside the spec) does not exist
    spec.write_text(SPEC.format(source=source) + textwrap.dedent("""

        [[eval.gates]]
        metric = "accuracy"
        compare = "difference"
        op = ">="
        value = -0.10
        """))
    out = tmp_path / "out"
    proc = run_strata("run", str(spec), "--out", str(out), check=False)
    run = json.loads((out / "run.json").read_text())
    assert proc.returncode in (0, 1), proc.stderr  # gates may fail; nothing errs
    assert run.get("stopped_at") in (None, "evaluate")
    assert [s["status"] for s in run["stages"] if s["name"] == "evaluate"] in (["passed"], ["failed"])
    report = json.loads((out / "eval.json").read_text())
    assert [m["model"] for m in report["models"]] == ["baseline", "curated"]
    df = pq.read_table(out / "predictions.parquet").to_pandas()
    for m in report["models"]:
        part = df[df["model"] == m["model"]]
        y, p, w = part["y_true"] == "good", part["y_pred"] == "good", part["sample_weight"]
        assert abs(m["overall"]["metrics"]["accuracy"]["value"] - accuracy_score(y, p, sample_weight=w)) < 1e-9
    checks = [s for s in run["stages"] if s["name"].endswith("checks")]
    assert [s["status"] for s in checks] == ["skipped", "skipped"] and "no SQL checks" in checks[0]["message"]
    gate = next(g for g in report["gates"] if g["metric"] == "accuracy")
    assert gate["paired"] is True
