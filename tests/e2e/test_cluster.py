"""strata on a real Apache Ballista cluster: scripts/cluster-up starts a strata-scheduler
and two strata-executors as processes on 127.0.0.1, the data stages run with
`--engine df://…` against the real S3-compatible server, and everything they produce is
compared with the embedded engine's: profile, curation summary, curated rows, manifest
and every shard's sha256. Every process started is stopped, failures included."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time

import boto3
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, one_error_line, run_strata

BUCKET = "strata-cluster"
ADULT_SPEC = ROOT / "pipelines" / "adult.toml"


def cluster_up(state: pathlib.Path, env: dict, executors: int = 2) -> str:
    proc = subprocess.run(
        [str(ROOT / "scripts/cluster-up"), "--executors", str(executors), "--state", str(state), "--no-build"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    engine = proc.stdout.strip().splitlines()[-1]
    assert engine.startswith("df://127.0.0.1:"), proc.stdout
    return engine


def cluster_down(state: pathlib.Path) -> None:
    subprocess.run([str(ROOT / "scripts/cluster-down"), "--state", str(state)], capture_output=True, timeout=60)


def pids(state: pathlib.Path) -> dict[str, int]:
    out = {}
    for line in (state / "pids").read_text().splitlines():
        pid, name, *_ = line.split()
        out[name] = int(pid)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent shell) is not running
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_env):
    state = tmp_path_factory.mktemp("cluster")
    engine = cluster_up(state, s3_env)
    started = pids(state)
    try:
        yield engine, state
    finally:
        cluster_down(state)
        # exactly what was started is gone
        assert not any(alive(p) for p in started.values()), started


@pytest.fixture(scope="module")
def s3(s3_env):
    client = boto3.client(
        "s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(ROOT / "data/adult/train.parquet"), BUCKET, "adult/train.parquet")
    return client


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, s3):
    """Two million generated rows in four files (`strata synth`), on S3, and a spec that
    undersamples them exactly."""
    data = tmp_path_factory.mktemp("synthetic")
    run_strata("synth", "--rows", "2M", "--files", "4", "--seed", "7", "--out", str(data))
    for f in sorted(data.glob("*.parquet")):
        s3.upload_file(str(f), BUCKET, f"synthetic/{f.name}")
    spec = data / "synthetic.toml"
    spec.write_text((ROOT / "benchmarks/census-undersample.toml").read_text().replace(
        'url = "../bench-data/census/"', f'url = "s3://{BUCKET}/synthetic/"'))
    return spec


def get_json(s3, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def published(s3, root: str) -> tuple[dict, dict, dict[str, bytes]]:
    """The latest run under s3://BUCKET/root: manifest, curation summary, shard bytes."""
    latest = get_json(s3, f"{root}/_latest")
    manifest = get_json(s3, f"{root}/{latest['manifest']}")
    run = f"{root}/runs/{manifest['run_id']}"
    summary = get_json(s3, f"{run}/{manifest['summary']}")
    shards = {s["path"]: s3.get_object(Bucket=BUCKET, Key=f"{run}/{s['path']}")["Body"].read()
              for s in manifest["shards"]}
    return manifest, summary, shards


def comparable(doc: dict, root: str) -> dict:
    """`doc` with the output location (which differs by design) and the clock left out."""
    text = json.dumps(doc).replace(f"s3://{BUCKET}/{root}", "OUT")
    doc = json.loads(text)
    doc.pop("created_at", None)
    return doc


def curate_both(spec, s3, s3_env, engine: str, name: str, *extra: str):
    for where, args in (("local", []), ("cluster", ["--engine", engine])):
        proc = run_strata("curate", str(spec), "--out", f"s3://{BUCKET}/{name}-{where}", *args, *extra, env=s3_env)
    assert_rows_stayed_on_the_cluster(proc.stderr)
    return published(s3, f"{name}-local"), published(s3, f"{name}-cluster")


