#!/usr/bin/env python3
"""Benchmark `strata train` against PyTorch and Keras on the same encoded rows, in one run.

    cargo build --release -p strata-cli
    python3 benchmarks/train.py [--epochs 5] [--threads 2]

Installs its peers (torch, tensorflow-cpu) into its own venv (~/.cache/strata-bench-venv,
or $STRATA_BENCH_VENV) on first use and re-runs itself there. Then:
  1. curates pipelines/adult.toml and trains strata's default MLP on it (release build),
     taking rows per second per epoch from train.json (training steps only);
  2. encodes the same training rows in Python from strata's encoder.json, so all three
     train on identical inputs, and trains the same architecture (Dense 128, ReLU,
     dropout 0.2, Dense 2, softmax; Adam 1e-3; batch 128; weighted cross-entropy) in
     PyTorch (a plain loop over shuffled batches) and Keras (`model.fit` with
     `sample_weight`), timing each epoch;
  3. measures the machine's arithmetic limit as PyTorch's float32 GEMM rate on
     2048 × 2048 matrices with the same threads, and prints each trainer's FLOP rate
     (rows per second × FLOPs per row from train.json) against it.
Prints the median epoch of each and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# this folder holds `profile.py`, which would shadow the standard library's `profile`
# (PyTorch imports cProfile): peers must not see it
sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != ROOT / "benchmarks"]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
VENV = pathlib.Path(os.environ.get("STRATA_BENCH_VENV", pathlib.Path.home() / ".cache" / "strata-bench-venv"))
PEERS = ["torch", "tensorflow-cpu", "safetensors", "pyarrow", "numpy"]


def ensure_venv() -> None:
    py = VENV / "bin" / "python"
    if pathlib.Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *PEERS], check=True)
    os.execv(str(py), [str(py), *sys.argv])


def encode(encoder: dict, table):
    import numpy as np

    cols = []
    for f in encoder["features"]:
        values = table[f["name"]].to_pylist()
        if f["kind"] == "numeric":
            x = np.array([np.nan if v is None else float(v) for v in values])
            miss = np.isnan(x)
            cols.append(np.where(miss, 0.0, (np.nan_to_num(x) - f["mean"]) / f["std"])[:, None])
            if f["missing_indicator"]:
                cols.append(miss.astype(float)[:, None])
        else:
            cats = {c: i for i, c in enumerate(f["categories"])}
            onehot = np.zeros((len(values), len(cats) + 1))
            for i, v in enumerate(values):
                onehot[i, cats.get(v, len(cats))] = 1
            cols.append(onehot)
    return np.hstack(cols).astype(np.float32)


def torch_epochs(x, y, w, epochs, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(128, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    X, Y, W = torch.from_numpy(x), torch.from_numpy(y).long(), torch.from_numpy(w)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 128):
            idx = perm[i:i + 128]
            xb, yb, wb = X[idx], Y[idx], W[idx]
            loss = (torch.nn.functional.cross_entropy(model(xb), yb, reduction="none") * wb).sum() / wb.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    return times


def keras_epochs(x, y, w, epochs, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((x.shape[1],)), tf.keras.layers.Dense(128, activation="relu"),
                                 tf.keras.layers.Dropout(0.2), tf.keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    times = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, sample_weight=w, batch_size=128, epochs=epochs, shuffle=True, verbose=0, callbacks=[Timer()])
    return times


def check_torch_loads(model_dir: pathlib.Path, encoder: dict, predictions: pathlib.Path, test) -> float:
    """strata's checkpoint in PyTorch: load_state_dict (strict) into the equivalent
    nn.Sequential, run on the test rows; the largest difference from strata's y_score."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import load_file

    model = torch.nn.Sequential(torch.nn.Linear(encoder["width"], 128), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(128, 2), torch.nn.Softmax(dim=1))
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    model.eval()
    with torch.no_grad():
        p = model(torch.from_numpy(encode(encoder, test))).numpy()[:, 1]
    got = np.array(pq.read_table(predictions)["y_score"].to_pylist())
    return float(np.abs(p - got).max())


