"""What the benchmark scripts share: the generated data, specs over it, timing a child
process, and the JSON each stage writes for scripts/bench."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
STRATA = TARGET / "release" / "strata"


def census_data(rows: int, files: int, strata: pathlib.Path = STRATA) -> pathlib.Path:
    """`strata synth --preset census --seed 0` data (docs/synth.md) under
    bench-data/census-ROWS-FILES/, generated first if missing."""
    data = ROOT / "bench-data" / f"census-{rows}-{files}"
    if not (data / ".complete").exists():
        if not strata.exists():
            sys.exit(f"{strata} is missing: scripts/bench builds it (cargo build --release --workspace --bins)")
        subprocess.run([str(strata), "synth", "--rows", str(rows), "--files", str(files), "--seed", "0",
                        "--out", str(data), "--overwrite"], check=True)
        (data / ".complete").touch()
    return data


def bench_spec(name: str, data: pathlib.Path, folder: pathlib.Path, extra: str = "") -> pathlib.Path:
    """benchmarks/NAME.toml (or pipelines/NAME.toml) reading `data`, written to `folder`."""
    template = ROOT / "benchmarks" / f"{name}.toml"
    if not template.exists():
        template = ROOT / "pipelines" / f"{name}.toml"
    text = template.read_text()
    assert 'url = "../bench-data/census/"' in text, template
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text.replace('url = "../bench-data/census/"', f'url = "{data}/"') + extra)
    return path


def write_result(path: pathlib.Path | None, stage: str, setup: str, jobs: list[dict], ratios: list[dict]) -> None:
    """One stage's figures for scripts/bench: `jobs` as {job, seconds, peak_rss_mib,
    note?}, `ratios` as {name, value, goal?, met?} (goal a string such as "<= 0.7")."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": stage, "setup": setup, "jobs": jobs, "ratios": ratios}, indent=1))


def ratio(name: str, value: float, goal: str | None = None) -> dict:
    """A ratio and whether it meets a goal written as "<= x" or ">= x"."""
    r = {"name": name, "value": round(value, 3)}
    if goal:
        op, bound = goal.split()
        r["goal"] = goal
        r["met"] = value <= float(bound) if op == "<=" else value >= float(bound)
    return r


@dataclasses.dataclass
class Measured:
    wall: float  # seconds
    cpu: float  # user + system seconds
    rss_mib: int  # peak
    out: str  # stdout, or `FAILED: <last error line>`


def measure(cmd: list[str], check: bool = True) -> Measured:
    """One child process, timed. On failure: exits, or with check=False returns the
    stdout `FAILED: <last error line>`."""
    # output to files, not pipes: a child writing more than a pipe holds would block
    # while this process waits for it to exit
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if os.waitstatus_to_exitcode(status) != 0:
        if check:
            sys.exit(f"{' '.join(cmd)} failed: {err[-2000:]}")
        out = "FAILED: " + (err.strip().splitlines() or ["?"])[-1][:300]
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, out)


def run(cmd: list[str], check: bool = True) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MiB and stdout of one child process (see measure)."""
    m = measure(cmd, check)
    return m.wall, m.rss_mib, m.out


def latest_run(out: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """The folder and manifest of the run a `strata curate --out` root's `_latest` names."""
    latest = json.loads((out / "_latest").read_text())
    path = out / latest["manifest"]
    return path.parent, json.loads(path.read_text())
