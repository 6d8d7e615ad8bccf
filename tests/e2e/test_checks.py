"""strata check: every ready check in sql/ made to pass and to fail on purpose-built
data, thresholds in counts and percentages, JUnit parsed, failing rows read back by
pyarrow, and parameters that look like SQL bound as values."""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, run_strata

SQL = ROOT / "sql"


def make_data(path, n=400, *, null_sex=0, dup_ids=0, bad_label=0, zero_weight=0, note_rows=0):
    """Two sexes x two races, label yes/no with a group-dependent rate; knobs break it."""
    ids = list(range(n))
    for i in range(dup_ids):
        ids[i + 1] = ids[0]
    sex = ["F" if i % 3 == 0 else "M" for i in range(n)]
    for i in range(null_sex):
        sex[i] = None
    race = ["A" if i % 5 < 2 else "B" for i in range(n)]
    label = ["yes" if (i * 7) % 10 < (3 if sex[i] == "F" else 5) else "no" for i in range(n)]
    for i in range(bad_label):
        label[-1 - i] = "maybe"
    weight = [1.0 + (i % 4) for i in range(n)]
    for i in range(zero_weight):
        weight[10 + i] = 0.0
    note = ["plain"] * n
    for i in range(note_rows):
        note[i * 2] = "it's \"quoted\"; DROP TABLE source; --"
    pq.write_table(pa.table({"id": ids, "sex": sex, "race": race, "label": label, "w": weight, "note": note}), path)


def spec(tmp_path, checks_dir, *, params="", curate="", id_column=True, extra=""):
    text = f"""
[source]
url = "{tmp_path / 'data.parquet'}"
weight_column = "w"
{'id_column = "id"' if id_column else ''}

[label]
column = "label"
positive = "yes"

[groups]
attributes = ["sex", "race"]
min_group_rows = 5

[curate]
seed = 1
{curate or 'strategy = "reweigh"'}

[publish]
shard_rows = 100

[checks]
dirs = ["{checks_dir}"]

[checks.params]
{params}
{extra}
"""
    p = tmp_path / "pipeline.toml"
    p.write_text(text)
    return p


def only(tmp_path, *names):
    d = tmp_path / "checks"
    d.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(SQL / f"{n}.sql", d / f"{n}.sql")
    return d


def check(pipeline, *args, curate=True, out=None):
    out = out or pipeline.parent / "out"
    if curate:
        run_strata("curate", str(pipeline), "--out", str(out), "-q")
    j = pipeline.parent / "result.json"
    stage_args = ["--out", str(out)] if curate else ["--stage", "source"]
    proc = run_strata("check", str(pipeline), *stage_args, "--json", str(j), *args, check=False)
    assert proc.returncode in (0, 1, 3), proc.stderr
    return proc, json.loads(j.read_text())


def statuses(result):
    return {(c["name"], c["stage"]): c["status"] for c in result["checks"]}


CASES = {
    # check: (data knobs, params, curate, pass params/knobs vs fail)
    "min_rows_per_group": [
        ({}, "min_group_rows = 5", None, "pass"),
        ({}, "min_group_rows = 1000", None, "warn"),
    ],
    "min_rows_per_group_label": [
        ({}, "min_cell_rows = 3", None, "pass"),
        ({}, "min_cell_rows = 500", None, "warn"),
    ],
    "protected_null_rate": [
        ({"null_sex": 40}, "max_null_share = 0.2", None, "pass"),
        ({"null_sex": 40}, "max_null_share = 0.05", None, "fail"),
    ],
    "label_values_allowed": [
        ({}, 'allowed_labels = "yes,no"', None, "pass"),
        ({"bad_label": 3}, 'allowed_labels = "yes,no"', None, "fail"),
    ],
    "weights_finite_positive": [
        ({}, "", None, "pass"),
        ({"zero_weight": 2}, "", None, "fail"),
    ],
    "splits_non_empty": [
        ({}, "", None, "pass"),
        ({}, "", 'strategy = "reweigh"\n[curate.split]\ntrain = 1.0', "fail"),
    ],
    "max_curation_gap": [
        ({}, "max_gap = 0.01", 'strategy = "resample"\n[curate.resample]\ntarget = "uniform"\nexact = true', "pass"),
        ({}, "max_gap = 0.01", 'strategy = "resample"\n[curate.resample]\ntarget = "uniform"\nexact = false', "fail"),
    ],
}