def gemm_gflops(threads):
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here (scripts/bench)")
    args = ap.parse_args()
    ensure_venv()
    # harness by path: the benchmarks folder on sys.path would shadow the standard
    # library's `profile` (benchmarks/profile.py), which PyTorch imports
    import importlib.util
    loader = importlib.util.spec_from_file_location("harness", ROOT / "benchmarks" / "harness.py")
    harness = importlib.util.module_from_spec(loader)
    sys.modules["harness"] = harness  # dataclasses look their module up there
    loader.loader.exec_module(harness)
    ratio, write_result = harness.ratio, harness.write_result
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    strata = str(TARGET / "release" / "strata")
    spec = ROOT / "pipelines" / "adult.toml"
    work = pathlib.Path(tempfile.mkdtemp(prefix="strata-bench-train-"))
    env = {**os.environ, "RAYON_NUM_THREADS": str(args.threads)}
    subprocess.run([strata, "-q", "curate", str(spec), "--out", str(work / "out")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    train_spec = work / "adult.toml"
    text = spec.read_text().replace("../data/", str(ROOT / "data") + "/")
    # the spec's own [train] section, with this run's epochs
    text, n = re.subn(r"(?m)^\[train\]\n(epochs = \d+\n)?", f"[train]\nepochs = {args.epochs}\n", text, count=1)
    if n == 0:
        text += f"\n[train]\nepochs = {args.epochs}\n"
    train_spec.write_text(text)
    subprocess.run([strata, "-q", "train", str(train_spec), "--shards", str(work / "out"), "--out", str(work / "model")],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    report = json.loads((work / "model" / "train.json").read_text())
    encoder = json.loads((work / "model" / "encoder.json").read_text())
    latest = json.loads((work / "out" / "_latest").read_text())
    run = (work / "out" / latest["manifest"]).parent
    manifest = json.loads((run / "manifest.json").read_text())
    train = pa.concat_tables([pq.read_table(run / s["path"]) for s in manifest["shards"] if s["split"] == "train"])
    x = encode(encoder, train)
    classes = encoder["label"]["classes"]
    y = np.array([classes.index(v) for v in train[encoder["label"]["column"]].to_pylist()], dtype=np.int64)
    w = np.array(train["sample_weight"].to_pylist(), dtype=np.float32)
    rows = len(x)
    assert rows == report["train_rows"] and x.shape[1] == encoder["width"]

    tests = sorted((s for s in manifest["shards"] if s["split"] == "test"), key=lambda s: s["index"])
    test = pa.concat_tables([pq.read_table(run / s["path"]) for s in tests])
    subprocess.run([strata, "-q", "predict", "--model", str(work / "model"), "--shards", str(work / "out"),
                    "--out", str(work / "p.parquet")], check=True, env=env, stdout=subprocess.DEVNULL)
    diff = check_torch_loads(work / "model", encoder, work / "p.parquet", test)
    print(f"PyTorch load_state_dict of model.safetensors: max |p_torch - y_score| = {diff:.2e} on {test.num_rows} test rows")
    assert diff < 1e-5, diff

    flops = report["flops_per_row"]
    strata_rps = statistics.median(e["rows_per_second"] for e in report["epochs"])
    torch_rps = rows / statistics.median(torch_epochs(x, y, w, args.epochs, args.threads))
    keras_rps = rows / statistics.median(keras_epochs(x, y, w, args.epochs, args.threads))
    peak = gemm_gflops(args.threads)
    best = max(torch_rps, keras_rps)
    print(f"Adult train split: {rows} rows x {x.shape[1]} inputs -> 128 -> 2, batch 128, {args.epochs} epochs, "
          f"{args.threads} threads; {flops} FLOP per row (6 x weights: forward 2, backward 4)")
    print(f"{'trainer':<10} {'rows/s':>10} {'GFLOP/s':>8} {'of peak':>8}")
    for name, rps in [("strata", strata_rps), ("pytorch", torch_rps), ("keras", keras_rps)]:
        print(f"{name:<10} {rps:>10.0f} {rps * flops / 1e9:>8.2f} {rps * flops / 1e9 / peak:>8.1%}")
    print(f"machine limit: {peak:.1f} GFLOP/s (PyTorch float32 GEMM 2048^3, {args.threads} threads)")
    print(f"ratio strata / pytorch: {strata_rps / torch_rps:.2f}")
    print(f"ratio strata / keras: {strata_rps / keras_rps:.2f}")
    print(f"ratio strata / faster peer: {strata_rps / best:.2f} (goal >= 1.0)")
    print(f"strata share of the machine limit: {strata_rps * flops / 1e9 / peak:.1%} (goal >= 25%)")
    write_result(args.json, "train",
                 f"Adult train split, {rows} rows x {x.shape[1]} inputs, batch 128, median of {args.epochs} epochs, "
                 f"{args.threads} threads; machine limit {peak:.1f} GFLOP/s",
                 [{"job": f"{name} (rows/s)", "seconds": round(rows / rps, 3), "rows_per_second": round(rps)}
                  for name, rps in [("strata", strata_rps), ("pytorch", torch_rps), ("keras", keras_rps)]],
                 [ratio("strata / faster of PyTorch and Keras (throughput)", strata_rps / best, ">= 1.0"),
                  ratio("strata / PyTorch (throughput)", strata_rps / torch_rps),
                  ratio("strata / Keras (throughput)", strata_rps / keras_rps)])


if __name__ == "__main__":
    main()
