"""`strata eval`, checked against Fairlearn 0.15 and scikit-learn on the same predictions."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_strata, one_error_line

MISSING = "(missing)"


def predictions(n=4000, seed=3) -> pa.Table:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], size=n, p=[0.4, 0.6]).astype(object)
    sex[rng.random(n) < 0.03] = None  # a missing-value group
    race = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])
    base = np.where(sex == "M", 0.4, 0.25) + np.where(race == "c", 0.1, 0.0)
    y = rng.random(n) < base
    score = np.clip(base + rng.normal(0, 0.25, n) + 0.2 * (y - 0.5), 0, 1)
    score[:5] = [0.0, 1.0, 0.5, 0.5, 0.95]  # edges and ties
    pred = score >= 0.5
    w = rng.gamma(2.0, 1.0, n)
    w[:3] = 0.0
    return pa.table({
        "sex": pa.array(list(sex), type=pa.string()),
        "race": race,
        "y": np.where(y, "yes", "no"),
        "p": np.where(pred, "yes", "no"),
        "s": score,
        "w": w,
    })


def evaluate(path, *extra):
    """The one model's evaluation in eval.json (files without a model column hold one)."""
    proc = run_strata("eval", "--predictions", str(path), "--group", "sex", "--group", "race", "--label", "y",
                      "--positive", "yes", "--pred", "p", "--score", "s", "--min-group-rows", "0", *extra, "--format", "json")
    out = json.loads(proc.stdout)
    assert len(out["models"]) == 1 and out["models"][0]["model"] is None
    return out["models"][0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "preds.parquet"
    t = predictions()
    pq.write_table(t, path)
    return path, t


def frame(t):
    import pandas as pd

    df = t.to_pandas()
    df["sex"] = df["sex"].fillna(MISSING)
    df["yb"] = (df["y"] == "yes").astype(int)
    df["pb"] = (df["p"] == "yes").astype(int)
    return df


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(b))


@pytest.mark.parametrize("weighted", [True, False])
def test_metrics_match_sklearn_and_fairlearn(data, weighted):
    from fairlearn.metrics import MetricFrame, false_negative_rate, false_positive_rate, selection_rate, true_negative_rate
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, brier_score_loss, f1_score, log_loss,
                                 precision_score, recall_score, roc_auc_score)

    path, t = data
    out = evaluate(path, "--replicates", "0", *(["--weight", "w"] if weighted else ["--weight", "none"]))
    df = frame(t)
    w = df["w"].to_numpy() if weighted else None
    metrics = {
        "accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score, "selection_rate": selection_rate,
        "true_positive_rate": recall_score, "false_positive_rate": false_positive_rate,
        "false_negative_rate": false_negative_rate, "true_negative_rate": true_negative_rate,
        "precision": precision_score, "f1": f1_score,
    }
    score_metrics = {"roc_auc": roc_auc_score, "log_loss": lambda y, s, sample_weight=None: log_loss(y, s, sample_weight=sample_weight, labels=[0, 1]),
                     "brier_score": brier_score_loss}
    groupings = {"sex": ["sex"], "race": ["race"], "sex × race": ["sex", "race"]}
    checked = 0
    for g in out["groupings"]:
        cols = groupings[g["grouping"]]
        mf = MetricFrame(metrics=metrics, y_true=df["yb"], y_pred=df["pb"], sensitive_features=df[cols],
                         sample_params={k: {"sample_weight": w} for k in metrics} if weighted else None)
        mfs = MetricFrame(metrics=score_metrics, y_true=df["yb"], y_pred=df["s"], sensitive_features=df[cols],
                          sample_params={k: {"sample_weight": w} for k in score_metrics} if weighted else None)
        for grp in g["groups"]:
            key = tuple(v if v is not None else MISSING for v in grp["values"])
            key = key[0] if len(key) == 1 else key
            for name in metrics:
                assert close(grp["metrics"][name]["value"], mf.by_group.loc[key, name]), (g["grouping"], key, name)
                checked += 1
            for name in score_metrics:
                assert close(grp["metrics"][name]["value"], mfs.by_group.loc[key, name]), (g["grouping"], key, name)
            # expected calibration error, by hand: 10 equal-width bins
            sel = np.all([df[c] == (v if v is not None else MISSING) for c, v in zip(cols, grp["values"])], axis=0)
            ww = (w if weighted else np.ones(len(df)))[sel]
            s, y = df["s"].to_numpy()[sel], df["yb"].to_numpy()[sel]
            b = np.minimum((s * 10).astype(int), 9)
            ece = sum(ww[b == k].sum() / ww.sum() * abs(np.average(s[b == k], weights=ww[b == k]) - np.average(y[b == k], weights=ww[b == k]))
                      for k in range(10) if ww[b == k].sum() > 0)
            assert close(grp["metrics"]["expected_calibration_error"]["value"], ece)
        # the missing group is a group of its own
        if g["grouping"] == "sex":
            assert [x["group"] for x in g["groups"]] == [MISSING, "F", "M"]
    assert checked > 50
    o = out["overall"]["metrics"]
    assert close(o["accuracy"]["value"], accuracy_score(df["yb"], df["pb"], sample_weight=w))
    assert close(o["roc_auc"]["value"], roc_auc_score(df["yb"], df["s"], sample_weight=w))


