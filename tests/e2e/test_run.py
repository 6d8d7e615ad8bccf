"""`strata run`: the whole pipeline in one command, checked against Fairlearn and
scikit-learn on the predictions it wrote, re-run, on S3, with failing gates, checks and
errors."""
from __future__ import annotations

import hashlib
import json
import pathlib
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference,
                               false_positive_rate, selection_rate, true_positive_rate)
from sklearn.metrics import accuracy_score

from conftest import ROOT, run_strata

ADULT_SPEC = ROOT / "pipelines" / "adult.toml"
STAGES = ["validate", "profile", "source checks", "curate", "curated checks", "train baseline",
          "train curated", "predict", "evaluate"]


def sha(p: pathlib.Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def adult_spec(tmp: pathlib.Path, extra: str = "", replace: tuple[str, str] | None = None,
               checks: pathlib.Path = ROOT / "sql") -> pathlib.Path:
    """pipelines/adult.toml, usable from another folder (absolute source and checks)."""
    text = ADULT_SPEC.read_text().replace('url = "../data/adult/train.parquet"',
                                          f'url = "{ROOT / "data" / "adult" / "train.parquet"}"')
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    p = tmp / "adult.toml"
    p.write_text(text + f'\n[checks]\ndirs = ["{checks}"]\n' + extra)
    return p


@pytest.fixture(scope="module")
def adult_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("strata-run") / "adult"
    proc = run_strata("run", str(ADULT_SPEC), "--out", str(out))
    return out, proc


def test_every_stage_runs_and_writes_its_outputs(adult_run):
    out, proc = adult_run
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "passed" and "stopped_at" not in run
    assert [s["name"] for s in run["stages"]] == STAGES
    assert all(s["status"] == "passed" for s in run["stages"])
    for rel in ["profile.json", "checks/source.json", "checks/source.junit.xml", "checks/curated.json",
                "checks/curated.junit.xml", "predictions.parquet", "eval.json", "report.html", "summary.md",
                "models/baseline/model.safetensors", "models/curated/model.safetensors", "curated/_latest"]:
        assert (out / rel).exists(), rel
    # one line per stage, then the verdict
    for name in STAGES:
        assert re.search(rf"^{re.escape(name)}\s+ok\s", proc.stdout, re.M), name
    assert "PASSED: run folder" in proc.stdout and "report.html" in proc.stdout
    # the baseline trained without the weights, the curated model with them
    b = json.loads((out / "models/baseline/train.json").read_text())
    c = json.loads((out / "models/curated/train.json").read_text())
    assert b["hyperparameters"]["sample_weights"] is False and c["hyperparameters"]["sample_weights"] is True
    assert b["run"]["run_id"] == c["run"]["run_id"]  # reweighing: the same split, weights or not


def test_eval_json_recomputed_by_fairlearn(adult_run):
    out, _ = adult_run
    report = json.loads((out / "eval.json").read_text())
    df = pq.read_table(out / "predictions.parquet").to_pandas()
    assert sorted(df["model"].unique()) == ["baseline", "curated"]
    # both models scored the same untouched test rows
    b, c = df[df["model"] == "baseline"], df[df["model"] == "curated"]
    assert list(b["row"] if "row" in b else b.index) == list(c["row"] if "row" in c else c.index)
    metrics = {"accuracy": accuracy_score, "selection_rate": selection_rate,
               "true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate}
    by_model = {m["model"]: m for m in report["models"]}
    for name, part in [("baseline", b), ("curated", c)]:
        m = by_model[name]
        y = (part["y_true"] == ">50K").to_numpy()
        p = (part["y_pred"] == ">50K").to_numpy()
        w = part["sample_weight"].to_numpy()
        params = {k: {"sample_weight": w} for k in metrics}
        for g in m["groupings"]:
            cols = g["attributes"]
            frame = MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=part[cols],
                                sample_params=params)
            for grp in g["groups"]:
                key = grp["values"][0] if len(cols) == 1 else tuple(grp["values"])
                for k in metrics:
                    assert abs(grp["metrics"][k]["value"] - frame.by_group[k][key]) < 1e-9, (name, key, k)
            if not g["excluded_groups"]:
                for metric, fn in [("demographic_parity_difference", demographic_parity_difference),
                                   ("equalized_odds_difference", equalized_odds_difference)]:
                    for method, suffix in [("between_groups", ""), ("to_overall", "_to_overall")]:
                        want = fn(y, p, sensitive_features=part[cols], method=method, sample_weight=w)
                        assert abs(g["disparities"][metric + suffix]["value"] - want) < 1e-9
    # the relative gates, recomputed
    sex = {n: next(g for g in by_model[n]["groupings"] if g["grouping"] == "sex") for n in by_model}
    gate = next(g for g in report["gates"] if g["metric"] == "demographic_parity_difference")
    ratio = (sex["curated"]["disparities"]["demographic_parity_difference"]["value"]
             / sex["baseline"]["disparities"]["demographic_parity_difference"]["value"])
    assert gate["model"] == "curated" and gate["baseline"] == "baseline"
    assert abs(gate["compared"] - ratio) < 1e-12 and gate["passed"] == (ratio <= 0.75)
    # both models scored the same rows: the comparison has a paired interval around it
    assert gate["paired"] is True and gate["compared_lower"] <= ratio <= gate["compared_upper"]


def test_rerun_reuses_the_published_run_and_gives_identical_outputs(adult_run):
    out, _ = adult_run
    before = {rel: sha(out / rel) for rel in ["models/baseline/model.safetensors", "models/curated/model.safetensors",
                                              "models/curated/encoder.json", "predictions.parquet", "eval.json"]}
    proc = run_strata("run", str(ADULT_SPEC), "--out", str(out))
    assert "already published" in proc.stdout
    after = {rel: sha(out / rel) for rel in before}
    assert before == after


def test_a_failing_gate_exits_1_and_still_writes_the_report(tmp_path):
    spec = adult_spec(tmp_path, replace=('value = 0.80\non = "lower"', 'value = 0.99\non = "lower"'))
    proc = run_strata("run", str(spec), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1, proc.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "failed" and run["stopped_at"] == "evaluate"
    assert "FAIL [curated] worst_group_accuracy on sex" in proc.stdout
    assert (tmp_path / "out" / "report.html").exists()


def test_a_failing_check_stops_the_run_with_exit_1(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "no_one_over_80.sql").write_text(
        "-- name: no_one_over_80\n-- severity: error\n-- stage: source\n"
        "SELECT age FROM source WHERE age > 80\n")
    spec = adult_spec(tmp_path, checks=sql)
    proc = run_strata("run", str(spec), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1, proc.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    status = {s["name"]: s["status"] for s in run["stages"]}
    assert status["source checks"] == "failed" and run["stopped_at"] == "source checks"
    assert all(status[s] == "skipped" for s in STAGES[3:])
    assert not (tmp_path / "out" / "curated").exists()  # nothing published
    assert not (tmp_path / "out" / "eval.json").exists()
    assert json.loads((tmp_path / "out" / "checks" / "source.json").read_text())


def test_a_misconfigured_later_stage_fails_at_validation(tmp_path):
    spec = adult_spec(tmp_path, replace=("epochs = 5", 'epochs = 5\nfeatures = ["age", "salary"]'))
    proc = run_strata("run", str(spec), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 3, proc.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "error" and run["stopped_at"] == "validate"
    validate = run["stages"][0]
    assert "train.features" in validate["message"] and "`salary`" in validate["message"]
    assert not (tmp_path / "out" / "curated").exists() and not (tmp_path / "out" / "profile.json").exists()
    # a gate naming an unknown metric: a spec error before anything, no run folder
    spec = adult_spec(tmp_path, extra='\n[[eval.gates]]\nmetric = "fairness"\nop = ">="\nvalue = 1\n')
    proc = run_strata("run", str(spec), "--out", str(tmp_path / "out2"), check=False)
    assert proc.returncode == 3 and "eval.gates[3]" in proc.stderr
    assert not (tmp_path / "out2").exists()


def test_run_on_object_storage(adult_run, s3_env):
    import boto3

    out, _ = adult_run
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="run-e2e")
    run_strata("run", str(ADULT_SPEC), "--out", "s3://run-e2e/adult/", env=s3_env)
    remote = json.loads(s3.get_object(Bucket="run-e2e", Key="adult/eval.json")["Body"].read())
    local = json.loads((out / "eval.json").read_text())
    assert remote["models"] == local["models"] and remote["gates"] == local["gates"]
    model = s3.get_object(Bucket="run-e2e", Key="adult/models/curated/model.safetensors")["Body"].read()
    assert hashlib.sha256(model).hexdigest() == sha(out / "models/curated/model.safetensors")
    run = json.loads(s3.get_object(Bucket="run-e2e", Key="adult/run.json")["Body"].read())
    assert run["status"] == "passed" and run["out"] == "s3://run-e2e/adult/"


def test_the_run_report_renders_in_headless_chromium(adult_run, tmp_path):
    from test_report import Dom, headless

    out, _ = adult_run
    dom_proc = headless(out / "report.html", tmp_path, "--dump-dom")
    assert not [l for l in dom_proc.stderr.splitlines() if "CONSOLE" in l or "Refused" in l]
    dom = Dom()
    dom.feed(dom_proc.stdout)
    text = " ".join(dom.text)
    assert "all 4 gates pass" in text and "source checks" in text
    checks = [a for t, a in dom.elements if t == "tr" and "check" in a.get("class", "").split()]
    assert len(checks) == 9  # 5 source, 4 curated
    assert all(a["class"].split()[1] in ("pass", "warn") for a in checks)
    assert any(t == "section" and a.get("id") == "representation" for t, a in dom.elements)
    shot = tmp_path / "run.png"
    headless(out / "report.html", tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.stat().st_size > 20_000


def test_resampling_runs_against_a_baseline_of_the_same_split(tmp_path):
    spec = ROOT / "pipelines" / "adult-census-mix.toml"
    out = tmp_path / "mix"
    run_strata("run", str(spec), "--out", str(out))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "passed"
    assert "baseline split" in [s["name"] for s in run["stages"]]

    def split(root: pathlib.Path, name: str):
        latest = json.loads((root / "_latest").read_text())
        folder = root / pathlib.Path(latest["manifest"]).parent
        t = pa_concat([pq.read_table(p) for p in sorted((folder / name).glob("*.parquet"))])
        cols = [c for c in t.column_names if c not in ("sample_weight", "split")]
        return t.select(cols).to_pandas().sort_values(cols).reset_index(drop=True)

    # the baseline's run splits the same rows the same way; only the training rows differ
    curated, baseline = out / "curated", out / "baseline-split"
    assert split(curated, "test").equals(split(baseline, "test"))
    assert len(split(baseline, "train")) == 26047 and len(split(curated, "train")) == 20000
    b = json.loads((out / "models/baseline/train.json").read_text())
    assert b["train_rows"] == 26047 and b["hyperparameters"]["sample_weights"] is False


def pa_concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables)


def test_a_run_killed_midway_can_simply_be_started_again(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from conftest import strata_bin

    out = tmp_path / "out"
    proc = subprocess.Popen([strata_bin(), "run", str(ADULT_SPEC), "--out", str(out), "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # kill it while the baseline trains: after the publish, before any model is written
    deadline = time.time() + 120
    line = ""
    for line in proc.stderr:
        if "train baseline" in line and "stage started" in line:
            break
        assert time.time() < deadline
    assert "stage started" in line, "strata run never reached the training stage"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the published run is whole (manifest, then _latest), nothing claims a finished run
    latest = json.loads((out / "curated" / "_latest").read_text())
    assert (out / "curated" / latest["manifest"]).exists()
    assert not (out / "run.json").exists() and not (out / "eval.json").exists()
    assert not (out / "models" / "baseline" / "train.json").exists()
    again = run_strata("run", str(ADULT_SPEC), "--out", str(out))
    assert "already published" in again.stdout
    assert json.loads((out / "run.json").read_text())["status"] == "passed"
