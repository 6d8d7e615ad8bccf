"""Two real models' predictions on Adult's untouched test split, evaluated side by side
(a `model` column), gates on one model and one group, and report.html rendered by a real
headless Chromium (a screenshot and a DOM dump, no console errors, no fetch)."""
from __future__ import annotations

import html.parser
import json
import os
import pathlib
import shutil
import subprocess
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fairlearn.metrics import MetricFrame, demographic_parity_difference
from sklearn.metrics import accuracy_score

from conftest import ROOT, run_strata, one_error_line

ADULT_SPEC = ROOT / "pipelines" / "adult.toml"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Adult curated, a model trained without and one with sample weights, both scored
    on the test split, concatenated with a `model` column."""
    tmp = tmp_path_factory.mktemp("report")
    run = tmp / "run"
    run_strata("curate", str(ADULT_SPEC), "--out", str(run))
    tables = []
    for name, extra in [("baseline", ["--no-sample-weights"]), ("curated", [])]:
        model = tmp / name
        run_strata("train", str(ADULT_SPEC), "--shards", str(run), "--out", str(model), *extra)
        out = tmp / f"{name}.parquet"
        run_strata("predict", "--model", str(model), "--shards", str(run), "--split", "test", "--out", str(out))
        t = pq.read_table(out)
        tables.append(t.append_column("model", pa.array([name] * t.num_rows)))
    preds = tmp / "predictions.parquet"
    pq.write_table(pa.concat_tables(tables), preds)
    latest = json.loads((run / "_latest").read_text())
    curation = run / pathlib.Path(latest["manifest"]).parent / "curation.json"
    return preds, curation, tmp


SPEC = """
[source]
url = "x.parquet"
[label]
column = "income"
positive = ">50K"
[groups]
attributes = ["sex", "race"]
min_group_rows = 30
[eval]
replicates = 200
seed = 5
{gates}
"""


def spec_file(tmp, gates: str) -> pathlib.Path:
    p = tmp / "spec.toml"
    p.write_text(SPEC.format(gates=textwrap.dedent(gates)))
    return p


def test_models_side_by_side_match_fairlearn(two_models):
    preds, _, tmp = two_models
    spec = spec_file(tmp, "")
    proc = run_strata("eval", str(spec), "--predictions", str(preds), "--weight", "none", "--format", "json")
    out = json.loads(proc.stdout)
    assert out["model_column"] == "model"
    assert [m["model"] for m in out["models"]] == ["baseline", "curated"]
    t = pq.read_table(preds).to_pandas()
    for m in out["models"]:
        part = t[t["model"] == m["model"]]
        y = part["y_true"] == ">50K"
        p = part["y_pred"] == ">50K"
        assert m["rows"] == len(part)
        assert abs(m["overall"]["metrics"]["accuracy"]["value"] - accuracy_score(y, p)) < 1e-9
        sex = next(g for g in m["groupings"] if g["grouping"] == "sex")
        frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p, sensitive_features=part["sex"])
        for g in sex["groups"]:
            assert abs(g["metrics"]["accuracy"]["value"] - frame.by_group[g["group"]]) < 1e-9
            lo, hi = g["metrics"]["accuracy"]["lower"], g["metrics"]["accuracy"]["upper"]
            assert lo <= g["metrics"]["accuracy"]["value"] <= hi
        want = demographic_parity_difference(y, p, sensitive_features=part["sex"])
        assert abs(sex["disparities"]["demographic_parity_difference"]["value"] - want) < 1e-9


def test_gates_on_a_model_and_a_group(two_models):
    preds, _, tmp = two_models
    spec = spec_file(tmp, """
        [[eval.gates]]
        metric = "accuracy"
        grouping = "sex"
        group = "Female"
        op = ">="
        value = 0.5
        model = "curated"
        [[eval.gates]]
        metric = "demographic_parity_difference"
        grouping = "sex"
        op = "<="
        value = 0.9
        """)
    proc = run_strata("eval", str(spec), "--predictions", str(preds), "--format", "json")
    gates = json.loads(proc.stdout)["gates"]
    # the first gate judges one model; the second every model
    assert [(g["metric"], g["model"]) for g in gates] == [
        ("accuracy", "curated"),
        ("demographic_parity_difference", "baseline"),
        ("demographic_parity_difference", "curated"),
    ]
    assert gates[0]["group"] == "Female" and all(g["passed"] for g in gates)
    for gates_text, needle in [
        ('[[eval.gates]]\nmetric = "accuracy"\ngrouping = "sex"\ngroup = "Nobody"\nop = ">="\nvalue = 0.5\n', "`Nobody`"),
        ('[[eval.gates]]\nmetric = "accuracy"\nop = ">="\nvalue = 0.5\nmodel = "xgboost"\n', "`xgboost`"),
        ('[[eval.gates]]\nmetric = "accuracy"\ngroup = "Female"\nop = ">="\nvalue = 0.5\n', "`group` needs `grouping`"),
    ]:
        spec = spec_file(tmp, gates_text)
        proc = run_strata("eval", str(spec), "--predictions", str(preds), check=False)
        assert proc.returncode == 3, proc.stderr
        line = one_error_line(proc)
        assert "eval.gates[0]" in line and needle in line, line


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed (scripts/test installs it)"
    return path


def headless(page: pathlib.Path, tmp: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True)


class Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_report_renders_in_headless_chromium(two_models):
    preds, curation, tmp = two_models
    spec = spec_file(tmp, """
        [[eval.gates]]
        metric = "demographic_parity_difference"
        grouping = "sex"
        op = "<="
        value = 0.05
        on = "upper"
        [[eval.gates]]
        metric = "worst_group_accuracy"
        grouping = ["sex", "race"]
        op = ">="
        value = 0.5
        """)
    out = tmp / "eval"
    proc = run_strata("eval", str(spec), "--predictions", str(preds), "--curation", str(curation),
                      "--out", str(out), check=False)
    assert proc.returncode == 1, proc.stderr  # Adult's sex gap is well above 0.05
    report = out / "report.html"
    evaluation = json.loads((out / "eval.json").read_text())
    page = report.read_text()
    # self-contained: no address to fetch anything from, and a policy that forbids it
    assert "default-src 'none'" in page
    for needle in ("http://", "https://", "<script", "<link", "<img", "url("):
        assert needle not in page.replace("http://www.w3.org/2000/svg", ""), needle

    dom_proc = headless(report, tmp, "--dump-dom")
    dom = Dom()
    dom.feed(dom_proc.stdout)
    console = [l for l in dom_proc.stderr.splitlines() if "CONSOLE" in l or "Refused" in l]
    assert not console, console
    elements = dom.elements
    text = " ".join(dom.text)
    # the verdict and every gate, as eval.json has them
    failed = sum(not g["passed"] for g in evaluation["gates"])
    assert failed >= 1 and f"{failed} of {len(evaluation['gates'])} gates fail" in text
    assert sum(1 for t, a in elements if t == "tr" and "gate" in a.get("class", "").split()) == len(evaluation["gates"])
    # a row per group and model, the small ones marked, for every grouping
    for k, g in enumerate(evaluation["models"][0]["groupings"]):
        rows = [a for t, a in elements if t == "tr" and a.get("data-grouping") == g["grouping"]]
        want = sum(len(m["groupings"][k]["groups"]) for m in evaluation["models"])
        assert len(rows) == want, g["grouping"]
        small = {(a["data-model"], a["data-group"]) for a in rows if "too-small" in a["class"]}
        assert small == {(m["model"], x["group"]) for m in evaluation["models"]
                         for x in m["groupings"][k]["groups"] if x["too_small"]}
    assert any(x["too_small"] for x in evaluation["models"][0]["groupings"][2]["groups"])  # sex × race has some
    # charts: four metrics and the disparities per grouping, and the representation
    figures = [a for t, a in elements if t == "figure"]
    groupings = len(evaluation["models"][0]["groupings"])
    assert len(figures) == groupings * 5 + 2  # and the representation: per attribute, per stratum
    assert sum(1 for t, _ in elements if t == "svg") == len(figures)
    sex_accuracy = next(a for a in figures if a["data-metric"] == "accuracy")
    assert int(sex_accuracy["data-points"]) == 2 * len(evaluation["models"][0]["groupings"][0]["groups"])
    strata = json.loads(curation.read_text())["strata"]
    assert sum(1 for t, a in elements if t == "tr" and a.get("class") == "strata") == len(strata)
    values = {(k, v) for s in strata for k, v in s["stratum"].items()}
    assert sum(1 for t, a in elements if t == "tr" and a.get("class") == "by-column") == len(values)
    # a column's shares are its strata's, summed (recomputed here from curation.json)
    female_after = sum(s["share_after"] for s in strata if s["stratum"]["sex"] == "Female")
    assert f"{female_after:.4f}" in text
    # reweighing changes weights, not rows: each stratum's share of the weight is shown
    total = sum(s["weight_sum"] for s in strata)
    for s in strata:
        assert f"{s['weight_sum'] / total:.4f}" in text
    assert sum(1 for t, a in elements if t == "circle") >= sum(int(a["data-points"]) for a in figures[:-2])

    shot = pathlib.Path(os.environ.get("STRATA_REPORT_SHOT", tmp / "report.png"))
    headless(report, tmp, f"--screenshot={shot}", "--window-size=1280,2400")
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    px = np.asarray(img).reshape(-1, 3).astype(int)
    assert len(np.unique(px, axis=0)) > 50  # text, charts, tables: not a blank page
    # the baseline's blue and the curated model's orange, drawn by the charts
    for rgb in [(31, 119, 180), (255, 127, 14)]:
        assert (np.abs(px - rgb).sum(axis=1) < 30).sum() > 20, rgb