@pytest.mark.parametrize("weighted", [True, False])
def test_disparities_match_fairlearn(data, weighted):
    from fairlearn.metrics import (demographic_parity_difference, demographic_parity_ratio,
                                   equal_opportunity_difference, equal_opportunity_ratio,
                                   equalized_odds_difference, equalized_odds_ratio)

    path, t = data
    out = evaluate(path, "--replicates", "0", *(["--weight", "w"] if weighted else ["--weight", "none"]))
    df = frame(t)
    w = df["w"].to_numpy() if weighted else None
    groupings = {"sex": ["sex"], "race": ["race"], "sex × race": ["sex", "race"]}
    for g in out["groupings"]:
        sf = df[groupings[g["grouping"]]]
        assert not g["excluded_groups"], g["excluded_groups"]
        d = g["disparities"]
        for method in ["between_groups", "to_overall"]:
            suffix = "" if method == "between_groups" else "_to_overall"
            kw = dict(sensitive_features=sf, method=method, sample_weight=w)
            want = {
                "demographic_parity_difference": demographic_parity_difference(df["yb"], df["pb"], **kw),
                "demographic_parity_ratio": demographic_parity_ratio(df["yb"], df["pb"], **kw),
                "equal_opportunity_difference": equal_opportunity_difference(df["yb"], df["pb"], **kw),
                "equal_opportunity_ratio": equal_opportunity_ratio(df["yb"], df["pb"], **kw),
                "equalized_odds_difference": equalized_odds_difference(df["yb"], df["pb"], agg="worst_case", **kw),
                "equalized_odds_ratio": equalized_odds_ratio(df["yb"], df["pb"], agg="worst_case", **kw),
                "equalized_odds_difference_mean": equalized_odds_difference(df["yb"], df["pb"], agg="mean", **kw),
                "equalized_odds_ratio_mean": equalized_odds_ratio(df["yb"], df["pb"], agg="mean", **kw),
            }
            for name, value in want.items():
                assert close(d[name + suffix]["value"], value), (g["grouping"], name + suffix, d[name + suffix], value)
        # against the reference group (the heaviest by default) and the worst group
        groups = {x["group"]: x["metrics"] for x in g["groups"]}
        ref = groups[g["reference_group"]]
        ratios = [m["selection_rate"]["value"] / ref["selection_rate"]["value"] for k, m in groups.items() if k != g["reference_group"]]
        assert close(d["disparate_impact_ratio"]["value"], min(ratios))
        assert close(d["worst_group_accuracy"]["value"], min(m["accuracy"]["value"] for m in groups.values()))


def test_intervals_are_deterministic_and_bracket_the_estimate(data):
    path, _ = data
    a = evaluate(path, "--weight", "w", "--replicates", "200", "--seed", "9")
    b = evaluate(path, "--weight", "w", "--replicates", "200", "--seed", "9")
    c = evaluate(path, "--weight", "w", "--replicates", "200", "--seed", "10")
    assert a == b
    assert a != c
    for g in a["groupings"]:
        for grp in g["groups"]:
            m = grp["metrics"]["accuracy"]
            assert m["lower"] <= m["value"] + 1e-12 and m["value"] <= m["upper"] + 1e-12
        d = g["disparities"]["demographic_parity_difference"]
        assert d["lower"] < d["upper"]


GATES = """
[source]
url = "x.parquet"
[label]
column = "y"
positive = "yes"
[groups]
attributes = ["sex", "race"]
[eval]
replicates = 50
{gates}
"""