@pytest.mark.parametrize("name,case", [(n, i) for n, cases in CASES.items() for i in range(len(cases))])
def test_ready_check_passes_and_fails_on_purpose_built_data(tmp_path, name, case):
    knobs, params, curate, want = CASES[name][case]
    make_data(tmp_path / "data.parquet", **knobs)
    p = spec(tmp_path, only(tmp_path, name), params=params, curate=curate)
    proc, result = check(p)
    got = {c["status"] for c in result["checks"] if c["name"] == name}
    assert got == {want}, (proc.stdout, proc.stderr)
    assert proc.returncode == {"pass": 0, "warn": 0, "fail": 1}[want]


def test_duplicate_ids_on_the_source_stage(tmp_path):
    make_data(tmp_path / "data.parquet")
    p = spec(tmp_path, only(tmp_path, "duplicate_ids"))
    proc, result = check(p, curate=False)
    assert statuses(result) == {("duplicate_ids", "source"): "pass"} and proc.returncode == 0
    make_data(tmp_path / "data.parquet", dup_ids=3)
    proc, result = check(p, curate=False)
    assert statuses(result) == {("duplicate_ids", "source"): "fail"} and proc.returncode == 1
    assert result["checks"][0]["failing_rows"] == 1
    assert result["checks"][0]["sample"] == [{"id": "0", "copies": 4}]


def write_check(d, name, body, **meta):
    head = "".join(f"-- {k}: {v}\n" for k, v in {"name": name, **meta}.items())
    (d / f"{name}.sql").write_text(head + body + "\n")


def test_thresholds_in_counts_and_percentages(tmp_path):
    make_data(tmp_path / "data.parquet", n=200, null_sex=3)  # 3 of 200 = 1.5%
    d = tmp_path / "checks"
    d.mkdir()
    body = "SELECT * FROM source WHERE sex IS NULL"
    write_check(d, "pct_fail", body, stage="source", error_if="> 1%")
    write_check(d, "pct_pass", body, stage="source", error_if="> 2%")
    write_check(d, "pct_warn", body, stage="source", warn_if="> 1%", error_if="> 2%")
    write_check(d, "count_fail", body, stage="source", error_if=">= 3")
    write_check(d, "count_pass", body, stage="source", error_if="> 3")
    write_check(d, "warn_severity", body, stage="source", severity="warn")
    proc, result = check(spec(tmp_path, d), curate=False)
    assert {c["name"]: c["status"] for c in result["checks"]} == {
        "pct_fail": "fail", "pct_pass": "pass", "pct_warn": "warn",
        "count_fail": "fail", "count_pass": "pass", "warn_severity": "warn",
    }
    assert all(c["failing_rows"] == 3 and c["checked_rows"] == 200 for c in result["checks"])
    assert proc.returncode == 1
    # --strict turns warnings into failures
    only_warn = tmp_path / "warn-only"
    only_warn.mkdir()
    write_check(only_warn, "warn_severity", body, stage="source", severity="warn")
    p = spec(tmp_path, only_warn)
    assert check(p, curate=False)[0].returncode == 0
    proc, result = check(p, "--strict", curate=False)
    assert proc.returncode == 1 and result["checks"][0]["status"] == "fail"


