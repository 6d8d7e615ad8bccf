"""Shared fixtures for the end-to-end tests: the strata binary, the raw UCI files,
and a real S3-compatible server (moto) on 127.0.0.1."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RAW_ADULT = ROOT / "data" / "raw" / "adult"


def strata_bin() -> str:
    if os.environ.get("STRATA_BIN"):
        return os.environ["STRATA_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "strata")


def _outside_clone(path) -> bool:
    """A path beside the clone (under its parent folder, not in the clone): what a test
    reading a sibling folder (a shared data dir, another checkout) would touch. The
    system's temp dir stays allowed, unless the clone's parent is itself a folder inside
    it (a bare-clone run)."""
    try:
        p = pathlib.Path(os.fsdecode(path)).resolve()
    except (TypeError, ValueError, OSError):
        return False
    parent = ROOT.parent
    if not p.is_relative_to(parent) or any(p.is_relative_to(a) for a in _ALLOWED):
        return False
    tmp = pathlib.Path(tempfile.gettempdir()).resolve()
    inside_tmp = parent != tmp and parent.is_relative_to(tmp)
    return inside_tmp or not p.is_relative_to(tmp)


# The clone, the interpreter (a venv may sit anywhere) and the build.
_ALLOWED = [ROOT, pathlib.Path(sys.prefix).resolve(), pathlib.Path(sys.base_prefix).resolve(),
            pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve()]
_READS_OUTSIDE: list[str] = []


def _audit(event: str, args) -> None:
    # Every file a test opens through Python passes here; one beside the clone is a test
    # that would fail on a fresh clone, so the session fails loudly at the end.
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)) and _outside_clone(args[0]):
        _READS_OUTSIDE.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def pytest_sessionfinish(session, exitstatus):
    if _READS_OUTSIDE:
        paths = sorted(set(_READS_OUTSIDE))
        print(f"\nerror: tests opened {len(paths)} file(s) outside the repository: {paths[:5]}", file=sys.stderr)
        session.exitstatus = 1


def one_error_line(proc) -> str:
    """The one `error:` line a failed command prints (and no panic)."""
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "panicked" not in proc.stderr, proc.stderr
    return lines[0]


def run_strata(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([strata_bin(), *args], capture_output=True, text=True, env=full_env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"strata {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def latest_manifest(out: pathlib.Path) -> dict:
    """The manifest of the run `out/_latest` points at (a local output folder)."""
    latest = json.loads((out / "_latest").read_text())
    return json.loads((out / latest["manifest"]).read_text())


def shard_paths(out: pathlib.Path) -> list[pathlib.Path]:
    m = latest_manifest(out)
    run = out / "runs" / m["run_id"]
    return [run / s["path"] for s in m["shards"]]


def read_curated(out: pathlib.Path):
    """Every curated row of the latest run, read by pyarrow from the shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(p) for p in shard_paths(out)])


def profile_json(*args: str, env: dict | None = None) -> dict:
    return json.loads(run_strata("profile", *args, "--format", "json", env=env).stdout)


@pytest.fixture(scope="session")
def raw_adult() -> pathlib.Path:
    if not (RAW_ADULT / "adult.data").exists():
        pytest.fail(f"raw UCI Adult files not found at {RAW_ADULT} (vendored in the repository, data/README.md)")
    return RAW_ADULT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """The S3-compatible server: the one scripts/test started, or one started here."""
    endpoint = os.environ.get("STRATA_TEST_S3_ENDPOINT")
    proc = None
    if not endpoint:
        port = _free_port()
        moto = pathlib.Path(sys.executable).parent / "moto_server"
        proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except Exception:
                if time.time() > deadline:
                    proc.kill()
                    pytest.fail("moto_server did not start")
                time.sleep(0.2)
    yield endpoint
    if proc:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_env(s3_endpoint) -> dict:
    """Environment for strata to reach the test server (credentials only from env)."""
    return {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@pytest.fixture(scope="session")
def s3_client(s3_endpoint, s3_env):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