def test_gates_pass_fail_and_bad_gates(data, tmp_path):
    path, _ = data
    args = ["--label", "y", "--pred", "p", "--score", "s", "--weight", "w"]
    spec = tmp_path / "ok.toml"
    spec.write_text(GATES.format(gates=textwrap.dedent("""
        [[eval.gates]]
        metric = "demographic_parity_difference"
        grouping = "sex"
        op = "<="
        value = 0.9
        [[eval.gates]]
        metric = "accuracy"
        op = ">="
        value = 0.1
        """)))
    proc = run_strata("eval", str(spec), "--predictions", str(path), *args)
    assert "PASS demographic_parity_difference on sex" in proc.stdout
    spec.write_text(GATES.format(gates=textwrap.dedent("""
        [[eval.gates]]
        metric = "worst_group_accuracy"
        grouping = ["sex", "race"]
        op = ">="
        value = 0.99
        on = "upper"
        """)))
    proc = run_strata("eval", str(spec), "--predictions", str(path), *args, "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "FAIL worst_group_accuracy on sex × race" in proc.stdout
    report = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert report["passed"] is False and report["gates"][0]["passed"] is False
    assert report["gates"][0]["upper"] < 0.99
    spec.write_text(GATES.format(gates='[[eval.gates]]\nmetric = "fairness"\ngrouping = "sex"\nop = "<="\nvalue = 1\n'))
    proc = run_strata("eval", str(spec), "--predictions", str(path), *args, check=False)
    assert proc.returncode == 3
    assert "eval.gates[0]" in one_error_line(proc) and "fairness" in proc.stderr
    spec.write_text(GATES.format(gates='[[eval.gates]]\nmetric = "demographic_parity_ratio"\ngrouping = "age"\nop = ">="\nvalue = 0.8\n'))
    proc = run_strata("eval", str(spec), "--predictions", str(path), *args, check=False)
    assert proc.returncode == 3 and "`age`" in one_error_line(proc)


def test_markdown_summary(data):
    path, _ = data
    proc = run_strata("eval", "--predictions", str(path), "--group", "sex", "--label", "y", "--positive", "yes",
                      "--pred", "p", "--score", "s", "--replicates", "20", "--format", "markdown")
    assert proc.stdout.startswith("# Evaluation")
    assert "| group | rows | accuracy |" in proc.stdout and "## sex" in proc.stdout


@pytest.mark.parametrize("change, column, needle", [
    (lambda t: t.drop(["s"]), "s", "no such column"),
    (lambda t: t.set_column(4, "s", pa.array(np.full(t.num_rows, 1.5))), "s", "not a probability"),
    (lambda t: t.set_column(5, "w", pa.array(np.full(t.num_rows, -1.0))), "w", "at least 0"),
    (lambda t: t.set_column(5, "w", pa.array(np.full(t.num_rows, np.nan))), "w", "at least 0"),
    (lambda t: t.set_column(3, "p", pa.array([None] * t.num_rows, type=pa.string())), "p", "no prediction"),
    (lambda t: t.slice(0, 0), None, "no predictions"),
    (lambda t: t.set_column(2, "y", pa.array(["no"] * t.num_rows)).set_column(3, "p", pa.array(["no"] * t.num_rows)), "y", "positive class"),
])
def test_bad_predictions(tmp_path, change, column, needle):
    path = tmp_path / "bad.parquet"
    pq.write_table(change(predictions(n=300)), path)
    proc = run_strata("eval", "--predictions", str(path), "--group", "sex", "--label", "y", "--positive", "yes",
                      "--pred", "p", "--score", "s", "--weight", "w", check=False)
    assert proc.returncode == 3, proc.stderr
    line = one_error_line(proc)
    assert needle in line, line
    if column:
        assert f"`{column}`" in line, line


def test_null_labels_are_counted(tmp_path):
    t = predictions(n=500)
    y = t["y"].to_pylist()
    y[10] = y[20] = None
    path = tmp_path / "p.parquet"
    pq.write_table(t.set_column(2, "y", pa.array(y)), path)
    out = evaluate(path, "--replicates", "0")
    assert out["null_labels"] == 2 and out["rows"] == 498


def test_undefined_rates_are_null_with_a_reason(tmp_path):
    t = predictions(n=600)
    sex = t["sex"].to_pylist()
    y = t["y"].to_pylist()
    y = ["no" if s == "F" else v for s, v in zip(sex, y)]  # no positives among F
    path = tmp_path / "p.parquet"
    pq.write_table(t.set_column(2, "y", pa.array(y)), path)
    text = run_strata("eval", "--predictions", str(path), "--group", "sex", "--label", "y", "--positive", "yes",
                      "--pred", "p", "--score", "s", "--replicates", "20", "--format", "json").stdout
    assert "NaN" not in text
    out = json.loads(text)["models"][0]
    f = next(g for g in out["groupings"][0]["groups"] if g["group"] == "F")
    assert f["metrics"]["true_positive_rate"]["value"] is None
    assert "no positive labels" in f["metrics"]["true_positive_rate"]["undefined"]
    d = out["groupings"][0]["disparities"]["equal_opportunity_difference"]
    assert d["value"] is None and "F" in d["undefined"]


def test_eval_on_object_storage(data, s3_env):
    import boto3

    path, _ = data
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="eval-e2e")
    s3.put_object(Bucket="eval-e2e", Key="preds/part-0.parquet", Body=path.read_bytes())
    proc = run_strata("eval", "--predictions", "s3://eval-e2e/preds/", "--group", "sex", "--group", "race",
                      "--label", "y", "--positive", "yes", "--pred", "p", "--score", "s", "--weight", "w",
                      "--min-group-rows", "0", "--replicates", "0", "--format", "json", env=s3_env)
    remote = json.loads(proc.stdout)["models"][0]
    local = evaluate(path, "--weight", "w", "--replicates", "0")
    assert remote["groupings"] == local["groupings"] and remote["overall"] == local["overall"]