def assert_rows_stayed_on_the_cluster(stderr: str) -> None:
    """The shards were written on an executor: the writer there received the curated
    rows, the driver only the shards' metadata (strata's log line, in bytes of Arrow
    data; the shard bytes themselves are compared with the local run's)."""
    line = next((l for l in stderr.splitlines() if "shards written on the cluster" in l), None)
    assert line, stderr
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    assert int(fields["writer_input_bytes"]) > 1_000_000, line
    assert int(fields["received_bytes"]) < 256 * 1024, line


def assert_same_runs(local, cluster, name: str):
    (m_l, s_l, shards_l), (m_c, s_c, shards_c) = local, cluster
    assert comparable(m_l, f"{name}-local") == comparable(m_c, f"{name}-cluster")
    assert comparable(s_l, f"{name}-local") == comparable(s_c, f"{name}-cluster")
    assert shards_l.keys() == shards_c.keys()
    for path in shards_l:
        assert shards_l[path] == shards_c[path], path
    # and the manifest's hashes are those of the bytes (computed here, not by strata)
    import hashlib
    for s in m_c["shards"]:
        assert hashlib.sha256(shards_c[s["path"]]).hexdigest() == s["sha256"]


def test_adult_profile_on_the_cluster_equals_the_local_one(cluster, s3, s3_env):
    engine, _ = cluster
    spec, src = str(ADULT_SPEC), f"s3://{BUCKET}/adult/train.parquet"
    local = json.loads(run_strata("profile", spec, "--source", src, "--format", "json", env=s3_env).stdout)
    remote = json.loads(run_strata("profile", spec, "--source", src, "--format", "json",
                                   "--engine", engine, env=s3_env).stdout)
    assert remote == local
    assert local["total_rows"] == 32561


