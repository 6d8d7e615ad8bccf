"""What the benchmark scripts share: the synthetic data, and timing a child process."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def synthetic_data(rows: int, files: int) -> pathlib.Path:
    """The synthetic dataset's folder, generated first if missing (gen_synthetic.py)."""
    data = ROOT / "bench-data" / "synthetic"
    marker = data / f".rows-{rows}-files-{files}"
    if not marker.exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks/gen_synthetic.py"), "--rows", str(rows),
                        "--files", str(files), "--out", str(data)], check=True)
        marker.touch()
    return data


@dataclasses.dataclass
class Measured:
    wall: float  # seconds
    cpu: float  # user + system seconds
    rss_mib: int  # peak
    out: str  # stdout, or `FAILED: <last error line>`


def measure(cmd: list[str], check: bool = True) -> Measured:
    """One child process, timed. On failure: exits, or with check=False returns the
    stdout `FAILED: <last error line>`."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out, err = proc.stdout.read(), proc.stderr.read()
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