def test_multiclass_accuracy_per_group_and_one_vs_rest_rates(tmp_path):
    """A real model's predictions on scikit-learn's digits (10 classes), with a group."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_score, recall_score

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(4)
    train = rng.random(len(y)) < 0.5
    model = LogisticRegression(max_iter=200).fit(x[train], y[train])
    yt, yp = y[~train], model.predict(x[~train])
    group = rng.choice(["a", "b"], size=len(yt), p=[0.7, 0.3])
    path = tmp_path / "digits.parquet"
    pq.write_table(pa.table({"g": group, "y_true": yt, "y_pred": yp}), path)
    proc = run_strata("eval", "--predictions", str(path), "--group", "g", "--positive", "1",
                      "--replicates", "50", "--format", "json", "--out", str(tmp_path / "out"))
    (m,) = json.loads(proc.stdout)["models"]
    # the report lists every class against the rest
    page = (tmp_path / "out" / "report.html").read_text()
    assert all(f'data-class="{k}"' in page for k in range(10))
    assert abs(m["overall"]["metrics"]["accuracy"]["value"] - accuracy_score(yt, yp)) < 1e-9
    assert set(m["overall"]["metrics"]) == {"count", "weighted_count", "accuracy"}
    g = m["groupings"][0]
    for grp in g["groups"]:
        sel = group == grp["group"]
        assert abs(grp["metrics"]["accuracy"]["value"] - accuracy_score(yt[sel], yp[sel])) < 1e-9
        lo, hi = grp["metrics"]["accuracy"]["lower"], grp["metrics"]["accuracy"]["upper"]
        assert lo <= grp["metrics"]["accuracy"]["value"] <= hi
    worst = min(accuracy_score(yt[group == v], yp[group == v]) for v in ["a", "b"])
    assert abs(g["disparities"]["worst_group_accuracy"]["value"] - worst) < 1e-9
    assert [c["class"] for c in m["classes"]] == [str(k) for k in range(10)]
    cm = confusion_matrix(yt, yp, labels=range(10))
    recall = recall_score(yt, yp, average=None, labels=range(10))
    precision = precision_score(yt, yp, average=None, labels=range(10))
    for k, c in enumerate(m["classes"]):
        o = c["overall"]["metrics"]
        fp = cm[:, k].sum() - cm[k, k]
        negatives = len(yt) - cm[k].sum()
        assert abs(o["true_positive_rate"]["value"] - recall[k]) < 1e-9
        assert abs(o["precision"]["value"] - precision[k]) < 1e-9
        assert abs(o["false_positive_rate"]["value"] - fp / negatives) < 1e-9
        assert abs(o["selection_rate"]["value"] - (yp == k).mean()) < 1e-9
        by = {x["group"]: x for x in c["groupings"][0]["groups"]}
        rates = [recall_score(yt[group == v] == k, yp[group == v] == k) for v in ["a", "b"]]
        assert abs(by["a"]["metrics"]["true_positive_rate"]["value"] - rates[0]) < 1e-9
        dp = abs((yp[group == "a"] == k).mean() - (yp[group == "b"] == k).mean())
        assert abs(c["groupings"][0]["disparities"]["demographic_parity_difference"]["value"] - dp) < 1e-9
    # a score threshold gives a binary prediction: a third class in the labels is an error
    pq.write_table(pa.table({"g": group, "y_true": yt, "y_score": np.full(len(yt), 0.5)}), path)
    proc = run_strata("eval", "--predictions", str(path), "--group", "g", "--positive", "1", "--pred", "none",
                      check=False)
    assert proc.returncode == 3 and "third class" in one_error_line(proc)


def test_a_group_of_the_training_data_absent_from_the_predictions_is_reported(data, tmp_path):
    path, _ = data
    spec = tmp_path / "ref.toml"
    spec.write_text(GATES.format(gates="") + textwrap.dedent("""
        [groups.reference.race]
        a = 0.5
        b = 0.3
        c = 0.1
        d = 0.1
        """))
    proc = run_strata("eval", str(spec), "--predictions", str(path), "--label", "y", "--pred", "p", "--score", "s",
                      "--format", "json")
    out = json.loads(proc.stdout)
    assert out["absent_groups"] == [{"model": None, "attribute": "race", "group": "d", "known_from": "groups.reference"}]
    assert "absent from the predictions" in proc.stderr and "panicked" not in proc.stderr