def test_adult_curation_on_the_cluster_is_byte_identical(cluster, s3, s3_env):
    engine, _ = cluster
    local, remote = curate_both(ADULT_SPEC, s3, s3_env, engine, "adult-curated",
                                "--source", f"s3://{BUCKET}/adult/train.parquet")
    assert_same_runs(local, remote, "adult-curated")
    # the curated rows, read by pyarrow, are the source's (no value changed on the way)
    source = pq.read_table(ROOT / "data/adult/train.parquet").to_pandas()
    import io
    import pandas as pd
    rows = pd.concat([pq.read_table(io.BytesIO(b)).to_pandas() for b in remote[2].values()])
    assert len(rows) == len(source)
    key = [c for c in source.columns]
    merged = rows[key].merge(source.drop_duplicates(), on=key, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_checks_on_the_cluster_give_the_local_results(cluster, s3, s3_env, tmp_path):
    engine, _ = cluster
    src = f"s3://{BUCKET}/adult/train.parquet"
    out = f"s3://{BUCKET}/adult-curated-local"
    if "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="adult-curated-local/"):
        run_strata("curate", str(ADULT_SPEC), "--source", src, "--out", out, env=s3_env)
    results = {}
    for where, args in (("local", []), ("cluster", ["--engine", engine])):
        j = tmp_path / f"{where}.json"
        proc = run_strata("check", str(ADULT_SPEC), "--source", src, "--out", out, "--json", str(j),
                          *args, env=s3_env, check=False)
        assert proc.returncode in (0, 1), proc.stderr
        doc = json.loads(j.read_text())
        results[where] = (proc.returncode, [
            {k: v for k, v in c.items() if not k.endswith(("seconds", "_ms"))} for c in doc["checks"]
        ])
    assert results["cluster"] == results["local"]
    assert len(results["local"][1]) >= 5


def test_generated_millions_curated_on_the_cluster_are_byte_identical(cluster, synthetic, s3, s3_env):
    engine, _ = cluster
    local, remote = curate_both(synthetic, s3, s3_env, engine, "synthetic")
    assert_same_runs(local, remote, "synthetic")
    profile = [json.loads(run_strata("profile", str(synthetic), "--format", "json", *args, env=s3_env).stdout)
               for args in ([], ["--engine", engine])]
    assert profile[0] == profile[1] and profile[0]["total_rows"] == 2_000_000


def test_a_killed_executor_never_leaves_a_partial_run(tmp_path, synthetic, s3, s3_env):
    """An executor killed mid-job: the job fails with one clear error and nothing is
    committed, or Ballista retries its tasks and the run is the local one, byte for byte."""
    state = tmp_path / "cluster"
    engine = cluster_up(state, s3_env)
    try:
        if "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="synthetic-local/"):
            run_strata("curate", str(synthetic), "--out", f"s3://{BUCKET}/synthetic-local", env=s3_env)
        victim = pids(state)["executor-1"]
        proc = subprocess.Popen(
            [os.environ.get("STRATA_BIN") or str(pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug/strata"),
             "curate", str(synthetic), "--out", f"s3://{BUCKET}/killed", "--engine", engine],
            env={**os.environ, **s3_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # into the job: the executors are reading the source
        time.sleep(3)
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=600)
        print(f"killed executor: strata exited {proc.returncode}")
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="killed/").get("Contents", [])
        keys = [o["Key"] for o in listed]
        if proc.returncode == 0:
            # retried: the run is the local one (its folder named differently)
            local, killed = published(s3, "synthetic-local"), published(s3, "killed")
            assert killed[2] == local[2]
            assert comparable(killed[0], "killed") == comparable(local[0], "synthetic-local")
        else:
            assert proc.returncode == 3, stderr
            line = [l for l in stderr.splitlines() if l.startswith("error:")]
            assert len(line) == 1 and "panicked" not in stderr, stderr
            assert not any(k.endswith("manifest.json") for k in keys), keys
            assert "killed/_latest" not in keys, keys
    finally:
        cluster_down(state)


def test_strata_run_on_the_cluster_gives_the_local_models_and_evaluation(cluster, s3, s3_env):
    """The README's main command with --engine: every stage passes, and the models,
    predictions' evaluation and gates are the local run's, byte for byte."""
    engine, _ = cluster
    for where, args in (("local", []), ("cluster", ["--engine", engine])):
        run_strata("run", str(ADULT_SPEC), "--out", f"s3://{BUCKET}/run-{where}/", *args, env=s3_env)
    runs = {w: get_json(s3, f"run-{w}/run.json") for w in ("local", "cluster")}
    assert runs["cluster"]["status"] == runs["local"]["status"] == "passed"
    assert runs["cluster"]["engine"] == engine and runs["local"]["engine"] == "local"
    assert [s["status"] for s in runs["cluster"]["stages"]] == [s["status"] for s in runs["local"]["stages"]]
    evals = {w: get_json(s3, f"run-{w}/eval.json") for w in ("local", "cluster")}
    assert evals["cluster"]["models"] == evals["local"]["models"]
    assert evals["cluster"]["gates"] == evals["local"]["gates"]
    for model in ("baseline", "curated"):
        key = f"models/{model}/model.safetensors"
        local = s3.get_object(Bucket=BUCKET, Key=f"run-local/{key}")["Body"].read()
        remote = s3.get_object(Bucket=BUCKET, Key=f"run-cluster/{key}")["Body"].read()
        assert local == remote, model


def test_an_unreachable_scheduler_is_one_clear_error(s3_env):
    proc = run_strata("profile", str(ADULT_SPEC), "--engine", "df://127.0.0.1:9", check=False)
    assert proc.returncode != 0
    line = one_error_line(proc)
    assert "127.0.0.1:9" in line or "scheduler" in line.lower(), line


@pytest.mark.parametrize("engine", ["grpc://h:1", "df://", "nonsense"])
def test_a_bad_engine_url_names_itself(engine):
    proc = run_strata("profile", str(ADULT_SPEC), "--engine", engine, check=False)
    assert proc.returncode == 3, proc.stderr
    assert engine in one_error_line(proc)
