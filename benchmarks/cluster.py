#!/usr/bin/env python3
"""Benchmark strata's data stages on an Apache Ballista cluster against the embedded
engine, on the same files, in one run.

    cargo build --release -p strata-cli --features ballista -p strata-cluster
    python3 benchmarks/cluster.py [--rows 20000000] [--files 8]

Data: `strata synth` (census preset, seed 0) under bench-data/. Jobs (each a process
of its own): the profile, a reweighing curation and an exact undersample, both
publishing zstd shards (the specs of benchmarks/census*.toml over that data). Engines, one after the other: the embedded
engine (`local`), then clusters started by scripts/cluster-up on this machine with the
same cores in all: one executor offering every core, and two executors offering half
each. For every job: wall seconds, the driver's peak RSS, the Arrow bytes the driver
received from the engine (strata's own count, logged by the shard writer), the bytes
that crossed the loopback interface during the job (an independent upper bound: it
also counts the shuffle between executors), and whether the outputs equal the local
engine's (profile JSON; every shard's sha256 and the manifest but `created_at`).

On one machine the cluster can only show its overhead, not a speed-up: the executors
share the driver's cores. BENCHMARKS.md ("Cluster") reasons from these figures to many
machines.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

from harness import ROOT, TARGET, bench_spec, census_data, latest_run



def loopback_bytes() -> int:
    for line in pathlib.Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[0])
    return 0


def timed(cmd: list[str]) -> dict:
    lo = loopback_bytes()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    received = re.findall(r"received_bytes[=\":]+(\d+)", err)
    writer = re.findall(r"writer_input_bytes[=\":]+(\d+)", err)
    return {
        "wall_s": round(wall, 2),
        "loopback_bytes": loopback_bytes() - lo,
        "received_bytes": int(received[-1]) if received else None,
        "writer_input_bytes": int(writer[-1]) if writer else None,
        "stdout": out,
    }


def peak_rss_mib(cmd: list[str]) -> int:
    """The peak RSS of a job, from a second run under /usr/bin/time (so the timed run
    is not slowed by it)."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return int(m.group(1)) // 1024 if m else -1


def comparable_run(out: pathlib.Path) -> tuple[str, list]:
    folder, manifest = latest_run(out)
    manifest = {k: v for k, v in manifest.items() if k != "created_at"}
    return json.dumps(manifest, sort_keys=True), sorted((s["path"], s["sha256"]) for s in manifest["shards"])


def executor_peaks(state: pathlib.Path) -> list[int]:
    peaks = []
    for line in (state / "pids").read_text().splitlines():
        pid, name, *_ = line.split()
        if name.startswith("executor"):
            try:
                status = pathlib.Path(f"/proc/{pid}/status").read_text()
                peaks.append(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) // 1024)
            except (FileNotFoundError, AttributeError):
                peaks.append(-1)
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--json", type=pathlib.Path, default=ROOT / "bench-data" / "cluster.json")
    ap.add_argument("--build", choices=["release", "debug"], default="release",
                    help="which build's binaries (debug: to try the script quickly)")
    args = ap.parse_args()
    RELEASE = TARGET / args.build
    for b in ("strata", "strata-scheduler", "strata-executor"):
        if not (RELEASE / b).exists():
            sys.exit(f"{RELEASE / b} is missing: cargo build --release -p strata-cli --features ballista -p strata-cluster")
    strata = str(RELEASE / "strata")
    data = census_data(args.rows, args.files, RELEASE / "strata")
    scratch = ROOT / "bench-data" / "cluster-out"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)

    def spec(name: str) -> pathlib.Path:
        return bench_spec(name, data, scratch)
    cores = os.cpu_count() or 2
    engines = [("local", 0, 0), ("1 executor", 1, cores), ("2 executors", 2, max(1, cores // 2))]
    jobs = [
        ("profile", spec("census"), ["profile", "--format", "json"]),
        ("curate reweigh", spec("census-reweigh"), ["curate"]),
        ("curate undersample", spec("census-undersample"), ["curate"]),
    ]
    results, reference = [], {}
    for engine_name, executors, vcores in engines:
        state = scratch / f"state-{executors}"
        engine_args: list[str] = []
        if executors:
            up = subprocess.run(
                [str(ROOT / "scripts/cluster-up"), *(["--release"] if args.build == "release" else []), "--no-build", "--executors", str(executors),
                 "--vcores", str(vcores), "--state", str(state)],
                capture_output=True, text=True, env={**os.environ, "CARGO_TARGET_DIR": str(TARGET)},
            )
            if up.returncode != 0:
                sys.exit(f"cluster-up failed: {up.stderr}")
            engine_args = ["--engine", up.stdout.strip().splitlines()[-1]]
        try:
            for job, spec, cmd in jobs:
                slug = job.replace(" ", "-")
                out = scratch / f"{slug}-{executors}"
                full = [strata, *cmd, str(spec), *engine_args]
                if cmd[0] == "curate":
                    full += ["--out", str(out)]
                m = timed(full)
                if cmd[0] == "curate":
                    same_as = comparable_run(out)
                    shutil.move(str(out), str(out) + "-timed")
                else:
                    same_as = json.loads(m["stdout"])
                m["peak_rss_mib"] = peak_rss_mib(full)
                shutil.rmtree(out, ignore_errors=True)
                reference.setdefault(job, same_as)
                m["identical_to_local"] = same_as == reference[job]
                del m["stdout"]
                results.append({"engine": engine_name, "executors": executors, "vcores": vcores, "job": job, **m})
                print(f"{engine_name:12} {job:20} {m['wall_s']:8.2f} s  driver peak {m['peak_rss_mib']:6} MiB"
                      f"  to driver {m['received_bytes'] or 0:>10,} B  to writer {m['writer_input_bytes'] or 0:>14,} B  loopback {m['loopback_bytes']:>14,} B"
                      f"  identical {m['identical_to_local']}", flush=True)
            if executors:
                peaks = executor_peaks(state)
                results.append({"engine": engine_name, "executors": executors, "executor_peak_rss_mib": peaks})
                print(f"{engine_name:12} executors' peak RSS (MiB): {peaks}", flush=True)
        finally:
            if executors:
                subprocess.run([str(ROOT / "scripts/cluster-down"), "--state", str(state)], capture_output=True)

    print()
    print("| job | engine | seconds | vs local | driver peak RSS (MiB) | Arrow bytes to the driver |"
          " Arrow bytes to the shard writer | loopback bytes | identical |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    fmt = lambda v: "—" if v is None else f"{v:,}"
    local = {r["job"]: r["wall_s"] for r in results if r.get("engine") == "local"}
    for r in results:
        if "job" not in r:
            continue
        print(f"| {r['job']} | {r['engine']} | {r['wall_s']:.2f} | {r['wall_s'] / local[r['job']]:.2f} |"
              f" {r['peak_rss_mib']} | {fmt(r['received_bytes'])} | {fmt(r['writer_input_bytes'])} |"
              f" {r['loopback_bytes']:,} | {r['identical_to_local']} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": args.rows, "files": args.files, "cores": cores, "results": results}, indent=1))
    print(f"\nwritten: {args.json}")
    if not all(r.get("identical_to_local", True) for r in results):
        sys.exit("a cluster run differs from the local engine's")


if __name__ == "__main__":
    main()