def test_parameters_are_bound_as_values_never_pasted(tmp_path):
    make_data(tmp_path / "data.parquet", note_rows=7)
    d = tmp_path / "checks"
    d.mkdir()
    write_check(d, "quoted", "SELECT id, note FROM data WHERE note = $needle", stage="source")
    write_check(d, "after", "SELECT * FROM source WHERE id < 0", stage="source")
    needle = "it's \\\"quoted\\\"; DROP TABLE source; --"
    proc, result = check(spec(tmp_path, d, params=f'needle = "{needle}"'), curate=False)
    by = {c["name"]: c for c in result["checks"]}
    assert by["quoted"]["failing_rows"] == 7, proc.stdout
    assert all(r["note"] == "it's \"quoted\"; DROP TABLE source; --" for r in by["quoted"]["sample"])
    assert by["after"]["status"] == "pass", "the source table is still there"


def test_adult_copy_with_new_checks_exit_codes_junit_json_and_failing_rows(tmp_path):
    """The issue's acceptance run: one check that must fail, one that must pass, one with a
    syntax error, added to a copy of the Adult pipeline."""
    d = tmp_path / "checks"
    shutil.copytree(SQL, d, ignore=shutil.ignore_patterns("*.md"))
    write_check(d, "must_fail", "SELECT * FROM source WHERE age > 80", stage="source", severity="error",
                description="nobody over 80")
    write_check(d, "must_pass", "SELECT * FROM source WHERE age < 0", stage="source")
    write_check(d, "syntax_error", "SELECT *\nFROM source\nWHERE age >> > 3", stage="source")
    text = (ROOT / "pipelines/adult.toml").read_text().replace("../data/adult/train.parquet", str(ROOT / "data/adult/train.parquet"))
    text = text.replace("[checks.params]", f'[checks]\ndirs = ["{d}"]\nmax_failing_rows = 25\n\n[checks.params]')
    p = tmp_path / "adult.toml"
    p.write_text(text)
    out = tmp_path / "out"
    run_strata("curate", str(p), "--out", str(out), "-q")
    junit, js = tmp_path / "junit.xml", tmp_path / "checks.json"
    proc = run_strata("check", str(p), "--out", str(out), "--junit", str(junit), "--json", str(js), check=False)
    assert proc.returncode == 3, "a check that cannot run wins over a failing one"
    result = json.loads(js.read_text())
    st = statuses(result)
    assert st[("must_fail", "source")] == "fail"
    assert st[("must_pass", "source")] == "pass"
    assert st[("syntax_error", "source")] == "error"
    err = next(c for c in result["checks"] if c["name"] == "syntax_error")["message"]
    assert err.startswith(f"{d / 'syntax_error.sql'}:5: "), err  # line 5 of the file: WHERE age >> > 3
    # every ready check still ran, at both stages where it applies
    assert len(result["checks"]) == 3 + 5 + 4
    assert result["summary"] == {"checks": 12, "passed": 9, "warned": 1, "failed": 1, "errors": 1, "skipped": 0}

    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 12 == int(root.get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    errors = [c for c in cases if c.find("error") is not None]
    assert [c.get("name") for c in failures] == ["must_fail"] and root.get("failures") == "1"
    assert [c.get("name") for c in errors] == ["syntax_error"] and root.get("errors") == "1"
    assert "failing rows" in failures[0].find("failure").text

    must_fail = next(c for c in result["checks"] if c["name"] == "must_fail")
    over_80 = pq.read_table(ROOT / "data/adult/train.parquet").filter(pa.compute.greater(pa.compute.field("age"), 80)).num_rows
    assert must_fail["failing_rows"] == over_80 > 25
    kept = pq.read_table(must_fail["failing_rows_file"].removeprefix("file://"))
    assert kept.num_rows == 25
    run_id = json.loads((out / "_latest").read_text())["run_id"]
    assert set(kept.column("strata_run_id").to_pylist()) == {run_id} == {result["run_id"]}
    assert all(a > 80 for a in kept.column("age").to_pylist())
