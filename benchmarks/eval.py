#!/usr/bin/env python3
"""Benchmark `strata eval` against Fairlearn's MetricFrame with bootstrap, in one run.

    cargo build --release -p strata-cli
    python3 benchmarks/eval.py [--rows 1000000] [--replicates 1000] [--fairlearn-boot 3]

Uses the test venv's Fairlearn (~/.cache/strata-venv, or $STRATA_VENV; scripts/test
makes it). Then:
  1. generates predictions over sex × race with Adult's group mix (seeded; labels,
     scores and predictions depend on the groups) and writes them as one Parquet file;
  2. times the whole `strata eval` process (reading, every metric and disparity per
     group of sex, race and sex × race, `--replicates` bootstrap replicates, eval.json);
  3. times Fairlearn 0.15 on the same data: MetricFrame with four metrics (accuracy,
     selection rate, TPR, FPR) over sex × race, without bootstrap and with
     `n_boot=--fairlearn-boot`; the per-replicate cost is their difference over the
     replicates, scaled linearly to `--replicates`;
  4. checks that both agree on the per-group accuracy (to 1e-9) and prints the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
VENV = pathlib.Path(os.environ.get("STRATA_VENV", pathlib.Path.home() / ".cache" / "strata-venv"))

SEX = (["Female", "Male"], [0.33, 0.67])
RACE = (["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"], [0.854, 0.096, 0.031, 0.01, 0.009])


def ensure_venv() -> None:
    """Fairlearn from this interpreter (scripts/bench's venv) or from the test venv."""
    import importlib.util
    if pathlib.Path(sys.prefix).resolve() == VENV.resolve() or importlib.util.find_spec("fairlearn"):
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        sys.exit(f"no test venv at {VENV}: run scripts/test once (it installs Fairlearn), or set STRATA_VENV")
    os.execv(str(py), [str(py), *sys.argv])


def generate(n: int, path: pathlib.Path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(11)
    sex = rng.choice(SEX[0], size=n, p=SEX[1])
    race = rng.choice(RACE[0], size=n, p=RACE[1])
    base = 0.12 + 0.2 * (sex == "Male") + 0.08 * (race == "White") + 0.1 * (race == "Asian-Pac-Islander")
    y = rng.random(n) < base
    score = np.clip(base + 0.35 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    pred = score >= 0.5
    label = lambda b: np.where(b, ">50K", "<=50K")
    t = pa.table({"sex": sex, "race": race, "y_true": label(y), "y_pred": label(pred), "y_score": score})
    pq.write_table(t, path)
    return t


def main() -> None:
    ensure_venv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--fairlearn-boot", type=int, default=3)
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here (scripts/bench)")
    args = ap.parse_args()
    # harness by path: the benchmarks folder on sys.path would shadow the standard
    # library's `profile` (benchmarks/profile.py), which PyTorch imports
    import importlib.util
    loader = importlib.util.spec_from_file_location("harness", ROOT / "benchmarks" / "harness.py")
    harness = importlib.util.module_from_spec(loader)
    sys.modules["harness"] = harness  # dataclasses look their module up there
    loader.loader.exec_module(harness)
    ratio, write_result = harness.ratio, harness.write_result
    strata = TARGET / "release" / "strata"
    if not strata.exists():
        sys.exit(f"{strata} not found: cargo build --release -p strata-cli")

    import numpy as np
    import fairlearn
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        path = tmp / "predictions.parquet"
        t = generate(args.rows, path)
        print(f"{args.rows:,} predictions over sex × race ({path.stat().st_size / 1e6:.1f} MB Parquet)")

        cmd = [str(strata), "eval", "--predictions", str(path), "--group", "sex", "--group", "race",
               "--positive", ">50K", "--replicates", str(args.replicates), "--seed", "1", "--format", "json",
               "--out", str(tmp / "out")]
        # GNU time reports strata's own peak RSS (this process's rusage of its children
        # would count the forked Python before exec, data and all)
        gnu_time = pathlib.Path("/usr/bin/time")
        wrapped = [str(gnu_time), "-f", "%M %U %S"] + cmd if gnu_time.exists() else cmd
        start = time.perf_counter()
        proc = subprocess.run(wrapped, capture_output=True, text=True)
        strata_s = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        out = json.loads(proc.stdout)["models"][0]
        usage = ""
        if gnu_time.exists():
            rss_kb, user, system = proc.stderr.strip().splitlines()[-1].split()
            usage = f", {float(user) + float(system):.2f} s CPU, peak RSS {int(rss_kb) / 1024:.0f} MiB"
        print(f"strata eval: {strata_s:.2f} s wall{usage} "
              f"({args.replicates} replicates, every metric and disparity, sex, race and sex × race)")

        df = t.to_pandas()
        y = (df["y_true"] == ">50K").to_numpy()
        p = (df["y_pred"] == ">50K").to_numpy()
        sf = df[["sex", "race"]]
        metrics = {"accuracy": accuracy_score, "selection_rate": selection_rate,
                   "tpr": true_positive_rate, "fpr": false_positive_rate}
        start = time.perf_counter()
        frame = MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=sf)
        plain_s = time.perf_counter() - start
        start = time.perf_counter()
        MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=sf,
                    n_boot=args.fairlearn_boot, ci_quantiles=[0.025, 0.975], random_state=1)
        boot_s = time.perf_counter() - start
        per_replicate = max(boot_s - plain_s, 1e-9) / args.fairlearn_boot
        fairlearn_s = plain_s + per_replicate * args.replicates
        print(f"Fairlearn {fairlearn.__version__} MetricFrame, 4 metrics over sex × race: {plain_s:.1f} s without "
              f"bootstrap, {boot_s:.1f} s with n_boot={args.fairlearn_boot}: {per_replicate:.1f} s per replicate, "
              f"so {fairlearn_s:,.0f} s for {args.replicates} (scaled linearly)")

        inter = next(g for g in out["groupings"] if g["grouping"] == "sex × race")
        worst = 0.0
        for g in inter["groups"]:
            want = frame.by_group["accuracy"][tuple(g["values"])]
            worst = max(worst, abs(g["metrics"]["accuracy"]["value"] - want))
        assert worst < 1e-9, worst
        print(f"per-group accuracy agrees to {worst:.1e}")
        print(f"ratio: strata is {fairlearn_s / strata_s:,.0f}x faster than Fairlearn "
              f"(goal: the whole process under 15 s and at least 1000x)")
        rss = int(rss_kb) // 1024 if gnu_time.exists() else None
        write_result(args.json, "eval",
                     f"{args.rows:,} predictions over sex x race, {args.replicates} bootstrap replicates; Fairlearn "
                     f"{fairlearn.__version__} timed with n_boot={args.fairlearn_boot}, scaled linearly",
                     [{"job": "strata eval (whole process)", "seconds": round(strata_s, 3), "peak_rss_mib": rss},
                      {"job": f"Fairlearn MetricFrame, {args.replicates} replicates (scaled)",
                       "seconds": round(fairlearn_s, 1)}],
                     [ratio("Fairlearn / strata (speed-up)", fairlearn_s / strata_s, ">= 1000")])


if __name__ == "__main__":
    main()
